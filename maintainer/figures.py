"""Architecture figures drawn from the models themselves: ``notebooks/figures/*.png``.

    python -m maintainer.figures            # redraw every figure (or name some: fcn unet mask_rcnn)
    python -m maintainer.figures --check    # exit 1 if a committed figure no longer matches its model
                                         # (2 if a model cannot be described: the reason is printed)

Each figure is drawn from a small **description** of its model (blocks, tensor shapes, skips)
read off the model's layer graph: notebook 1's ``fcn`` for FCN-32s, FCN-16s and FCN-8s,
notebook 2's ``unet``, and ``helpers.mask_rcnn.SmallMaskRCNN`` for notebook 3. The description
is stored in the PNG's text metadata, so ``tests/test_figures.py`` can rebuild it from today's
model and fail when a committed figure no longer matches. The models are built without
allocating their weights (in a ``keras.StatelessScope``), at the notebooks' full-mode sizes.

The figures are shown in notebooks 1-3, whose markdown links the PNGs.
"""

import argparse
import inspect
import json
import sys

from grader.safety import without_weights  # builds a model without allocating its weights
from maintainer import notebook_code
from maintainer.run_notebooks import NOTEBOOKS_DIR

FIGURES_DIR = NOTEBOOKS_DIR / "figures"
METADATA_KEY = "architecture"  # the PNG text chunk that holds the figure's description
DPI = 160  # the figures are 9.8 inches wide: 1,568 pixels, sharp when GitHub shows them ~900 wide

# Layers a block diagram leaves out: they keep the tensor's shape and sit inside a block.
PASS_THROUGH = {"Dropout", "SpatialDropout2D", "BatchNormalization", "ReLU", "Activation"}


# ---------------------------------------------------------------------------- reading a model

def _sources(value, found):
    """Collect the names of the layers whose tensors a layer's serialized call reads."""
    if isinstance(value, dict):
        if "keras_history" in value:
            found.append(value["keras_history"][0])
        else:
            for item in value.values():
                _sources(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _sources(item, found)
    return found


class Graph:
    """A functional model's layers in order, each with the layers it reads and its output shape."""

    def __init__(self, model):
        self.model = model
        self.inputs = {}
        for entry in model.get_config()["layers"]:
            self.inputs[entry["name"]] = _sources(entry["inbound_nodes"], [])
        self.order = list(self.inputs)

    def layer(self, name):
        return self.model.get_layer(name)

    def kind(self, name):
        return type(self.layer(name)).__name__

    def shape(self, name):
        """The layer's output shape without the batch axis, as a list."""
        return [None if d is None else int(d) for d in self.layer(name).output.shape[1:]]

    def output(self):
        """The one layer no other layer reads: the model's output."""
        sinks = [name for name in self.order if not self.consumers(name)]
        if len(sinks) != 1:
            raise ValueError(f"{self.model.name}: expected one output layer, found {sinks}")
        return sinks[0]

    def of_kind(self, *kinds):
        return [name for name in self.order if self.kind(name) in kinds]

    def consumers(self, name):
        return [other for other in self.order if name in self.inputs[other]]

    def ancestors(self, name):
        seen, todo = set(), list(self.inputs[name])
        while todo:
            item = todo.pop()
            if item not in seen:
                seen.add(item)
                todo.extend(self.inputs[item])
        return seen

    def back(self, name, through=PASS_THROUGH):
        """Step back from ``name`` over single-input layers of the kinds in ``through``."""
        while self.kind(name) in through and len(self.inputs[name]) == 1 and not self._is_softmax(name):
            name = self.inputs[name][0]
        return name

    def chain(self, name, stop):
        """Layers from ``name`` back to (not including) the first layer in ``stop``, last first."""
        found = []
        while name not in stop:
            if len(self.inputs[name]) != 1:
                raise ValueError(f"{self.model.name}: layer {name!r} joins {len(self.inputs[name])} "
                                 f"tensors where a plain chain of layers was expected")
            found.append(name)
            name = self.inputs[name][0]
        return found

    def convs(self, names):
        """Count the Conv2D layers among ``names``; return (count, kernel side) with one kernel size."""
        convs = [n for n in names if self.kind(n) == "Conv2D"]
        kernels = {tuple(self.layer(n).kernel_size) for n in convs}
        if len(kernels) > 1:
            raise ValueError(f"{self.model.name}: one block mixes kernel sizes {sorted(kernels)}")
        return len(convs), (kernels.pop()[0] if kernels else None)

    def unit(self, chain):
        """The layers of one convolution in a chain (last first): from a Conv2D to the next."""
        names = list(reversed(chain))
        starts = [i for i, name in enumerate(names) if self.kind(name) == "Conv2D"]
        if not starts:
            return []
        unit = names[starts[0]:starts[1] if len(starts) > 1 else None]
        described = []
        for name in unit:
            activation = getattr(getattr(self.layer(name), "activation", None), "__name__", "linear")
            kind = self.kind(name)
            described.append({"Activation": activation, "ReLU": "relu"}.get(kind, kind))
            if kind == "Conv2D" and activation != "linear":
                described.append(activation)
        return [d for d in described if d not in {"MaxPooling2D", "Dropout"}]

    def _is_softmax(self, name):
        layer = self.layer(name)
        return self.kind(name) == "Activation" and getattr(layer.activation, "__name__", "") == "softmax"


def _full_mode(notebook, names):
    """Return the full-mode values of ``names`` in a notebook's ``parameters`` cell."""
    values = notebook_code.notebook_parameters(notebook, quick=False)
    missing = [name for name in names if name not in values]
    if missing:
        raise LookupError(f"{notebook}'s parameters cell sets no {', '.join(missing)}: the figure "
                          "is drawn at the notebook's full-mode configuration and needs them.")
    return {name: values[name] for name in names}


# ---------------------------------------------------------------------------- the descriptions

def fcn_function():
    """Notebook 1's builder: fcn(encoder, n_classes, variant="8s", fc_filters=4096)."""
    return notebook_code.notebook_function("01_fcn8_camvid.ipynb", "fcn")


def unet_function():
    """Notebook 2's builder: unet(input_shape, n_classes, base_filters=64, depth=4, dropout=...)."""
    return notebook_code.notebook_function("02_unet_pets.ipynb", "unet")


def mask_rcnn_model():
    """The small Mask R-CNN of notebook 3 (its four parts are functional Keras models)."""
    from helpers import mask_rcnn

    return mask_rcnn.SmallMaskRCNN()


FCN_VARIANTS = ("32s", "16s", "8s")


def describe_fcn():
    """Describe FCN-32s, FCN-16s and FCN-8s at notebook 1's full-mode size, from its ``fcn``."""
    from helpers import datasets, models

    params = _full_mode("01_fcn8_camvid.ipynb", ["IMAGE_SIZE", "FC_FILTERS"])
    n_classes = len(datasets.CAMVID_CLASSES) - 1  # void, the last id, is not predicted (notebook 1)
    fcn = fcn_function()
    variants = []
    for variant in FCN_VARIANTS:
        encoder = models.vgg16_encoder((*params["IMAGE_SIZE"], 3), weights=None)
        model = fcn(encoder, n_classes, variant=variant, fc_filters=params["FC_FILTERS"])
        variants.append({"variant": variant, **_describe_fcn_model(model)})
    return {"figure": "fcn", "notebook": "01_fcn8_camvid.ipynb", "classes": n_classes,
            "image_size": list(params["IMAGE_SIZE"]), "fc_filters": params["FC_FILTERS"],
            "variants": variants}


def _conv_step(graph, name):
    layer = graph.layer(name)
    return {"layer": name, "kernel": int(layer.kernel_size[0]), "filters": int(layer.filters),
            "shape": graph.shape(name)}


def _describe_fcn_model(model):
    """Encoder pools, conv6/conv7, the class scores and the decoder's upsamplings and skips."""
    g = Graph(model)
    (image,) = g.of_kind("InputLayer")
    pools = g.of_kind("MaxPooling2D")
    encoder, previous = [], image
    for i, pool in enumerate(pools):
        convs, kernel = g.convs(g.chain(pool, {previous}))
        encoder.append({"name": f"pool{i + 1}", "layer": pool, "convs": convs, "kernel": kernel,
                        "shape": g.shape(pool)})
        previous = pool
    output = g.output()
    # Walk the main path back from the output to the last pool; each Add is a skip.
    decoder, name = [], output
    while g.kind(name) != "MaxPooling2D":
        kind = g.kind(name)
        if kind == "Add":
            ups = [s for s in g.inputs[name] if g.kind(g.back(s)) == "Conv2DTranspose"]
            if len(g.inputs[name]) != 2 or len(ups) != 1:
                raise ValueError(f"{model.name}: the skip {name!r} should add an upsampled score "
                                 f"map and one pool's scores; it adds {g.inputs[name]}")
            (score,) = [g.back(s) for s in g.inputs[name] if s not in ups]
            source = g.back(g.inputs[score][0])
            if g.kind(score) != "Conv2D" or source not in pools:
                raise ValueError(f"{model.name}: the skip {name!r} should add a 1x1 convolution of "
                                 f"a pool's features, not {score!r} of {source!r}")
            decoder.append({"op": "add", "layer": name, "shape": g.shape(name),
                            "skip": {**_conv_step(g, score), "from": encoder[pools.index(source)]["name"]}})
            name = g.back(ups[0])
        elif kind == "Conv2DTranspose":
            layer = g.layer(name)
            factor = g.shape(name)[0] // g.shape(g.inputs[name][0])[0]
            decoder.append({"op": "up", "layer": name, "kernel": int(layer.kernel_size[0]),
                            "stride": int(layer.strides[0]), "factor": factor, "shape": g.shape(name)})
            name = g.back(g.inputs[name][0])
        elif kind == "Conv2D":
            decoder.append({"op": "conv", **_conv_step(g, name)})
            name = g.back(g.inputs[name][0])
        elif kind == "Activation":
            decoder.append({"op": "activation", "layer": name, "shape": g.shape(name),
                            "activation": g.layer(name).activation.__name__})
            name = g.back(g.inputs[name][0])
        else:
            raise ValueError(f"{model.name}: no block for layer {name!r} ({kind}) in an FCN figure")
    decoder.reverse()
    head = []
    while len(decoder) > 1 and decoder[0]["op"] == "conv" and decoder[1]["op"] == "conv":
        head.append(decoder.pop(0))  # conv6, conv7: every conv before the last one is the head
    if not decoder or decoder[0]["op"] != "conv" or decoder[-1]["op"] != "activation":
        raise ValueError(f"{model.name}: expected convolutions, a 1x1 class score, upsamplings "
                         f"and skips, then the softmax; got {[s['op'] for s in decoder]}")
    return {"input": g.shape(image), "encoder": encoder, "head": head, "score": decoder[0],
            "decoder": decoder[1:-1], "output": decoder[-1]}


def describe_unet():
    """Describe notebook 2's U-Net at its full-mode configuration: its levels and skips."""
    from helpers import datasets

    params = _full_mode("02_unet_pets.ipynb", ["IMAGE_SIZE", "BASE_FILTERS", "DEPTH", "DROPOUT"])
    n_classes = len(datasets.PETS_CLASSES)
    model = unet_function()((*params["IMAGE_SIZE"], 3), n_classes, base_filters=params["BASE_FILTERS"],
                            depth=params["DEPTH"], dropout=params["DROPOUT"])
    return {"figure": "unet", "notebook": "02_unet_pets.ipynb", "classes": n_classes,
            "base_filters": params["BASE_FILTERS"], **_describe_unet_model(model)}


def _describe_unet_model(model):
    g = Graph(model)
    (image,) = g.of_kind("InputLayer")
    output = g.output()
    pools, ups, joins = g.of_kind("MaxPooling2D"), g.of_kind("Conv2DTranspose"), g.of_kind("Concatenate")
    if not pools or len(ups) != len(pools) or len(joins) != len(pools):
        raise ValueError(f"{model.name}: a U-Net has as many poolings, upsamplings and "
                         f"concatenations; got {len(pools)}, {len(ups)} and {len(joins)}")
    levels, previous = [], image
    features = {}  # the layer whose output a level keeps for its skip -> level
    for level, pool in enumerate(pools):
        kept = g.inputs[pool][0]  # the block's features, before pooling: the skip
        convs, kernel = g.convs(g.chain(pool, {previous}))
        features[kept] = level
        levels.append({"level": level, "convs": convs, "kernel": kernel, "shape": g.shape(kept),
                       "pooled": g.shape(pool)})
        previous = _after(g, pool)
    convs, kernel = g.convs(g.chain(g.inputs[ups[0]][0], {previous}))
    bottleneck = {"convs": convs, "kernel": kernel, "shape": g.shape(g.inputs[ups[0]][0])}
    decoder = []
    for i, join in enumerate(joins):
        up = [s for s in g.inputs[join] if g.back(s) in ups]
        skip = [g.back(s, through={"Dropout", "SpatialDropout2D"}) for s in g.inputs[join] if s not in up]
        if len(up) != 1 or len(skip) != 1 or skip[0] not in features:
            raise ValueError(f"{model.name}: concatenation {join!r} should join one upsampled map "
                             f"and one encoder level's features; it joins {g.inputs[join]}")
        up_layer = g.layer(g.back(up[0]))
        end = g.inputs[ups[i + 1]][0] if i + 1 < len(ups) else g.inputs[output][0]
        convs, kernel = g.convs(g.chain(end, {join}))
        decoder.append({"level": features[skip[0]], "up_kernel": int(up_layer.kernel_size[0]),
                        "up_stride": int(up_layer.strides[0]), "up": g.shape(up_layer.name),
                        "joined": g.shape(join), "convs": convs, "kernel": kernel, "shape": g.shape(end)})
    if sorted(d["level"] for d in decoder) != list(range(len(levels))):
        raise ValueError(f"{model.name}: every encoder level needs exactly one skip")
    last = g.layer(output)
    return {"input": g.shape(image), "levels": levels, "bottleneck": bottleneck, "decoder": decoder,
            "conv_unit": g.unit(g.chain(pools[0], {image})), "dropout": bool(g.of_kind("Dropout")),
            "output": {"kernel": int(last.kernel_size[0]), "shape": g.shape(output),
                       "activation": last.activation.__name__}}


def _after(g, pool):
    """The last layer of a pool's own block: the pool, or a dropout right after it."""
    after = g.consumers(pool)
    if len(after) == 1 and g.kind(after[0]) in {"Dropout", "SpatialDropout2D"}:
        return after[0]
    return pool


def describe_mask_rcnn():
    """Describe the small Mask R-CNN's stages from its four functional parts and constants."""
    import keras

    from helpers import mask_rcnn as m

    model = mask_rcnn_model()
    backbone = Graph(model.backbone)
    (image,) = backbone.of_kind("InputLayer")
    # The bottom-up stages: at each resolution the widest features that no upsampling fed (the
    # pyramid's top-down path upsamples; its lateral 1x1 convolutions come after the stages).
    ups = backbone.of_kind("UpSampling2D", "Conv2DTranspose")
    upsampled = {name for name in backbone.order if set(ups) & (backbone.ancestors(name) | {name})}
    stages = {}
    for name in backbone.order:
        side, channels = backbone.shape(name)[0], backbone.shape(name)[-1]
        if name not in upsampled and side < m.IMAGE_SIZE and channels > stages.get(side, (0, None))[0]:
            stages[side] = (channels, name)
    stages = [stages[side][1] for side in sorted(stages, reverse=True)]
    bottom_up = [{"name": f"C{i + 1}", "shape": backbone.shape(name), "stride": m.IMAGE_SIZE // backbone.shape(name)[0]}
                 for i, name in enumerate(stages)]
    outputs = model.backbone.get_config()["output_layers"]
    if not isinstance(outputs, dict):
        raise ValueError("the backbone should return its pyramid as a dict of levels, as notebook 3 "
                         f"reads it (features['p2']); it returns {outputs}")
    levels = []
    for key in sorted(outputs, key=lambda k: -backbone.shape(outputs[k][0])[0]):
        name = outputs[key][0]
        shape, before = backbone.shape(name), backbone.ancestors(name)
        lateral = [c["name"] for c, stage in zip(bottom_up, stages)
                   if stage in before and c["shape"][0] == shape[0]]
        levels.append({"name": key.upper(), "shape": shape, "stride": m.IMAGE_SIZE // shape[0],
                       "lateral": lateral[0] if lateral else None, "top_down": bool(set(ups) & before)})
    rpn_side = m.IMAGE_SIZE // m.ANCHOR_STRIDE
    rpn_level = [level["name"] for level in levels if level["name"] == m.RPN_LEVEL.upper()]
    if len(rpn_level) != 1 or backbone.shape(outputs[m.RPN_LEVEL][0])[0] != rpn_side:
        raise ValueError(f"the RPN's level {m.RPN_LEVEL} should be {rpn_side}x{rpn_side}, the anchor "
                         f"grid of stride {m.ANCHOR_STRIDE}")
    for key, head in ((m.BOX_LEVEL, model.box_head), (m.MASK_LEVEL, model.mask_head)):
        if backbone.shape(outputs[key][0])[-1] != head.inputs[0].shape[-1]:
            raise ValueError(f"{head.name} reads {key}, whose channels its input does not have")
    channels = model.rpn_head.inputs[0].shape[-1]
    rpn_out = _named_outputs(model.rpn_head, model.rpn_head(keras.Input((rpn_side, rpn_side, channels))))
    per_cell = len(m.ANCHOR_SIZES) * len(m.ANCHOR_RATIOS)
    if per_cell not in [t.shape[-1] for t in rpn_out.values()]:
        raise ValueError(f"no output of the RPN head scores {per_cell} anchors a cell "
                         f"(ANCHOR_SIZES x ANCHOR_RATIOS): {list(rpn_out)}")
    return {
        "figure": "mask_rcnn", "notebook": "03_mask_rcnn_tfhub.ipynb",
        "image": backbone.shape(image), "bottom_up": bottom_up, "pyramid": levels,
        "rpn": {"level": rpn_level[0], "layers": _head_layers(model.rpn_head, (rpn_side, rpn_side, channels)),
                "outputs": {key: [int(d) for d in t.shape[1:]] for key, t in rpn_out.items()},
                "anchor_sizes": list(m.ANCHOR_SIZES), "anchor_ratios": list(m.ANCHOR_RATIOS),
                "stride": m.ANCHOR_STRIDE, "anchors": rpn_side * rpn_side * per_cell,
                # what detect() keeps: proposals()'s defaults, which it calls with
                **{key: inspect.signature(m.SmallMaskRCNN.proposals).parameters[key].default
                   for key in ("pre_nms", "post_nms", "iou_threshold")}},
        "box_head": {**_head(model.box_head), "level": m.BOX_LEVEL.upper()},
        # The box head's second NMS, per class, with detect()'s defaults: the final detections.
        "detections": {key: inspect.signature(type(model).detect).parameters[key].default
                       for key in ("iou_threshold", "score_threshold")},
        "mask_head": {**_head(model.mask_head), "level": m.MASK_LEVEL.upper(), "boxes": _mask_head_boxes(model)},
        "mask_size": m.MASK_SIZE, "max_detections": m.MAX_DETECTIONS,
    }


def _mask_head_boxes(model):
    """Which boxes ``detect`` gives the mask head: "detections" (after the box head and its NMS)
    or "proposals" (the RPN's), read off the source of ``detect``."""
    import ast
    import textwrap

    (function,) = ast.parse(textwrap.dedent(inspect.getsource(type(model).detect))).body
    made = {}  # a name -> the function whose call last assigned it
    for statement in function.body:
        for call in (n for n in ast.walk(statement) if isinstance(n, ast.Call)):
            if ast.unparse(call.func) == "self.mask_logits" and len(call.args) == 2:
                producer = made.get(ast.unparse(call.args[1]), "")
                if "non_max_suppression" in producer:
                    return "detections"
                if producer == "self.proposals":
                    return "proposals"
                raise ValueError(f"detect() gives the mask head boxes made by {producer or 'no call it names'}")
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Call):
            for target in statement.targets:
                for name in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(name, ast.Name):
                        made[name.id] = ast.unparse(statement.value.func)
    raise ValueError("detect() never calls self.mask_logits(features, boxes)")


def _named_outputs(model, outputs):
    """A head's outputs by name: its dict's keys, else its output layers' names."""
    if isinstance(outputs, dict):
        return outputs
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    return dict(zip(model.output_names, outputs))


def _head(model):
    shape = [int(d) for d in model.inputs[0].shape[1:]]
    return {"input": shape, "layers": _head_layers(model, shape),
            "outputs": {key: [int(d) for d in t.shape[1:]] for key, t in _named_outputs(model, model.output).items()}}


def _head_layers(model, input_shape):
    """The layers every output of a head goes through, as runs of alike layers with their shapes."""
    import keras

    g = Graph(model)
    outputs = [name for name in g.order if not g.consumers(name)]
    shared = set.intersection(*[g.ancestors(o) | {o} for o in outputs])
    shapes = {}
    # Shapes at the given input size (the RPN head takes any size), one symbolic call per layer.
    symbolic = keras.Model(model.inputs, [g.layer(n).output for n in g.order])(keras.Input(input_shape))
    for name, tensor in zip(g.order, symbolic):
        shapes[name] = [int(d) for d in tensor.shape[1:]]
    runs = []
    for name in g.order:
        kind = g.kind(name)
        if name not in shared or kind not in {"Conv2D", "Conv2DTranspose", "Dense"}:
            continue
        layer = g.layer(name)
        what = {"Conv2D": "conv", "Conv2DTranspose": "transposed conv", "Dense": "fc"}[kind]
        step = {"op": what, "shape": shapes[name]}
        if kind != "Dense":
            step.update(kernel=int(layer.kernel_size[0]), stride=int(layer.strides[0]))
        if runs and {k: v for k, v in runs[-1].items() if k != "count"} == step:
            runs[-1]["count"] += 1
        else:
            runs.append({**step, "count": 1})
    return runs


# ---------------------------------------------------------------------------- drawing

# Sizes in points; the figures are about 9.8 inches wide and GitHub shows them about 900 pixels
# wide, so 1 pt is about 1.25 screen pixels there: notes at 8.5 pt are 10-11 pixels tall.
FONT = {"title": 9.5, "body": 9.5, "note": 8.5, "heading": 11}
COLOURS = {
    "data": "#e8e8e8", "encoder": "#cfe2f3", "head": "#d9d2e9", "score": "#fce5cd",
    "join": "#fff2cc", "decoder": "#d9ead3",
    "edge": "#444444", "up": "#38761d", "skip": "#b45f06", "pool": "#1c4587", "text": "#222222",
    "note": "#555555",
}


def _shape_text(shape):
    return "\u00d7".join(str(d) for d in shape)


def _canvas(width, height):
    """A figure whose data coordinates are inches, origin bottom left."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def _box(ax, x, y, w, h, lines, colour):
    """A rounded block centred on (x, y); ``lines`` are (text, style), style title, body or note."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.06",
                                facecolor=colour, edgecolor=COLOURS["edge"], linewidth=1.0))
    heights = [FONT[style] / 72 * 1.3 for _, style in lines]
    top = y + sum(heights) / 2
    for (text, style), height in zip(lines, heights):
        ax.text(x, top - height / 2, text, ha="center", va="center", fontsize=FONT[style],
                fontweight="bold" if style == "title" else "normal",
                color=COLOURS["note"] if style == "note" else COLOURS["text"])
        top -= height


def _arrow(ax, points, colour=COLOURS["edge"], width=1.3):
    """A polyline through ``points`` with an arrow head at the last point."""
    xs, ys = zip(*points)
    if len(points) > 2:
        ax.plot(xs[:-1], ys[:-1], color=colour, linewidth=width, solid_capstyle="butt")
    ax.annotate("", xy=points[-1], xytext=points[-2],
                arrowprops={"arrowstyle": "-|>,head_length=0.5,head_width=0.22", "color": colour,
                            "linewidth": width, "shrinkA": 0, "shrinkB": 0, "mutation_scale": 12})


def _label(ax, x, y, text, size=FONT["note"], colour=COLOURS["text"], ha="center", va="center", **style):
    ax.text(x, y, text, ha=ha, va=va, fontsize=size, color=colour, **style)


def _notes(ax, width, lines):
    """Caption lines along the bottom of a figure, the last one 0.14 inch above the edge."""
    for i, line in enumerate(lines):
        _label(ax, width / 2, 0.14 + 0.19 * (len(lines) - 1 - i), line, colour=COLOURS["note"])


def _plus(ax, x, y, r=0.13):
    from matplotlib.patches import Circle

    ax.add_patch(Circle((x, y), r, facecolor=COLOURS["join"], edgecolor=COLOURS["edge"], linewidth=1.0))
    ax.plot([x - r * 0.6, x + r * 0.6], [y, y], color=COLOURS["edge"], linewidth=1.2)
    ax.plot([x, x], [y - r * 0.6, y + r * 0.6], color=COLOURS["edge"], linewidth=1.2)


def _conv_text(count, kernel):
    return f"{count}\u00d7 conv {kernel}\u00d7{kernel}" if count > 1 else f"conv {kernel}\u00d7{kernel}"


def _score_lines(conv):
    return [(conv["layer"], "title"), (_conv_text(1, conv["kernel"]), "note"), (_shape_text(conv["shape"]), "body")]


def draw_fcn(description):
    """FCN-32s, FCN-16s and FCN-8s, one panel each: encoder on top, decoder flowing back below."""
    width, panel = 9.8, 2.62
    variants = description["variants"]
    fig, ax = _canvas(width, panel * len(variants) + 0.75)
    dx, left, bw, bh, sh = 1.205, 0.66, 1.06, 0.64, 0.6
    col = lambda i: left + i * dx  # noqa: E731
    ups = [s for v in variants for s in v["decoder"] if s["op"] == "up"]
    # One sentence for all upsamplings when they follow the course's rule, else a label each.
    rule = all(up["kernel"] == 2 * up["stride"] and up["factor"] == up["stride"] for up in ups)
    for row, v in enumerate(variants):
        base = 0.75 + panel * (len(variants) - 1 - row)
        ye, ym, yd = base + 2.0, base + 1.17, base + 0.42
        columns = {"image": 0}
        _box(ax, col(0), ye, bw, bh, [("image", "title"), (_shape_text(v["input"]), "body")], COLOURS["data"])
        for i, pool in enumerate(v["encoder"]):
            columns[pool["name"]] = i + 1
            _box(ax, col(i + 1), ye, bw, bh, [(pool["name"], "title"), (_conv_text(pool["convs"], pool["kernel"]), "note"),
                                              (_shape_text(pool["shape"]), "body")], COLOURS["encoder"])
        for j, conv in enumerate(v["head"]):
            _box(ax, col(len(v["encoder"]) + 1 + j), ye, bw, bh, [(conv["layer"], "title"),
                                                                  (_conv_text(1, conv["kernel"]), "note"),
                                                                  (_shape_text(conv["shape"]), "body")], COLOURS["head"])
        last = len(v["encoder"]) + len(v["head"])
        for i in range(last):
            _arrow(ax, [(col(i) + bw / 2, ye), (col(i + 1) - bw / 2, ye)])
        # conv7's class scores, then the main path right to left along the bottom row.
        _box(ax, col(last), ym, bw, sh, _score_lines(v["score"]), COLOURS["score"])
        _arrow(ax, [(col(last), ye - bh / 2), (col(last), ym + sh / 2)])
        points, pending = [(col(last), ym - sh / 2), (col(last), yd)], None
        for step in v["decoder"] + [{"op": "output"}]:
            if step["op"] == "up":
                pending = step
                continue
            target = col(columns[step["skip"]["from"]]) if step["op"] == "add" else col(0)
            end = target + (0.13 if step["op"] == "add" else 0.07 + 0.62)
            _arrow(ax, points + [(end, yd)], COLOURS["up"], 1.6)
            if pending is not None:
                mid = (points[-1][0] + end) / 2
                _label(ax, mid, yd + 0.29, f"\u00d7{pending['factor']}", size=FONT["heading"], colour=COLOURS["up"],
                       fontweight="bold")
                detail = "" if rule else f" ({pending['kernel']}\u00d7{pending['kernel']}, stride {pending['stride']})"
                _label(ax, mid, yd + 0.11, pending["layer"] + detail, colour=COLOURS["up"])
                pending = None
            if step["op"] == "add":
                _plus(ax, target, yd)
                _box(ax, target, ym, bw, sh, _score_lines(step["skip"]), COLOURS["score"])
                _arrow(ax, [(target, ye - bh / 2), (target, ym + sh / 2)], COLOURS["skip"])
                _arrow(ax, [(target, ym - sh / 2), (target, yd + 0.13)], COLOURS["skip"])
                _label(ax, target, yd - 0.17, f"{step['layer']}\n{_shape_text(step['shape'])}", va="top")
                points = [(target - 0.13, yd)]
        out = v["output"]
        _box(ax, col(0) + 0.07, yd, 1.24, bh, [(out["activation"], "title"), (out["layer"], "note"),
                                               (_shape_text(out["shape"]), "body")], COLOURS["data"])
        skips = [s["skip"]["from"] for s in v["decoder"] if s["op"] == "add"]
        _label(ax, col(0) - bw / 2, ym + 0.13, f"FCN-{v['variant']}", size=14, ha="left", fontweight="bold")
        _label(ax, col(0) - bw / 2, ym - 0.14, "skips: " + (", ".join(skips) if skips else "none"),
               ha="left", colour=COLOURS["note"])
        if row:
            ax.plot([0.15, width - 0.15], [base + panel] * 2, color="#cccccc", linewidth=0.8)
    _notes(ax, width, [
        f"Notebook 1's fcn at its full-mode size: {_shape_text(description['image_size'])} images, "
        f"{description['classes']} classes, conv6 and conv7 {description['fc_filters']} wide. "
        "Shapes: height \u00d7 width \u00d7 channels.",
        f"Orange: convolutions scoring the {description['classes']} classes. \u2295: a skip, the sum "
        "of two score maps (keras Add).",
        "Green \u00d7N: upsampling by a transposed convolution (Conv2DTranspose)"
        + (" of stride N and kernel 2N." if rule else ".")])
    return fig


def draw_unet(description):
    """The U: encoder levels down the left, decoder levels up the right, skips across."""
    levels, decoder = description["levels"], {d["level"]: d for d in description["decoder"]}
    width, dy, bw, bh = 9.8, 0.97, 1.48, 0.58
    top = 1.0 + dy * len(levels)
    fig, ax = _canvas(width, top + 0.85)
    xe = lambda i: 1.98 + 0.5 * i  # noqa: E731  (encoder column, stepping in)
    xd = lambda i: width - 1.98 - 0.5 * i  # noqa: E731
    y = lambda i: top - dy * i  # noqa: E731
    kinds = {(d["up_kernel"], d["up_stride"]) for d in decoder.values()}
    up_rule = kinds.pop() if len(kinds) == 1 else None  # (kernel, stride) when every up shares them
    _box(ax, 0.58, y(0), 0.92, bh, [("image", "title"), (_shape_text(description["input"]), "body")], COLOURS["data"])
    _arrow(ax, [(1.04, y(0)), (xe(0) - bw / 2, y(0))])
    bottom, neck_half = y(len(levels)), 0.9
    for level in levels:
        i, d = level["level"], decoder[level["level"]]
        _box(ax, xe(i), y(i), bw, bh, [(_conv_text(level["convs"], level["kernel"]), "note"),
                                       (_shape_text(level["shape"]), "title")], COLOURS["encoder"])
        # Max pooling down to the next level (or the bottleneck).
        x = xe(i) + 0.28
        points = [(x, y(i) - bh / 2), (x, y(i + 1) + bh / 2)] if i + 1 < len(levels) else \
            [(x, y(i) - bh / 2), (x, bottom), (width / 2 - neck_half, bottom)]
        _arrow(ax, points, COLOURS["pool"], 1.5)
        _label(ax, x - 0.1, y(i) - dy / 2, f"max pool \u2192 {_shape_text(level['pooled'])}",
               colour=COLOURS["pool"], ha="right")
        # The skip: these features, copied across and concatenated to the upsampled ones.
        _arrow(ax, [(xe(i) + bw / 2, y(i)), (xd(i) - bw / 2 - 0.02, y(i))], COLOURS["skip"], 1.3)
        _label(ax, (xe(i) + xd(i)) / 2, y(i) + 0.11, "copy, concatenate", colour=COLOURS["skip"])
        _box(ax, xd(i), y(i), bw, bh + 0.16, [(f"concat {_shape_text(d['joined'])}", "note"),
                                             (_conv_text(d["convs"], d["kernel"]), "note"),
                                             (_shape_text(d["shape"]), "title")], COLOURS["decoder"])
        # Upsampling from the level below (or the bottleneck) to this one.
        x = xd(i) - 0.28
        start = [(width / 2 + neck_half, bottom), (x, bottom)] if i + 1 == len(levels) else \
            [(x, y(i + 1) + bh / 2 + 0.08)]
        _arrow(ax, start + [(x, y(i) - bh / 2 - 0.08)], COLOURS["up"], 1.5)
        detail = "" if up_rule else f" ({d['up_kernel']}\u00d7{d['up_kernel']})"
        _label(ax, x + 0.1, y(i) - dy / 2, f"up \u00d7{d['up_stride']}{detail} \u2192 {_shape_text(d['up'])}",
               colour=COLOURS["up"], ha="left")
    neck = description["bottleneck"]
    _box(ax, width / 2, bottom, 2 * neck_half, bh, [(f"bottleneck: {_conv_text(neck['convs'], neck['kernel'])}", "note"),
                                                    (_shape_text(neck["shape"]), "title")], COLOURS["head"])
    out = description["output"]
    _arrow(ax, [(xd(0) + bw / 2, y(0)), (width - 0.94, y(0))])
    _box(ax, width - 0.49, y(0), 0.9, bh + 0.16, [(_conv_text(1, out["kernel"]), "title"), (out["activation"], "note"),
                                                 (_shape_text(out["shape"]), "body")], COLOURS["score"])
    _label(ax, width / 2, top + 0.55, f"The U-Net of notebook 2 at its full-mode size: {len(levels)} levels, "
           f"{description['base_filters']} filters doubling at each, {description['classes']} classes",
           size=FONT["heading"], fontweight="bold")
    unit = " \u2192 ".join({"relu": "ReLU"}.get(k, k) for k in description["conv_unit"])
    _notes(ax, width, [
        "Shapes: height \u00d7 width \u00d7 channels. Each conv: " + unit +
        ("; the Dropout layers are not drawn." if description["dropout"] else "."),
        "Orange: the skips (keras Concatenate). Green: upsampling by a transposed convolution"
        + (f", {up_rule[0]}\u00d7{up_rule[0]} with stride {up_rule[1]} (Conv2DTranspose)." if up_rule else ".")])
    return fig


def _run_text(run):
    """One run of alike head layers: "4\u00d7 conv 3\u00d73 \u2192 14\u00d714\u00d732" (the shape shows any stride)."""
    count = f"{run['count']}\u00d7 " if run["count"] > 1 else ""
    if run["op"] == "fc":
        return f"{count}fc {run['shape'][0]}"
    return f"{count}{run['op']} {run['kernel']}\u00d7{run['kernel']} \u2192 {_shape_text(run['shape'])}"


def _outputs_text(outputs):
    return " \u00b7 ".join(f"{key} {_shape_text(shape)}" for key, shape in outputs.items())


def draw_mask_rcnn(description):
    """The stages in the order ``detect`` runs them: backbone and pyramid, RPN and proposals (top);
    RoIAlign, the box head and its NMS, the final detections (middle); RoIAlign of the final
    boxes and the mask head (bottom)."""
    if description["mask_head"]["boxes"] != "detections":
        raise ValueError("the figure draws the mask head on the final detections, as detect() ran when "
                         f"it was drawn; detect() now gives it the {description['mask_head']['boxes']}")
    width, height = 9.8, 7.0
    fig, ax = _canvas(width, height)
    d = description
    _label(ax, width / 2, height - 0.22, "The small Mask R-CNN of notebook 3 (helpers.mask_rcnn.SmallMaskRCNN)",
           size=FONT["heading"], fontweight="bold")
    # Stage 1 (top row): image -> bottom-up stages -> feature pyramid -> RPN -> proposals.
    row = {i: height - 1.0 - 0.62 * i for i in range(len(d["bottom_up"]))}
    xc, xp, bh, pw = 1.9, 4.0, 0.46, 1.3
    stage_width = lambda i: 1.3 - 0.1 * i  # noqa: E731  (narrower as the stages shrink)
    _box(ax, 0.55, row[1], 0.92, 0.58, [("image", "title"), (_shape_text(d["image"]), "body")], COLOURS["data"])
    _arrow(ax, [(1.01, row[1]), (xc - stage_width(1) / 2, row[1])])
    _label(ax, xc, row[0] + 0.42, "backbone", size=FONT["title"], fontweight="bold")
    _label(ax, xp, row[0] + 0.42, "feature pyramid", size=FONT["title"], fontweight="bold")
    for i, stage in enumerate(d["bottom_up"]):
        _box(ax, xc, row[i], stage_width(i), bh, [(f"{stage['name']} \u00b7 stride {stage['stride']}", "note"),
                                                  (_shape_text(stage["shape"]), "body")], COLOURS["encoder"])
        if i:
            _arrow(ax, [(xc, row[i - 1] - bh / 2), (xc, row[i] + bh / 2)], COLOURS["pool"])
    rows = {stage["shape"][0]: i for i, stage in enumerate(d["bottom_up"])}  # side -> row
    for level in d["pyramid"]:
        i = rows[level["shape"][0]]
        _box(ax, xp, row[i], pw, bh, [(f"{level['name']} \u00b7 stride {level['stride']}", "note"),
                                      (_shape_text(level["shape"]), "body")], COLOURS["head"])
        if level["lateral"]:
            start = xc + stage_width(i) / 2
            _arrow(ax, [(start, row[i]), (xp - pw / 2, row[i])], COLOURS["skip"])
            _label(ax, (start + xp - pw / 2) / 2, row[i] + 0.1, "1\u00d71", colour=COLOURS["skip"])
        if level["top_down"]:  # from the row at half this side: a coarser level, or the last stage
            coarser, x = i + 1, xp - 0.45
            if any(rows[other["shape"][0]] == coarser for other in d["pyramid"]):
                _arrow(ax, [(x, row[coarser] + bh / 2), (x, row[i] - bh / 2)], COLOURS["up"])
            else:
                _arrow(ax, [(xc + stage_width(coarser) / 2, row[coarser]), (x, row[coarser]), (x, row[i] - bh / 2)],
                       COLOURS["up"])
            _label(ax, x - 0.07, (row[i] + row[coarser]) / 2, "\u00d72 up, add", colour=COLOURS["up"], ha="right")
    rpn = d["rpn"]
    ry = row[rows[next(lv["shape"][0] for lv in d["pyramid"] if lv["name"] == rpn["level"])]]
    per_cell = len(rpn["anchor_sizes"]) * len(rpn["anchor_ratios"])
    _arrow(ax, [(xp + pw / 2, ry), (5.05, ry)])
    _box(ax, 6.1, ry, 2.1, 1.2, [("region proposal network", "title"),
                                 *[(f"on {rpn['level']}: {_run_text(r)}", "note") for r in rpn["layers"]],
                                 *[(f"{k} {_shape_text(v)}", "body") for k, v in rpn["outputs"].items()],
                                 (f"for {per_cell} anchors a cell", "note")], COLOURS["score"])
    _arrow(ax, [(7.15, ry), (7.73, ry)])
    _box(ax, 8.7, ry, 1.94, 1.2, [("proposals", "title"), (f"{rpn['anchors']:,} anchors", "body"),
                                   (f"the best {rpn['pre_nms']:,}, moved by their", "note"),
                                   ("deltas; non-max suppression", "note"),
                                   (f"(IoU {rpn['iou_threshold']:g}) keeps up to {rpn['post_nms']}", "note"),
                                   (f"boxes {rpn['post_nms']}\u00d74", "body")], COLOURS["score"])
    # Stage 2, as detect() runs it. Middle row: RoIAlign crops each proposal from the box head's
    # level, the box head classifies it and refines its box, a per-class NMS keeps the final
    # detections. Bottom row: RoIAlign crops each final box from the mask head's level, and the
    # mask head predicts its masks, of which the detected class's is kept.
    box, mask, final = d["box_head"], d["mask_head"], d["detections"]
    ya, yb, xr, xh, xd, xo = 2.75, 1.3, 1.4, 3.95, 6.5, 8.88
    rw, hw, dw, ow = 1.8, 2.3, 2.3, 1.7
    _box(ax, xr, ya, rw, 0.72, [("RoIAlign", "title"), ("per proposal", "note"),
                                (f"{_shape_text(box['input'])} of {box['level']}", "body")], COLOURS["join"])
    _box(ax, xh, ya, hw, 0.72, [("box head", "title"), (" \u2192 ".join(_run_text(r) for r in box["layers"]), "note"),
                                (_outputs_text(box["outputs"]), "body")], COLOURS["decoder"])
    _box(ax, xd, ya, dw, 0.98, [("final detections", "title"), ("each proposal's box moved by", "note"),
                                ("its class's deltas; NMS per class", "note"),
                                (f"(IoU {final['iou_threshold']:g}), score \u2265 {final['score_threshold']:g}", "note"),
                                ("boxes \u00b7 classes \u00b7 scores", "body")], COLOURS["score"])
    _box(ax, xr, yb, rw, 0.72, [("RoIAlign", "title"), ("per final box", "note"),
                                (f"{_shape_text(mask['input'])} of {mask['level']}", "body")], COLOURS["join"])
    _box(ax, xh, yb, hw, 1.06, [("mask head", "title"), *[(_run_text(r), "note") for r in mask["layers"]],
                                (_outputs_text(mask["outputs"]), "body")], COLOURS["decoder"])
    k = mask["outputs"][next(iter(mask["outputs"]))][-1]
    _box(ax, xd, yb, dw, 0.72, [("the detected class's mask", "title"), (f"1 of the {k} a box", "note"),
                                (f"{d['mask_size']}\u00d7{d['mask_size']}, box-relative", "body")], COLOURS["decoder"])
    _box(ax, xo, (ya + yb) / 2, ow, ya - yb + 0.5,
         [("detections", "title"), (f"up to {d['max_detections']} an image,", "note"), ("each a box, class,", "body"),
          (f"score, {d['mask_size']}\u00d7{d['mask_size']} mask", "body")], COLOURS["data"])
    for y in (ya, yb):  # left to right along each row
        _arrow(ax, [(xr + rw / 2, y), (xh - hw / 2, y)])
        _arrow(ax, [(xh + hw / 2, y), (xd - dw / 2, y)])
        _arrow(ax, [(xd + dw / 2, y), (xo - ow / 2, y)])
    # The proposals come down from stage 1 to the middle row's RoIAlign.
    py = ya + 0.8  # below the backbone's last stage
    _arrow(ax, [(8.7, ry - 0.6), (8.7, py), (xr + 0.3, py), (xr + 0.3, ya + 0.36)])
    _label(ax, 6.3, py + 0.1, "proposal boxes", colour=COLOURS["note"])
    # The final boxes go down to the bottom row's RoIAlign; their classes pick the mask.
    gy = (ya - 0.49 + yb + 0.53) / 2
    _arrow(ax, [(xd - 0.6, ya - 0.49), (xd - 0.6, gy), (xr + 0.3, gy), (xr + 0.3, yb + 0.36)])
    _label(ax, (xr + xd) / 2 - 0.3, gy + 0.09, "final boxes", colour=COLOURS["note"])
    _arrow(ax, [(xd + 0.6, ya - 0.49), (xd + 0.6, yb + 0.36)])
    _label(ax, xd + 0.67, gy, "classes", colour=COLOURS["note"], ha="left")
    # RoIAlign crops the heads' own levels: a line from each of those pyramid boxes' right edges
    # joins a bus that runs down the left side (crossing the RPN's arrow from P3, which it does
    # not read) to each RoIAlign.
    pyramid = {lv["name"]: row[rows[lv["shape"][0]]] for lv in d["pyramid"]}
    bus, turn, left = xp + pw / 2 + 0.2, py + 0.22, 0.22
    for name in (box["level"], mask["level"]):
        ax.plot([xp + pw / 2, bus], [pyramid[name]] * 2, color=COLOURS["note"], linewidth=1.2, zorder=1)
    ax.plot([bus, bus, left, left], [max(pyramid[box["level"]], pyramid[mask["level"]]), turn, turn, yb],
            color=COLOURS["note"], linewidth=1.2, zorder=1)
    for y, level in ((ya, box["level"]), (yb, mask["level"])):
        _arrow(ax, [(left, y), (xr - rw / 2, y)], COLOURS["note"])
        _label(ax, (left + xr - rw / 2) / 2, y + 0.1, level, colour=COLOURS["note"])
    _label(ax, (bus + xc) / 2 + 0.35, turn + 0.1, f"crops of {box['level']} and {mask['level']}",
           colour=COLOURS["note"])
    sizes = ", ".join(str(s) for s in rpn["anchor_sizes"])
    ratios = ", ".join(f"{r:g}" for r in rpn["anchor_ratios"])
    _notes(ax, width, [
        f"Anchors: at each cell of the stride-{rpn['stride']} grid, {len(rpn['anchor_sizes'])} sizes ({sizes} pixels) "
        f"\u00d7 {len(rpn['anchor_ratios'])} height/width ratios ({ratios}).",
        "Green: the pyramid's top-down path (the coarser level upsampled and added); orange: its lateral "
        "1\u00d71 convolutions.",
        "Shapes: height \u00d7 width \u00d7 channels, per image or per box; a head's mask is box-relative."])
    return fig


# ---------------------------------------------------------------------------- the registry

FIGURES = {
    "fcn": (describe_fcn, draw_fcn),
    "unet": (describe_unet, draw_unet),
    "mask_rcnn": (describe_mask_rcnn, draw_mask_rcnn),
}


def describe_figure(name):
    """Build figure ``name``'s model(s) without weights and return its description."""
    describe_model, _ = FIGURES[name]
    return without_weights(describe_model)


def canonical(description):
    """The description as the PNG stores it: JSON with sorted keys."""
    return json.dumps(description, sort_keys=True, separators=(",", ":"))


def save_figure(fig, path, description):
    """Write the figure as a PNG whose metadata holds the description (and no date or version).

    The picture is reduced to a palette of 128 colours: block diagrams have few, and the file
    stays a fraction of the size (the same description always gives the same bytes).
    """
    import io

    from PIL import Image, PngImagePlugin

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    with Image.open(buffer) as image:
        picture = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, canonical(description))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, format="png", pnginfo=info, optimize=True)


def draw_figure(name, description):
    """Draw figure ``name`` from its description with matplotlib's default style (no user rc)."""
    import matplotlib
    import matplotlib.style

    _, draw = FIGURES[name]
    with matplotlib.style.context("default"), matplotlib.rc_context({"font.family": "DejaVu Sans"}):
        return draw(description)


def write_figure(name, folder=FIGURES_DIR):
    """Describe, draw and save figure ``name``; return its path."""
    description = describe_figure(name)
    path = folder / f"{name}.png"
    save_figure(draw_figure(name, description), path, description)
    return path


def stored_description(path):
    """Return the description a figure's PNG carries, or None if it carries none."""
    from PIL import Image

    with Image.open(path) as image:
        text = image.text.get(METADATA_KEY)
    return None if text is None else json.loads(text)


def check(names=None, folder=FIGURES_DIR):
    """Return one message per figure that is missing or no longer matches its model."""
    problems = []
    for name in names or FIGURES:
        path = folder / f"{name}.png"
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        stored = stored_description(path)
        if stored is None:
            problems.append(f"{path} carries no {METADATA_KEY!r} description: not drawn by this module")
            continue
        current = describe_figure(name)
        if canonical(stored) != canonical(current):
            problems.append(f"{path} no longer matches its model: {_difference(stored, current)}")
    return problems


def _difference(stored, current, where=""):
    """Say where two descriptions first differ."""
    if isinstance(stored, dict) and isinstance(current, dict):
        for key in sorted(set(stored) | set(current)):
            if stored.get(key) != current.get(key):
                return _difference(stored.get(key), current.get(key), f"{where}.{key}" if where else key)
    if isinstance(stored, list) and isinstance(current, list) and len(stored) == len(current):
        for i, (a, b) in enumerate(zip(stored, current)):
            if a != b:
                return _difference(a, b, f"{where}[{i}]")
    return f"{where or 'description'} was {json.dumps(stored)}, the model now gives {json.dumps(current)}"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m maintainer.figures", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", choices=[[], *FIGURES], metavar="NAME",
                        help=f"figures to draw (default: all of {', '.join(FIGURES)})")
    parser.add_argument("--check", action="store_true",
                        help="only check that the committed figures match their models")
    args = parser.parse_args(argv)
    failed, broken = False, False
    for name in args.names or FIGURES:
        try:
            if args.check:
                problems = check([name])
                for problem in problems:
                    print(problem, file=sys.stderr)
                failed |= bool(problems)
            else:
                print(f"wrote {write_figure(name)}")
        except (LookupError, ValueError) as e:  # a notebook without the builder, a model of another shape
            print(f"cannot describe {name}: {e}", file=sys.stderr)
            broken = True
    if failed:
        print("Redraw them with: python -m maintainer.figures", file=sys.stderr)
    return 2 if broken else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
