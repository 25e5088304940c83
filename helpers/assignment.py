"""Checks for the exercises of notebook 4 (the M2NIST assignment).

Each ``check_*`` function tries the learner's code on inputs of its own and prints either
"passes" or exactly what is wrong (which layer, which shape, which pixel, which value); it
returns nothing, so a notebook cell shows only that message. A check never raises: an
exception in the learner's code is reported, not propagated, so one broken exercise does
not stop the notebook. Where reasoning is the point (the padding, the crop, the weights,
IoU and Dice) a check tests behaviour, not literal values: an image pattern must come back
where it went in, a hand-computed confusion matrix must give its hand-computed scores.
"""

import importlib.util
import sysconfig
import traceback
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import layers

from helpers import m2nist, metrics

N_CLASSES = m2nist.N_CLASSES
BACKGROUND = m2nist.BACKGROUND
HEIGHT, WIDTH = m2nist.IMAGE_SHAPE
N_POOLINGS = 5  # the encoder halves the image five times
FACTOR = 2 ** N_POOLINGS
# The smallest padded size whose sides five 2x2 poolings divide: 64 x 96.
PADDED = tuple(-(-side // FACTOR) * FACTOR for side in m2nist.IMAGE_SHAPE)
ENCODER_FILTERS = (32, 64, 128, 256, 256)
ENCODER_FEATURES = {"pool3": (PADDED[0] // 8, PADDED[1] // 8, ENCODER_FILTERS[2]),
                    "pool4": (PADDED[0] // 16, PADDED[1] // 16, ENCODER_FILTERS[3]),
                    "pool5": (PADDED[0] // 32, PADDED[1] // 32, ENCODER_FILTERS[4])}
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
    """Run ``check()`` (which returns a list of problems) and print the verdict."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. 0/0 for an absent class: judged by the values
            problems = check()
    except _Problem as e:
        problems = [str(e)]
    except Exception as e:  # the learner's code failed: say where, do not crash the notebook
        problems = _raised(e, hints)
    if problems:
        print(f"Exercise {number} ({title}) does not pass yet:")
        for problem in problems:
            print(f"  - {problem}")
    else:
        print(f"Exercise {number} ({title}) passes.")


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
    inputs = keras.Input((*PADDED, 1))
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


def _apply(layers_, x):
    """Apply layers one after the other to an array; return the result as a 2-D array."""
    for layer in layers_:
        x = layer(x)
    return keras.ops.convert_to_numpy(x)[0, :, :, 0]


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
    """Return (the layers the encoder applies before its first convolution, their padding as
    {"top", "bottom", "left", "right"}, the padded image's (height, width)).

    ``built``, if given, is the (inputs, features) of the encoder already called on a
    ``keras.Input``, so that it is not built a second time. The padding is measured by
    behaviour: a pattern image goes through those layers and must come out unchanged inside
    zeros. Raises ``_Problem`` with the reason when the encoder does not pad that way.
    """
    if built is None:
        inputs = keras.Input((HEIGHT, WIDTH, 1))
        built = inputs, encoder(inputs)
    inputs, features = built
    tensors = [f for f in (features if isinstance(features, (tuple, list)) else [features])
               if _is_tensor(f)]
    if not tensors:
        raise _Problem("the encoder returned no Keras tensors")
    found = _layers(inputs, tensors)
    convs = [i for i, layer in enumerate(found) if _kind(layer) == "Conv2D"]
    if not convs:
        raise _Problem("the encoder has no Conv2D layer: chain the conv_blocks")
    before = found[:convs[0]]
    pattern = _pattern((HEIGHT, WIDTH))
    padded = _apply(before, pattern) if before else pattern[0, :, :, 0]
    if padded.shape == (HEIGHT, WIDTH):
        raise _Problem(f"the image reaches the first convolution at {HEIGHT}x{WIDTH}, unpadded: "
                       f"pad it before the first block (five 2x2 poolings need sides that are "
                       f"multiples of {FACTOR})")
    where = _find_block(padded, pattern[0, :, :, 0])
    if where is None:
        raise _Problem(f"before the first convolution the {HEIGHT}x{WIDTH} image becomes "
                       f"{_size(padded.shape)} but not by adding zeros around it: pad with "
                       "ZeroPadding2D; do not resize, shift or change the image")
    return before, _sides(*where, (HEIGHT, WIDTH), padded.shape), padded.shape


def check_encoder(encoder):
    """Check exercise 3: the image padded with zeros to 64 x 96, five blocks, pool-3, -4 and -5."""
    def problems():
        inputs = keras.Input((HEIGHT, WIDTH, 1))
        features = encoder(inputs)
        if not isinstance(features, (tuple, list)) or len(features) != 3:
            return [f"encoder must return (pool3, pool4, pool5); it returned {type(features).__name__}"]
        for name, got in zip(ENCODER_FEATURES, features):
            if not _is_tensor(got):
                return [f"{name} is {type(got).__name__}, not a Keras tensor: assign it the "
                        "output of a conv_block"]
        _, sides, padded = encoder_padding(encoder, (inputs, features))
        issues = []
        if padded[0] % FACTOR or padded[1] % FACTOR:
            issues.append(f"the padded image is {_size(padded)}: after five 2x2 poolings a side "
                          f"that is not a multiple of {FACTOR} loses rows or columns, and the "
                          "decoder cannot grow back to the image's size")
        elif padded != PADDED:
            issues.append(f"the padded image is {_size(padded)}: pad as little as possible; the "
                          f"smallest multiples of {FACTOR} not below {HEIGHT} and {WIDTH} are "
                          f"{PADDED[0]} and {PADDED[1]}")
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
        filters = [layer.filters for layer in found if _kind(layer) == "Conv2D"][::2]
        if tuple(filters) != ENCODER_FILTERS:
            issues.append(f"the blocks have {filters} filters, expected {list(ENCODER_FILTERS)}")
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
    found = [layer for layer in model.layers if _kind(layer) != "InputLayer"]
    ups = [i for i, layer in enumerate(found) if _kind(layer) == "Conv2DTranspose"]
    tail = [layer for layer in found[ups[-1] + 1:] if _kind(layer) not in ("Activation", "Softmax")]
    if any(layer.weights for layer in tail):
        return ["after the last upsampling, only crop (and end with the softmax): "
                f"found {', '.join(_kind(layer) for layer in tail)}"]
    pattern = _pattern((HEIGHT, WIDTH))[0, :, :, 0]
    image = np.zeros(padded, np.float32)
    image[sides["top"]:sides["top"] + HEIGHT, sides["left"]:sides["left"] + WIDTH] = pattern
    back = _apply(tail, image[None, :, :, None])
    if back.shape == pattern.shape and np.array_equal(back, pattern):
        return []
    index = _apply(tail, _pattern(padded))  # which pixels of the padded size the crop keeps
    top, left = divmod(int(index[0, 0]) - 1, padded[1])
    crop = _sides(top, left, index.shape, padded)
    moved = [f"{abs(n)} {unit} {word[n > 0]}" for n, unit, word in (
        (sides["left"] - left, "columns", {True: "right", False: "left"}),
        (sides["top"] - top, "rows", {True: "down", False: "up"})) if n]
    return [f"an image that goes in comes back moved {' and '.join(moved) or 'and changed'}: the "
            f"encoder pads {_say(sides)}, the decoder crops {_say(crop)}; crop exactly what the "
            "encoder added, from the same sides"]


def check_decoder(decoder, encoder):
    """Check exercise 4: the FCN-8 decoder, its upsampling and its crop of the encoder's padding."""

    def problems():
        model = _decoder_model(decoder, N_CLASSES)
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


# --- Exercise 6: training ------------------------------------------------------------------

def _background_only_mean_iou():
    """The validation mean IoU of a model that answers background everywhere (about 0.09)."""
    share = 1 - 0.0575  # digits cover about 5.75 % of M2NIST's pixels
    return share / N_CLASSES


def _validated_on(history, val_ds):
    """Return a problem if no epoch's validation scores are the model's scores on ``val_ds``.

    After ``fit`` the model holds the weights of its last epoch, or of its best one when early
    stopping restored them; evaluated on the data it was validated on, it scores that epoch's
    ``val_`` figures again (the same computation; 1e-3 leaves room for a GPU's rounding).
    """
    got = history.model.evaluate(val_ds, verbose=0, return_dict=True)
    names = [n for n in ("loss", "mean_iou") if n in got and f"val_{n}" in history.history]
    if not names:
        return None
    for epoch in range(len(history.history[f"val_{names[0]}"])):
        if all(abs(got[n] - history.history[f"val_{n}"][epoch]) <= 1e-3 * max(1.0, abs(got[n]))
               for n in names):
            return None
    now = ", ".join(f"{n} {got[n]:.4f}" for n in names)
    return (f"the validation scores were not computed on val_ds: the trained model scores "
            f"{now} on val_ds, which no epoch's validation scores match. Pass "
            "validation_data=val_ds to model.fit (not the training data, and all of val_ds)")


def check_training(history, callbacks, epochs, steps_per_epoch, val_ds=None):
    """Check exercise 6: a History of ``epochs`` full epochs, validated (on ``val_ds``, when
    given: the model is evaluated on it once), with the callbacks."""
    def problems():
        if history is None:
            return ["history is None: call model.fit(...) and keep the History it returns"]
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
        unused = [type(c).__name__ for c in callbacks if c.model is not history.model]
        if unused:
            issues.append(f"the callbacks ({', '.join(unused)}) were not passed to this "
                          "model.fit: pass callbacks=callbacks")
        if val_ds is not None and not issues:
            problem = _validated_on(history, val_ds)
            if problem:
                return [problem]
        scores = history.history.get("val_mean_iou")
        if scores and not issues and max(scores) <= _background_only_mean_iou() + 0.02:
            issues.append(f"the validation mean IoU never rose above {max(scores):.3f}, about "
                          "what a model that answers background everywhere scores: did the "
                          "training use the weighted train_ds?")
        return issues

    _run(6, "training", problems)


# --- Exercise 7: IoU and Dice from a confusion matrix ---------------------------------------

# Rows: true class; columns: predicted class. Class 3 occurs nowhere (no score: NaN); class 4
# is predicted once but never true (IoU and Dice 0).
IOU_EXAMPLE = np.array([[4, 0, 0, 0, 0],
                        [1, 4, 0, 0, 0],
                        [0, 1, 2, 0, 1],
                        [0, 0, 0, 0, 0],
                        [0, 0, 0, 0, 0]])
IOU_EXPECTED = np.array([4 / 5, 4 / 6, 2 / 4, np.nan, 0.0])
DICE_EXPECTED = np.array([8 / 9, 8 / 10, 4 / 6, np.nan, 0.0])


def _same(a, b):
    return a.shape == b.shape and np.allclose(a, b, equal_nan=True)


def _diagnose_iou(cm, got, want, name):
    """Say what formula ``got`` (a wrong IoU or Dice) computed instead, if it is a common one."""
    tp, rows, cols = np.diag(cm), cm.sum(1), cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "IoU":
            known = {
                "TP / (row + column): the true positives are counted twice; the union is "
                "TP + FP + FN = row + column - TP": tp / (rows + cols),
                "TP / (TP + row + column): FP and FN must leave out the diagonal (FP = column "
                "- TP, FN = row - TP)": tp / (tp + rows + cols),
                "the recall TP / (TP + FN): the false positives are missing": tp / rows,
                "the precision TP / (TP + FP): the false negatives are missing": tp / cols,
            }
        else:
            known = {
                "TP / (2 TP + FP + FN): the 2 of the numerator is missing": tp / (rows + cols),
                "2 TP / (TP + FP + FN): the denominator is 2 TP + FP + FN":
                    2 * tp / (rows + cols - tp),
                "the IoU: Dice is 2 TP / (2 TP + FP + FN)": tp / (rows + cols - tp),
            }
    absent = (rows + cols) == 0
    for text, values in known.items():
        if _same(np.where(absent, np.nan, got), np.where(absent, np.nan, values)):
            return f"your {name} is {text}"
    if absent.any() and np.allclose(got[absent], 0):
        return (f"a class that is in neither the truth nor the prediction gets {name} 0; it "
                "has no score (0/0): make it NaN, so that it is left out of the means")
    predicted_only = (rows == 0) & (cols > 0)
    if predicted_only.any() and np.isnan(got[predicted_only]).all():
        return (f"a class that is predicted but never true gets {name} NaN; it scores 0 "
                "(every pixel predicted as it is a false positive)")
    c = int(np.flatnonzero(~np.isclose(got, want, equal_nan=True))[0])
    return f"class {c}: {name} {got[c]:.4f}, expected {want[c]:.4f}"


def _iou_problems(iou_and_dice, cm, iou_want, dice_want):
    given = cm.copy()
    result = iou_and_dice(given)
    if not np.array_equal(given, cm):
        return ["iou_and_dice changed the confusion matrix it was given"]
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return [f"iou_and_dice must return (iou, dice), two arrays; it returned "
                f"{type(result).__name__}"]
    iou, dice = (np.asarray(r, dtype=np.float64) for r in result)
    n = len(cm)
    if iou.shape != (n,) or dice.shape != (n,):
        return [f"for a {n}x{n} confusion matrix IoU and Dice need one value per class, shape "
                f"({n},); got {iou.shape} and {dice.shape}"]
    if _same(iou, dice_want) and _same(dice, iou_want):
        return ["IoU and Dice are swapped: return (iou, dice)"]
    issues = []
    if not _same(iou, iou_want):
        issues.append(_diagnose_iou(cm, iou, iou_want, "IoU"))
    if not _same(dice, dice_want):
        issues.append(_diagnose_iou(cm, dice, dice_want, "Dice"))
    return issues


def check_iou_and_dice(iou_and_dice):
    """Check exercise 7: per-class IoU and Dice on a hand-computed example and against helpers.metrics."""

    def problems():
        found = _iou_problems(iou_and_dice, IOU_EXAMPLE, IOU_EXPECTED, DICE_EXPECTED)
        if found:
            return [f"on the example matrix of the text: {p}" for p in found]
        rng = np.random.default_rng(0)
        cm = rng.integers(0, 50, (N_CLASSES, N_CLASSES))
        cm[4, :] = cm[:, 4] = 0  # a class in neither truth nor prediction
        cm[7, :] = 0  # a class predicted but never true
        for matrix in (cm, cm / cm.sum()):  # counts, and a normalised matrix
            found = _iou_problems(iou_and_dice, matrix, metrics.iou_per_class(matrix),
                                  metrics.dice_per_class(matrix))
            if found:
                return [f"on an {N_CLASSES}-class matrix, against helpers.metrics: {p}" for p in found]
        return []

    _run(7, "IoU and Dice", problems)
