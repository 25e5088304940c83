"""Checks for the exercises of notebook 4 (the M2NIST assignment).

Each ``check_*`` function tries the learner's code on inputs of its own and prints either
"passes" or exactly what is wrong (which layer, which shape, which pixel, which value); it
returns nothing, so a notebook cell shows only that message. A check never raises: an
exception in the learner's code is reported, not propagated, so one broken exercise does
not stop the notebook. Where reasoning is the point (the padding, the crop, the weights,
the grade) a check tests behaviour, not literal values: an image pattern must come back where
it went in, confusion matrices built for each edge case must give the grade the rule gives.
A check refuses early what the grader (``python -m grader``) will refuse, with its reason:
Python code inside the model (a ``Lambda`` layer, a layer class of one's own). A message says
what the learner's code did, never the code to write.
"""

import importlib.util
import sysconfig
import traceback
import types
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import layers

from helpers import grading, m2nist, metrics

N_CLASSES = m2nist.N_CLASSES
BACKGROUND = m2nist.BACKGROUND
HEIGHT, WIDTH = m2nist.IMAGE_SHAPE
N_POOLINGS = 5  # the encoder halves the image five times
FACTOR = 2 ** N_POOLINGS
# The smallest padded size whose sides five 2x2 poolings divide.
PADDED = tuple(-(-side // FACTOR) * FACTOR for side in m2nist.IMAGE_SHAPE)
ENCODER_KERNEL = (3, 3)  # the exercise fixes conv_block's default for the encoder
SCORE_KERNEL = (1, 1)  # pool-4's and pool-3's score layers
ENCODER_FILTERS = (32, 64, 128, 256, 256)
ENCODER_FEATURES = {"pool3": (PADDED[0] // 8, PADDED[1] // 8, ENCODER_FILTERS[2]),
                    "pool4": (PADDED[0] // 16, PADDED[1] // 16, ENCODER_FILTERS[3]),
                    "pool5": (PADDED[0] // 32, PADDED[1] // 32, ENCODER_FILTERS[4])}
# The block is tried on images of its own size: not the padded size, which exercise 3 works out.
BLOCK_INPUT = (40, 56)
BLOCK_LAYERS = ("Conv2D", "LeakyReLU", "Conv2D", "LeakyReLU", "MaxPooling2D", "BatchNormalization")
BN_MOMENTUM = 0.9
NOT_WRITTEN = "not written yet: replace `raise NotImplementedError()` with your code"


def _is_library_frame(filename):
    """Return whether a traceback frame's file belongs to an installed package or this module."""
    path = Path(filename)
    # Colab installs into dist-packages, virtual environments into site-packages.
    if {"site-packages", "dist-packages"} & set(path.parts):
        return True
    folders = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    for name in ("keras", "tensorflow"):  # may be installed outside both, e.g. from source
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            folders.update(spec.submodule_search_locations)
    path = path.resolve()
    return path == Path(__file__).resolve() or any(
        path.is_relative_to(Path(folder).resolve()) for folder in folders)


class _Problem(Exception):
    """Raised inside a check to stop it with one problem (e.g. exercise 3 is needed first)."""


def _raised(e, hints=()):
    """Describe an exception raised by the learner's code, at the learner's own line."""
    if isinstance(e, NotImplementedError):
        return [NOT_WRITTEN]
    frames = traceback.extract_tb(e.__traceback__)
    # The deepest frame of the learner's own code, not of Keras or of this module.
    own = [f for f in frames if not _is_library_frame(f.filename)]
    frame = (own or frames)[-1]
    message = f"{e}".strip().splitlines()[0] if str(e).strip() else ""
    found = [f"your code raised {type(e).__name__}: {message} (line {frame.lineno}: "
             f"{(frame.line or '').strip()})"]
    return found + [hint for text, hint in hints if text in str(e)]


def _run(number, title, check, hints=()):
    """Run ``check()`` (which returns a list of problems) and print the verdict.

    ``number`` None: a check of the given code at work (the training), named by ``title``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. 0/0 for an absent class: judged by the values
            problems = check()
    except _Problem as e:
        problems = [str(e)]
    except Exception as e:  # the learner's code failed: say where, do not crash the notebook
        problems = _raised(e, hints)
    name = f"Exercise {number} ({title})" if number is not None else title[0].upper() + title[1:]
    if problems:
        print(f"{name} does not pass yet:")
        for problem in problems:
            print(f"  - {problem}")
    else:
        print(f"{name} passes.")


def _layers(inputs, outputs):
    """Return the layers between ``inputs`` and ``outputs``, in the order they were called."""
    model = keras.Model(inputs, outputs)
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _kind(layer):
    return type(layer).__name__


def _is_tensor(value):
    return isinstance(value, keras.KerasTensor)


def _shape(tensor):
    return tuple(tensor.shape[1:])


def _size(shape):
    return "x".join(str(s) for s in shape)


def _code_in(model):
    """Return what in ``model``'s configuration is Python code, which the grader refuses.

    The grader loads a submission with Keras' ``safe_mode`` after scanning its configuration:
    a ``Lambda`` layer, a serialized function or a class from outside Keras (a layer class of
    one's own) is refused without being run. Built-in layers and Keras operations (``x[...]``,
    ``keras.ops.pad``) are saved as plain configuration and pass.
    """
    try:
        config = model.get_config()
    except Exception as e:  # a layer of one's own without get_config
        return [f"a layer that Keras cannot save ({type(e).__name__}: {str(e).splitlines()[0][:100]})"]
    found = []

    def visit(node):
        if isinstance(node, dict):
            name, module = node.get("class_name"), node.get("module")
            if name in ("Lambda", "TFSMLayer"):
                found.append(f"a {name} layer")
            elif name in ("__lambda__", "__python_function__"):
                found.append("a Python function")
            elif name == "function" and module != "builtins":
                found.append(f"the function {node.get('config')} from {module}")
            elif (isinstance(name, str) and isinstance(module, str)
                  and module.split(".")[0] not in ("keras", "builtins")):
                found.append(f"a layer of its own class ({name}, from {module})")
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(config)
    return list(dict.fromkeys(found))


def _refused_by_the_grader(model, part, instead):
    """Return the problem the grader would find in ``model`` (built from the learner's ``part``), or []."""
    found = _code_in(model)
    if not found:
        return []
    return [f"your {part} holds {', '.join(found)}: the grader refuses such a model without "
            "loading it (a submission may hold built-in Keras layers and operations only, never "
            f"Python code that would run on the grader's machine), so it could not be graded. "
            f"{instead}"]


# --- Exercise 1: per-pixel weights ------------------------------------------------------

# A label map small enough to check by hand: background (10), the digit 0, other digits.
WEIGHTS_EXAMPLE = np.array([[10, 0, 3, 10],
                            [9, 10, 0, 10]], np.uint8)


def _weights_problems(pixel_weights, labels, digit_weight):
    given = labels.copy()
    out = pixel_weights(given, digit_weight)
    if out is None:
        return ["pixel_weights returned None: return the array of weights"]
    if not np.array_equal(given, labels):
        return ["pixel_weights changed the labels it was given: compute the weights in a new "
                "array (the labels are still needed for training)"]
    try:
        out = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        return [f"pixel_weights returned a {type(out).__name__}, not an array of numbers"]
    if out.shape != labels.shape:
        return [f"for labels of shape {labels.shape} the weights have shape {out.shape}: "
                "give one weight per pixel, shaped like the labels"]
    digit, background = labels != BACKGROUND, labels == BACKGROUND
    zero = labels == 0
    if np.allclose(out[background], 1) and np.allclose(out[digit], digit_weight):
        return []
    if np.allclose(out[background], digit_weight) and np.allclose(out[digit], 1):
        return ["the weights are the wrong way round: background pixels get digit_weight and "
                "digit pixels 1; the rare digits are what must count more"]
    if np.allclose(out[background], 0):
        return ["background pixels get weight 0, so they would not count in the loss at all: "
                "give them 1"]
    if zero.any() and np.allclose(out[zero], 1) and np.allclose(out[background], 1) \
            and np.allclose(out[digit & ~zero], digit_weight):
        return [f"the digit 0 is weighted as background: 0 is a digit; background is class "
                f"{BACKGROUND} (m2nist.BACKGROUND)"]
    if digit_weight != 10 and np.allclose(out[digit], 10):
        return [f"with digit_weight={digit_weight} the digits get 10: use the digit_weight "
                "argument, not a fixed number"]
    if np.allclose(out[digit], int(digit_weight)) and digit_weight != int(digit_weight):
        return [f"with digit_weight={digit_weight} the digits get {int(digit_weight)}: the "
                "weights were rounded to whole numbers; keep them as floats"]
    for name, where, want in (("background", background, 1.0), ("digit", digit, digit_weight)):
        wrong = where & ~np.isclose(out, want)
        if wrong.any():
            at = tuple(int(i) for i in np.argwhere(wrong)[0])
            return [f"with digit_weight={digit_weight}, the {name} pixel at {at} (class "
                    f"{labels[at]}) gets {out[at]:g}, expected {want:g}"]
    return []


def check_pixel_weights(pixel_weights):
    """Check exercise 1: digit pixels weigh ``digit_weight``, background pixels 1."""

    def problems():
        batch = np.random.default_rng(0).integers(0, N_CLASSES, (2, 8, 12)).astype(np.uint8)
        # A hand-checkable example, a whole-number and a fractional weight, a batch of maps.
        for labels, weight in ((WEIGHTS_EXAMPLE, 10.0), (WEIGHTS_EXAMPLE, 2.5), (batch, 4.0)):
            found = _weights_problems(pixel_weights, labels, weight)
            if found:
                return found
        return []

    _run(1, "pixel weights", problems)


# --- Exercise 2: the convolution block --------------------------------------------------

def _block_problems(conv_block, filters, kernel_size, pool, stride):
    inputs = keras.Input((*BLOCK_INPUT, 1))
    out = conv_block(inputs, filters, kernel_size=kernel_size, pool_size=pool, pool_strides=stride)
    if out is None:
        return ["conv_block returned None: return the block's output tensor"]
    if not _is_tensor(out):
        return [f"conv_block returned a {type(out).__name__}; it must return the tensor x"]
    found = _layers(inputs, out)
    names = [_kind(layer) for layer in found]
    if tuple(names) != BLOCK_LAYERS:
        for i, (want, got) in enumerate(zip(BLOCK_LAYERS, names + [None] * len(BLOCK_LAYERS))):
            if want != got:
                where = f"found {got}" if got else "the block ends there"
                return [f"layer {i + 1} of the block should be {want}, {where} "
                        f"(expected order: {', '.join(BLOCK_LAYERS)})"]
        return [f"the block has {len(names)} layers, expected {len(BLOCK_LAYERS)}: "
                f"{', '.join(BLOCK_LAYERS)}"]
    issues = []
    for n, conv in enumerate((found[0], found[2]), start=1):
        if conv.filters != filters:
            issues.append(f"Conv2D {n} has {conv.filters} filters when filters={filters}; "
                          "use the `filters` argument")
        if tuple(conv.kernel_size) != (kernel_size, kernel_size):
            issues.append(f"Conv2D {n} has kernel_size {conv.kernel_size} when "
                          f"kernel_size={kernel_size}; use the `kernel_size` argument")
        if tuple(conv.strides) != (1, 1):
            issues.append(f"Conv2D {n} has strides {conv.strides}: only the pooling shrinks the image")
        if conv.activation.__name__ != "linear":
            issues.append(f"Conv2D {n} has activation '{conv.activation.__name__}' as well as the "
                          "LeakyReLU after it: leave the convolution linear")
        before, after = _shape(conv.input)[:2], _shape(conv.output)[:2]
        if before != after:
            issues.append(f"Conv2D {n} turns {_size(before)} into {_size(after)}: the "
                          "convolutions must keep the size (choose their padding), so that only "
                          "the pooling shrinks the image")
    slope = keras.layers.LeakyReLU().negative_slope  # the brief asks for the default
    for n, leaky in enumerate((found[1], found[3]), start=1):
        if abs(leaky.negative_slope - slope) > 1e-6:
            issues.append(f"LeakyReLU {n} has negative_slope {leaky.negative_slope:g}; use its "
                          f"default ({slope:g}), as the exercise says: LeakyReLU()")
    pooling, norm = found[4], found[5]
    if tuple(pooling.pool_size) != (pool, pool) or tuple(pooling.strides) != (stride, stride):
        issues.append(f"MaxPooling2D has pool_size {pooling.pool_size} and strides "
                      f"{pooling.strides} when pool_size={pool} and pool_strides={stride}; use "
                      "the `pool_size` and `pool_strides` arguments")
    if abs(norm.momentum - BN_MOMENTUM) > 1e-6:
        issues.append(f"BatchNormalization has momentum {norm.momentum}; use "
                      f"momentum={BN_MOMENTUM} (see the note above the exercise)")
    return issues


def check_conv_block(conv_block):
    """Check exercise 2: two Conv2D + LeakyReLU, then MaxPooling2D and BatchNormalization."""

    def problems():
        # Three calls with different arguments: hard-coded 3x3 or 2x2, or strides taken
        # from pool_size, fail one of them.
        return (_block_problems(conv_block, 8, kernel_size=3, pool=2, stride=2)
                or _block_problems(conv_block, 4, kernel_size=5, pool=3, stride=3)
                or _block_problems(conv_block, 4, kernel_size=3, pool=3, stride=2))

    _run(2, "conv block", problems)


# --- Exercise 3: the encoder and its padding ---------------------------------------------

def _pattern(shape):
    """An image whose every pixel differs (1, 2, 3, ...), batch and channel axes added."""
    return np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(1, *shape, 1)


def _find_block(padded, pattern):
    """Return (top, left) where ``pattern`` sits unchanged inside ``padded``, or None."""
    h, w = pattern.shape
    rows, cols = np.nonzero(padded)
    if padded.shape[0] < h or padded.shape[1] < w or not len(rows):
        return None
    top, left = rows.min(), cols.min()
    window = padded[top:top + h, left:left + w]
    if window.shape != pattern.shape or not np.array_equal(window, pattern):
        return None
    if np.count_nonzero(padded) != pattern.size:
        return None
    return int(top), int(left)


def _sides(top, left, inner, outer):
    """Describe padding (or cropping) by its four sides."""
    bottom, right = outer[0] - inner[0] - top, outer[1] - inner[1] - left
    return {"top": top, "bottom": bottom, "left": left, "right": right}


def _say(sides):
    parts = [f"{n} {name}" for name, n in sides.items() if n]
    return ", ".join(parts) if parts else "nothing"


def encoder_padding(encoder, built=None):
    """Return (the layers and operations the encoder applies before its first convolution,
    their padding as {"top", "bottom", "left", "right"}, the padded image's (height, width)).

    ``built``, if given, is the (inputs, features) of the encoder already called on a
    ``keras.Input``, so that it is not built a second time. The padding is measured by
    behaviour: a pattern image goes through everything before the first convolution (a layer
    such as ZeroPadding2D, or an operation such as ``keras.ops.pad``) and must come out
    unchanged inside zeros. Raises ``_Problem`` with the reason when the encoder does not pad
    that way.
    """
    if built is None:
        inputs = keras.Input((HEIGHT, WIDTH, 1))
        built = inputs, encoder(inputs)
    inputs, features = built
    tensors = [f for f in (features if isinstance(features, (tuple, list)) else [features])
               if _is_tensor(f)]
    if not tensors:
        raise _Problem("the encoder returned no Keras tensors")
    convs = [layer for layer in _layers(inputs, tensors) if _kind(layer) == "Conv2D"]
    if not convs:
        raise _Problem("the encoder has no Conv2D layer: chain the conv_blocks")
    pattern = _pattern((HEIGHT, WIDTH))
    if convs[0].input is inputs:
        before, padded = [], pattern[0, :, :, 0]
    else:
        first = keras.Model(inputs, convs[0].input)
        before = [op for op in first.operations if not isinstance(op, keras.layers.InputLayer)]
        padded = keras.ops.convert_to_numpy(first(pattern))[0, :, :, 0]
    if padded.shape == (HEIGHT, WIDTH):
        raise _Problem(f"the image reaches the first convolution at {HEIGHT}x{WIDTH}, unpadded: "
                       f"pad it before the first block (five 2x2 poolings need sides that are "
                       f"multiples of {FACTOR})")
    where = _find_block(padded, pattern[0, :, :, 0])
    if where is None:
        raise _Problem(f"before the first convolution the {HEIGHT}x{WIDTH} image becomes "
                       f"{_size(padded.shape)} but not by adding zeros around it: pad with "
                       "zeros; do not resize, shift or change the image")
    return before, _sides(*where, (HEIGHT, WIDTH), padded.shape), padded.shape


def check_encoder(encoder):
    """Check exercise 3: the image padded with zeros as little as five poolings allow, five
    blocks of 3x3 convolutions, pool-3, -4 and -5."""
    def problems():
        inputs = keras.Input((HEIGHT, WIDTH, 1))
        features = encoder(inputs)
        if not isinstance(features, (tuple, list)) or len(features) != 3:
            return [f"encoder must return (pool3, pool4, pool5); it returned {type(features).__name__}"]
        for name, got in zip(ENCODER_FEATURES, features):
            if not _is_tensor(got):
                return [f"{name} is {type(got).__name__}, not a Keras tensor: assign it the "
                        "output of a conv_block"]
        refused = _refused_by_the_grader(keras.Model(inputs, list(features)), "encoder",
                                         "Pad with a built-in layer or operation.")
        if refused:
            return refused
        _, sides, padded = encoder_padding(encoder, (inputs, features))
        issues = []
        if padded[0] % FACTOR or padded[1] % FACTOR:
            odd = " and ".join(f"{side} is not a multiple of {FACTOR}" for side in padded
                               if side % FACTOR)
            issues.append(f"your padded image is {_size(padded)}: {odd}, so five 2x2 poolings "
                          "drop rows or columns, and the decoder cannot grow back to the image's "
                          "size")
        elif padded != PADDED:
            issues.append(f"your padded image is {_size(padded)}: five poolings divide it, but "
                          "it is padded more than they need. Pad as little as possible: every "
                          "extra row and column is computed by every layer, then cropped away")
        if issues:
            return issues + [f"(your padding adds {_say(sides)}; ZeroPadding2D takes "
                             "((top, bottom), (left, right)))"]
        shapes = [_shape(f) for f in features]
        want = list(ENCODER_FEATURES.values())
        if sorted(shapes) == sorted(want) and shapes != want:
            return [f"the features come back as {shapes}: return them in the order "
                    "(pool3, pool4, pool5), finest first"]
        for (name, expected), got in zip(ENCODER_FEATURES.items(), shapes):
            if got != expected:
                issues.append(f"{name} has shape {got}, expected {expected} (the output of "
                              f"block {list(ENCODER_FEATURES).index(name) + 3} of five)")
        found = _layers(inputs, features[2])
        pools = [layer for layer in found if _kind(layer) == "MaxPooling2D"]
        if len(pools) != N_POOLINGS:
            issues.append(f"found {len(pools)} MaxPooling2D layers; the encoder has five conv blocks")
        convs = [layer for layer in found if _kind(layer) == "Conv2D"]
        filters = [layer.filters for layer in convs][::2]
        if tuple(filters) != ENCODER_FILTERS:
            issues.append(f"the blocks have {filters} filters, expected {list(ENCODER_FILTERS)}")
        kernels = sorted({tuple(layer.kernel_size) for layer in convs} - {ENCODER_KERNEL})
        if kernels:
            issues.append(f"the encoder has convolutions with {_size(kernels[0])} kernels; the "
                          f"exercise fixes {_size(ENCODER_KERNEL)} (conv_block's default): call "
                          "conv_block without a kernel_size")
        return issues

    _run(3, "encoder", problems)


# --- Exercise 4: the FCN-8 decoder and its crop ------------------------------------------

_SHAPE_HINTS = (("incompatible shapes", "an Add needs both inputs at the same size and with the "
                 "same number of channels: each upsampling must exactly double the size (its "
                 "strides, kernel size and padding), and the pool-4 and pool-3 features must "
                 "first become n_classes scores"),)


def _decoder_model(decoder, n_classes):
    inputs = [keras.Input(shape) for shape in ENCODER_FEATURES.values()]
    out = decoder(*inputs, n_classes)
    if out is None:
        raise _Problem("fcn8_decoder returned None: return the output tensor")
    if not _is_tensor(out):
        raise _Problem(f"fcn8_decoder returned a {type(out).__name__}, not a Keras tensor")
    return keras.Model(inputs, out)


def _crop_problems(model, encoder):
    """Return what is wrong with the decoder's crop against the encoder's padding."""
    try:
        _, sides, padded = encoder_padding(encoder)
    except (_Problem, Exception):
        return ["the crop is checked against the encoder's padding: make exercise 3 pass first"]
    ups = [layer for layer in model.layers if _kind(layer) == "Conv2DTranspose"]
    # Everything after the last upsampling: Cropping2D, slicing (x[:, a:b]), the softmax.
    tail = keras.Model(ups[-1].output, model.output)
    weighted = [_kind(op) for op in tail.operations if getattr(op, "weights", None)]
    if weighted:
        return ["after the last upsampling, only crop (and end with the softmax): found "
                f"{', '.join(weighted)}"]
    if tuple(ups[-1].output.shape[1:3]) != padded:
        return [f"the last upsampling gives {_size(ups[-1].output.shape[1:3])}, not the padded "
                f"image's {_size(padded)}: the crop has to start from the padded size"]
    # Which padded pixel does each output pixel come from? Scores that encode each pixel's row
    # and column (channels 0 and 1; channel 2 is 0) go through the tail; a softmax keeps the
    # differences of the scores (log p0 / p2 = score0 - score2), a crop keeps the values.
    n_classes = int(ups[-1].output.shape[-1])
    scores = np.zeros((1, *padded, n_classes), np.float32)
    scores[0, :, :, 0] = np.arange(padded[0])[:, None] / 8
    scores[0, :, :, 1] = np.arange(padded[1])[None, :] / 8
    out = keras.ops.convert_to_numpy(tail(scores))[0].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if np.allclose(out.sum(-1), 1, atol=1e-3):
            rows, cols = 8 * np.log(out[..., 0] / out[..., 2]), 8 * np.log(out[..., 1] / out[..., 2])
        else:
            rows, cols = 8 * out[..., 0], 8 * out[..., 1]
    top, left = (int(np.round(a[0, 0])) if np.isfinite(a[0, 0]) else -1 for a in (rows, cols))
    shifted = (np.allclose(rows, top + np.arange(HEIGHT)[:, None], atol=0.05)
               and np.allclose(cols, left + np.arange(WIDTH)[None, :], atol=0.05))
    if not shifted:
        return ["after the last upsampling the scores are changed, not cropped: keep each pixel's "
                "scores as they are and only cut away the rows and columns the encoder added"]
    if (top, left) == (sides["top"], sides["left"]):
        return []
    crop = _sides(top, left, (HEIGHT, WIDTH), padded)
    moved = [f"{abs(n)} {unit} {word[n > 0]}" for n, unit, word in (
        (sides["left"] - left, "columns", {True: "right", False: "left"}),
        (sides["top"] - top, "rows", {True: "down", False: "up"})) if n]
    return [f"an image that goes in comes back moved {' and '.join(moved)}: the encoder pads "
            f"{_say(sides)}, the decoder crops {_say(crop)}; crop exactly what the encoder "
            "added, from the same sides"]


def check_decoder(decoder, encoder):
    """Check exercise 4: the FCN-8 decoder, its upsampling and its crop of the encoder's padding."""

    def problems():
        model = _decoder_model(decoder, N_CLASSES)
        refused = _refused_by_the_grader(model, "decoder", "Crop with a built-in layer or "
                                                            "operation.")
        if refused:
            return refused
        out = _shape(model.output)
        issues = []
        if out[:2] != (HEIGHT, WIDTH):
            hint = ""
            if out[:2] == PADDED:
                hint = ": the output still has the padded size; crop what the encoder added"
            issues.append(f"the output is {_size(out[:2])}, expected {HEIGHT}x{WIDTH}{hint}")
        elif out[2] != N_CLASSES:
            issues.append(f"the output has {out[2]} channels, expected one per class ({N_CLASSES})")
        if issues:
            return issues
        kinds = [_kind(layer) for layer in model.layers]
        if "Conv2DTranspose" not in kinds or {"UpSampling2D", "Resizing"} & set(kinds):
            return ["upsample with Conv2DTranspose layers (learned upsampling, as in Lab 1), "
                    "not UpSampling2D or Resizing"]
        if kinds.count("Add") < 2:
            issues.append(f"found {kinds.count('Add')} Add layers; FCN-8 adds the upsampled "
                          "scores to pool-4's and then to pool-3's (two Add layers)")
        for layer in model.layers:
            if _kind(layer) == "Conv2D" and tuple(layer.kernel_size) != SCORE_KERNEL:
                issues.append(f"a score layer is a {_size(layer.kernel_size)} convolution; the "
                              f"exercise fixes {_size(SCORE_KERNEL)}: each pixel's features become "
                              "that pixel's class scores, without mixing in its neighbours")
                break
        biased = [n for n, layer in enumerate(
            (layer for layer in model.layers if _kind(layer) == "Conv2DTranspose"), start=1)
            if layer.use_bias]
        if biased:
            issues.append(f"Conv2DTranspose {', '.join(map(str, biased))} of the decoder has a bias; "
                          "the exercise asks for use_bias=False: the 1x1 score layers' biases, "
                          "added to the upsampled scores, already do that job")
        three = _shape(_decoder_model(decoder, 3).output)
        if three[-1] != 3:
            issues.append(f"with n_classes=3 the output has {three[-1]} channels: use the "
                          "`n_classes` argument, not a fixed number")
        rng = np.random.default_rng(0)
        sample = [rng.normal(size=(1, *s)).astype("float32") for s in ENCODER_FEATURES.values()]
        probs = np.asarray(model(sample))
        for i, name in enumerate(ENCODER_FEATURES):
            changed = list(sample)
            changed[i] = rng.normal(size=sample[i].shape).astype("float32")
            if np.allclose(np.asarray(model(changed)), probs):
                issues.append(f"the output does not depend on the {name} features: FCN-8 "
                              "combines all three")
        other = np.asarray(model([rng.normal(size=s.shape).astype("float32") for s in sample]))
        dead = np.all(np.isclose(other, probs, rtol=0, atol=1e-7), axis=-1)[0]
        if dead.any():
            r, c = np.argwhere(dead)[0]
            issues.append(f"{dead.sum()} of the {dead.size} output pixels (the first at row {r}, "
                          f"column {c}) do not depend on the input at all: a transposed "
                          "convolution whose kernel is smaller than its stride leaves holes")
        if (probs < 0).any() or not np.allclose(probs.sum(-1), 1, atol=1e-3):
            issues.append("the outputs are not probabilities over the classes: end with a "
                          f"softmax over the last axis, the {N_CLASSES} class scores")
        return issues + _crop_problems(model, encoder)

    _run(4, "FCN-8 decoder", problems, _SHAPE_HINTS)


# --- Exercise 5: loss, optimiser, metrics -------------------------------------------------

def _sample_batch():
    """Labels (with background) and probabilities whose argmax is right on 7 pixels of 12."""
    labels = np.array([[[10, 10, 3, 10], [0, 10, 10, 7], [10, 5, 10, 10]]], np.int64)
    logits = np.random.default_rng(1).normal(size=(*labels.shape, N_CLASSES)).astype(np.float32)
    right = np.zeros(labels.shape, bool)
    right.flat[[0, 1, 2, 4, 5, 7, 9]] = True
    for index in np.ndindex(labels.shape):
        logits[index][labels[index]] += 4.0 if right[index] else -4.0
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    return labels, probs, float(np.mean(probs.argmax(-1) == labels))


def _cross_entropy(labels, probs, keep=None):
    picked = -np.log(np.take_along_axis(probs, labels[..., None], -1)[..., 0])
    return float(picked[keep].mean() if keep is not None else picked.mean())


def _loss_problems(loss):
    if loss is None:
        return ["loss is None: choose it from what the labels are (one class id per pixel) and "
                "what the model outputs (probabilities)"]
    labels, probs, _ = _sample_batch()
    fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    name = getattr(loss, "name", getattr(loss, "__name__", str(loss)))
    try:
        value = float(np.mean(keras.ops.convert_to_numpy(fn(labels, probs))))
    except Exception as e:
        return [f"the loss {name} fails on class-id labels ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:120]}): the labels are one class id per pixel, not "
                "one-hot vectors"]
    want = _cross_entropy(labels, probs)
    if np.isclose(value, want, rtol=1e-4):
        return []
    logits_probs = np.exp(probs) / np.exp(probs).sum(-1, keepdims=True)
    if np.isclose(value, _cross_entropy(labels, logits_probs), rtol=1e-4):
        return ["the loss takes the model's outputs as logits (from_logits=True), but the model "
                "ends with a softmax: its outputs are already probabilities"]
    if np.isclose(value, _cross_entropy(labels, probs, labels != BACKGROUND), rtol=1e-4):
        return ["the loss ignores the background pixels (ignore_class): they must count too, "
                "with their weight of 1, or the model never learns what background is"]
    return [f"on a sample batch the loss {name} gives {value:.4f}; the cross-entropy of those "
            f"probabilities against the class ids is {want:.4f}"]


def _optimizer_problems(optimizer, schedule):
    if optimizer is None:
        return ["optimizer is None: the recipe is Adam with the learning-rate schedule above"]
    try:
        opt = keras.optimizers.get(optimizer)
    except (ValueError, TypeError):
        return [f"optimizer {optimizer!r} is not a Keras optimiser"]
    if type(opt) is not keras.optimizers.Adam:
        return [f"the optimiser is {type(opt).__name__}; the recipe is Adam"]
    got = opt.get_config()["learning_rate"]
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        want = keras.saving.serialize_keras_object(schedule)
        if got != want:
            what = f"a constant {got:g}" if isinstance(got, float) else f"another schedule ({got})"
            return [f"Adam's learning rate is {what}: give it the schedule built above "
                    "(`schedule`: warm-up, then cosine decay)"]
    elif not np.isclose(float(got), float(schedule), rtol=1e-6):
        return [f"Adam's learning rate is {got:g}; the recipe asks for {float(schedule):g}"]
    return []


def _metric_problems(metric_list):
    if metric_list is None:
        return ["metric_list is None: make it a list of what to report, with the pixel accuracy"]
    if not isinstance(metric_list, (list, tuple)) or not metric_list:
        return [f"metric_list must be a non-empty list, not {metric_list!r}"]
    names = [m if isinstance(m, str) else getattr(m, "name", "") for m in metric_list]
    shown = ", ".join(repr(m) if isinstance(m, str) else f"{type(m).__name__}(...)"
                      if hasattr(m, "get_config") else getattr(m, "__name__", repr(m))
                      for m in metric_list)
    if any(str(n).startswith("mean_iou") for n in names):
        return ["the mean IoU is added for you in the next cell (early stopping watches it): "
                "leave it out of metric_list"]
    copies = [m if isinstance(m, str) or not hasattr(m, "get_config")
              else type(m).from_config(m.get_config()) for m in metric_list]
    labels, probs, accuracy = _sample_batch()
    probe = keras.Sequential([keras.Input(probs.shape[1:]), layers.Identity()])
    try:
        probe.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=copies,
                      run_eagerly=True)  # no graph to trace: a few milliseconds
        values = probe.evaluate(probs, labels, verbose=0, return_dict=True)
    except Exception as e:
        return [f"metric_list [{shown}] fails on class-id labels ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:100]}); 'accuracy' works with them"]
    values.pop("loss", None)
    if not any(np.isclose(v, accuracy, atol=1e-6) for v in values.values()):
        given = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
        return [f"none of the metrics is the pixel accuracy: on a sample batch where "
                f"{accuracy:.3f} of the pixels are right they give {given}. 'accuracy' lets "
                "Keras pick the form that fits class-id labels"]
    return []


def check_compile(loss, optimizer, metric_list, schedule):
    """Check exercise 5: the loss, Adam with the schedule, and metrics with the pixel accuracy."""

    def problems():
        return (_loss_problems(loss) + _optimizer_problems(optimizer, schedule)
                + _metric_problems(metric_list))

    _run(5, "compile", problems)


# --- Exercise 6: early stopping --------------------------------------------------------------

MONITOR = "val_mean_iou"  # the logged quantity closest to the grade
TRAINING_LOGS = ("loss", "accuracy", "mean_iou", "sparse_categorical_accuracy")


def _early_stopping_problems(early_stopping, patience):
    if early_stopping is None:
        return ["early_stopping is None: create a keras.callbacks.EarlyStopping"]
    if not isinstance(early_stopping, keras.callbacks.EarlyStopping):
        return [f"early_stopping is a {type(early_stopping).__name__}, not a "
                "keras.callbacks.EarlyStopping"]
    monitor, mode = early_stopping.monitor, early_stopping.mode
    if monitor in TRAINING_LOGS:
        return [f"monitor='{monitor}' watches the training images, which the model is fitting and "
                "which carry the weights: it keeps improving there after it has stopped improving "
                "on images it has not seen, so early stopping would neither stop in time nor keep "
                "the epoch that does best on the test images"]
    if monitor == "val_loss":
        return ["monitor='val_loss' judges each epoch by the cross-entropy of the validation "
                "pixels, about 94 % of them background and none weighted: it rewards confidence "
                "on the background, and it can get worse while the digits' IoU still improves "
                "(the weighted training makes the model claim doubtful pixels for the digits). "
                "The grade is computed from the digits' IoU"]
    if monitor == "val_accuracy" or monitor == "val_sparse_categorical_accuracy":
        return [f"monitor='{monitor}' judges each epoch by the share of validation pixels it gets "
                "right: a model that answers background everywhere already gets about 94 %, and "
                "a digit found or lost moves it by a fraction of a percent. The grade is "
                "computed from the digits' IoU"]
    if monitor != MONITOR:
        return [f"monitor='{monitor}' is not a quantity the training logs (loss, accuracy and "
                "mean_iou, and the same on the validation data with val_ in front): early "
                "stopping would warn every epoch and never stop"]
    issues = []
    if mode == "min":
        issues.append("mode='min' takes a falling mean IoU for an improvement: early stopping "
                      f"would end the training after {early_stopping.patience} epochs of rising "
                      "IoU, and call the worst epoch the best")
    if early_stopping.patience != patience:
        issues.append(f"patience={early_stopping.patience}: the parameters cell sets PATIENCE = "
                      f"{patience}; use PATIENCE, so that the recipe is changed in one place")
    if not early_stopping.restore_best_weights:
        issues.append("restore_best_weights is off: when early stopping ends the training, the "
                      f"model keeps the weights of its last epoch, {early_stopping.patience} "
                      "epochs after its best one (and a training that runs to the end keeps its "
                      "last epoch, best or not); that is the model you save and are graded on")
    if early_stopping.baseline is not None or early_stopping.start_from_epoch:
        issues.append("leave baseline and start_from_epoch at their defaults: the recipe stops "
                      "on patience alone")
    return issues


def check_early_stopping(early_stopping, patience):
    """Check exercise 6: early stopping watches the validation mean IoU, upwards, with
    ``patience``, and restores the best epoch's weights."""
    _run(6, "early stopping", lambda: _early_stopping_problems(early_stopping, patience))


# --- The training at work ---------------------------------------------------------------------

def _background_only_mean_iou():
    """The validation mean IoU of a model that answers background everywhere (about 0.09)."""
    share = 1 - 0.0575  # digits cover about 5.75 % of M2NIST's pixels
    return share / N_CLASSES


def _validated_on(history, val_ds):
    """Return (the epoch whose validation scores the model scores on ``val_ds``, or None; a
    problem if none does).

    After ``fit`` the model holds the weights of its last epoch, or of its best one when early
    stopping restored them; evaluated on the data it was validated on, it scores that epoch's
    ``val_`` figures again (the same computation; 1e-3 leaves room for a GPU's rounding).
    """
    got = history.model.evaluate(val_ds, verbose=0, return_dict=True)
    names = [n for n in ("loss", "mean_iou") if n in got and f"val_{n}" in history.history]
    if not names:
        return None, None
    for epoch in range(len(history.history[f"val_{names[0]}"])):
        if all(abs(got[n] - history.history[f"val_{n}"][epoch]) <= 1e-3 * max(1.0, abs(got[n]))
               for n in names):
            return epoch, None
    now = ", ".join(f"{n} {got[n]:.4f}" for n in names)
    return None, (f"the validation scores were not computed on val_ds: the trained model scores "
                  f"{now} on val_ds, which no epoch's validation scores match. Pass "
                  "validation_data=val_ds to model.fit (not the training data, and all of val_ds)")


def _losses_on(model, train_ds, batches=2):
    """Return the model's cross-entropy on a few batches of ``train_ds``: (unweighted, weighted
    as Keras weighs it, the sum of weight x loss over the pixel count), or None without weights."""
    plain = weighted = count = 0.0
    for batch in train_ds.take(batches):
        if len(batch) != 3:
            return None
        images, labels, weights = (keras.ops.convert_to_numpy(t) for t in batch)
        probs = keras.ops.convert_to_numpy(model(images, training=False))
        picked = np.take_along_axis(probs, labels[..., None].astype(np.int64), -1)[..., 0]
        loss = -np.log(np.clip(picked.astype(np.float64), 1e-7, 1.0))
        plain, weighted, count = plain + loss.sum(), weighted + (weights * loss).sum(), count + loss.size
    return (plain / count, weighted / count) if count else None


def _weights_problem(history, train_ds, epoch):
    """Return a problem if the training loss ``fit`` recorded is the unweighted one."""
    losses = _losses_on(history.model, train_ds)
    if losses is None:
        return ("train_ds holds (images, labels) without the per-pixel weights: build it with "
                "weights=train_weights, as the data cell does")
    plain, weighted = losses
    recorded = history.history.get("loss", [None] * (epoch + 1))[epoch]
    if recorded is None or not weighted > 1.5 * plain or not recorded > 0:
        return None  # weights close to 1 everywhere: the two cannot be told apart, nor matter
    # The recorded loss is averaged while the epoch trains, so it sits a little above the
    # trained model's; compared on a log scale it is far nearer the one it is.
    if abs(np.log(recorded / plain)) < abs(np.log(recorded / weighted)):
        return (f"the training ignored the per-pixel weights: model.fit recorded a training loss "
                f"of {recorded:.3f} in epoch {epoch + 1}, and on batches of train_ds the trained "
                f"model's loss is {plain:.3f} with every pixel weighing 1, {weighted:.3f} with the "
                "weights of train_ds. Train on train_ds, whose batches carry the weights "
                "(images, labels, weights), so that the rare digits count")
    return None


def check_training(history, callbacks, epochs, steps_per_epoch, val_ds=None, train_ds=None):
    """Check the training: a History of ``epochs`` full epochs, validated (on ``val_ds``, when
    given: the model is evaluated on it once), with the callbacks, on the weighted data (when
    ``train_ds`` is given: the model's loss on two of its batches, with and without weights)."""
    def problems():
        if history is None:
            return ["history is None: run the training cell, which keeps the History that "
                    "model.fit returns"]
        if isinstance(history, dict):
            return ["history is a dict (history.history?): keep the History object that "
                    "model.fit returns"]
        if not isinstance(history, keras.callbacks.History):
            return [f"history is a {type(history).__name__}; assign it what model.fit returns"]
        issues = []
        asked, steps = history.params.get("epochs"), history.params.get("steps")
        if not history.epoch:
            issues.append("the model was trained for 0 epochs")
        if asked is not None and asked < epochs:
            issues.append(f"model.fit was asked for {asked} epochs; the learning-rate schedule "
                          f"decays over {epochs} (EPOCHS), so training stops while the rate is "
                          "still high. Early stopping ends it sooner if it stops improving")
        if asked is not None and asked > epochs:
            issues.append(f"model.fit was asked for {asked} epochs; the learning-rate schedule was "
                          f"built for {epochs} (EPOCHS): after that the rate stays at its floor, and "
                          "the extra epochs cost time for little gain. Use epochs=EPOCHS")
        if steps is not None and steps != steps_per_epoch:
            issues.append(f"each epoch ran {steps} steps, not the {steps_per_epoch} batches of "
                          "train_ds: train on the whole of train_ds (no steps_per_epoch)")
        if "val_loss" not in history.history:
            issues.append("no validation scores: pass validation_data=val_ds to model.fit")
        unused = [type(c).__name__ for c in callbacks if getattr(c, "model", None) is not history.model]
        if unused:
            issues.append(f"the callbacks ({', '.join(unused)}) were not passed to this "
                          "model.fit: pass callbacks=callbacks")
        if issues:
            return issues
        epoch = len(history.epoch) - 1
        if val_ds is not None:
            matched, problem = _validated_on(history, val_ds)
            if problem:
                return [problem]
            epoch = epoch if matched is None else matched
        if train_ds is not None:
            problem = _weights_problem(history, train_ds, epoch)
            if problem:
                return [problem]
        scores = history.history.get("val_mean_iou")
        if scores and max(scores) <= _background_only_mean_iou() + 0.02:
            issues.append(f"the validation mean IoU never rose above {max(scores):.3f}, about "
                          "what a model that answers background everywhere scores: did the "
                          "training use the weighted train_ds?")
        return issues

    _run(None, "the training", problems)


# --- Exercise 7: the grade, from a confusion matrix -------------------------------------------

def _rule(cm):
    """The grade by the assignment's rule (``helpers.grading.grade``), from a confusion matrix."""
    return grading.grade(types.SimpleNamespace(iou=metrics.iou_per_class(cm)))


def _grade_cases():
    """Confusion matrices (rows: truth, columns: prediction) for each case the rule must get right."""
    rng = np.random.default_rng(7)
    digits = list(range(BACKGROUND))
    typical = rng.integers(0, 8, (N_CLASSES, N_CLASSES))
    typical[digits, digits] = rng.integers(60, 200, len(digits))  # digits found, unevenly well
    typical[BACKGROUND, :BACKGROUND] = rng.integers(10, 40, len(digits))  # claimed background
    typical[:BACKGROUND, BACKGROUND] = rng.integers(10, 40, len(digits))  # missed digit pixels
    typical[BACKGROUND, BACKGROUND] = 20_000
    absent = typical.copy()
    absent[4, :] = absent[:, 4] = 0  # digit 4: in no test image, never predicted
    predicted_only = typical.copy()
    predicted_only[7, :] = 0  # digit 7: predicted on some pixels, in no test image
    perfect = np.diag(typical.sum(axis=1))
    background = np.zeros_like(typical)
    background[:, BACKGROUND] = typical.sum(axis=1)  # background everywhere
    return {
        "a perfect model's matrix": perfect,
        "the matrix of a model that answers background everywhere": background,
        "a matrix where every class occurs": typical,
        "a matrix where digit 4 neither occurs nor is predicted": absent,
        "a matrix where digit 7 is predicted on some pixels but never occurs": predicted_only,
        "a matrix where every class occurs, given as fractions of the pixels (it sums to 1)":
            typical / typical.sum(),
    }


def _wrong_grades(cm):
    """The grades that plausible wrong rules give, each with what the rule got wrong."""
    cm = np.asarray(cm, dtype=np.float64)
    tp, rows, cols = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (rows + cols - tp)
        dice = 2 * tp / (rows + cols)
        recall, precision, twice = tp / rows, tp / cols, tp / (rows + cols)
        digits = iou[:BACKGROUND]
        return {
            "your grade counts the background too: for a model that answers background "
            "everywhere, which finds no digit, it is above 0. The grade counts the ten digits "
            "only": 10 * np.nansum(iou),
            "your grade leaves out digit 0 and counts the background: the digits are classes "
            f"0 to 9, background is class {BACKGROUND}": 10 * np.nansum(iou[1:]),
            "your grade is the mean IoU of the digits, between 0 and 1: a perfect model's grade "
            "is 100": np.nanmean(digits),
            "your grade is the sum of the digits' IoUs, at most 10: a perfect model's grade is "
            "100": np.nansum(digits),
            "your grade is NaN when a digit neither occurs nor is predicted: that digit's IoU is "
            "0/0, and a NaN makes the whole sum NaN": 10 * np.sum(digits),
            "when a digit neither occurs nor is predicted, your grade leaves it out and scales "
            "the other digits up to 100, so a model gains by never meeting a digit. The rule "
            "counts such a digit 0": 100 * np.nanmean(digits),
            "your grade counts a digit that neither occurs nor is predicted as a perfect IoU of "
            "1: the model found nothing there": 10 * np.sum(np.where(np.isnan(digits), 1.0, digits)),
            "your grade sums the digits' Dice coefficients, 2 TP / (2 TP + FP + FN), not their "
            "IoU": 10 * np.nansum(dice[:BACKGROUND]),
            "your IoU is TP / (TP + FN): the false positives (the rest of the digit's column) "
            "are missing": 10 * np.nansum(recall[:BACKGROUND]),
            "your IoU is TP / (TP + FP): the false negatives (the rest of the digit's row) are "
            "missing": 10 * np.nansum(precision[:BACKGROUND]),
            "your IoU counts the true positives twice: its denominator is the row plus the column, "
            "which both hold TP": 10 * np.nansum(twice[:BACKGROUND]),
        }


def _close(got, want):
    return bool((np.isnan(got) and np.isnan(want)) or np.isclose(got, want, rtol=1e-6, atol=1e-6))


def _grade_problems(grade_function):
    cases = _grade_cases()
    got = {}
    for name, cm in cases.items():
        given = cm.copy()
        value = grade_function(given)
        if not np.array_equal(given, cm):
            return ["your function changed the confusion matrix it was given"]
        if value is None:
            return ["your function returned None: return the grade"]
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return [f"your function returned a {type(value).__name__}, not a number"]
        if array.size != 1:
            return [f"your function returned {array.size} numbers (shape {array.shape}); "
                    "return one, the grade"]
        got[name] = float(array.reshape(()))
    want = {name: _rule(cm) for name, cm in cases.items()}
    if all(_close(got[name], want[name]) for name in cases):
        return []
    wrongs = [_wrong_grades(cm) for cm in cases.values()]
    for message in wrongs[0]:
        if all(_close(g, w[message]) for g, w in zip(got.values(), wrongs)):
            return [message]
    name = next(n for n in cases if not _close(got[n], want[n]))
    if "fractions" in name:
        return [f"on {name} your grade is {got[name]:.2f}, on the same matrix in pixel counts "
                f"{got['a matrix where every class occurs']:.2f}: IoU is a ratio, so the grade "
                "depends only on the proportions (an integer division, or a conversion to "
                "integers, loses them)"]
    return [f"on {name} your grade is {got[name]:.2f}; by the rule it is {want[name]:.2f}"]


def check_grade(grade_function):
    """Check exercise 7: the grade from a confusion matrix, as the grader computes it, on
    matrices for each edge case (a perfect model, background everywhere, a digit absent from
    truth and prediction, a digit only predicted, fractions instead of counts)."""
    _run(7, "the grade", lambda: _grade_problems(grade_function))
