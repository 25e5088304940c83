"""Checks for the exercises of notebook 4 (the M2NIST assignment).

Each ``check_*`` function tries the learner's code on inputs of its own and prints either
"passes" or exactly what is wrong (which layer, which shape, which argument); it returns
nothing, so a notebook cell shows only that message. A check never raises: an exception
in the learner's code is reported, not propagated, so one broken exercise does not stop
the notebook.
"""

import importlib.util
import sysconfig
import traceback
from pathlib import Path

import numpy as np

from helpers import m2nist

N_CLASSES = m2nist.N_CLASSES
HEIGHT, WIDTH = m2nist.IMAGE_SHAPE
# Five 2x2 poolings halve the size five times, so the encoder pads the width to a multiple
# of 32 (84 -> 96, 6 columns each side) and the decoder crops the padding off again.
PADDED_WIDTH = -(-WIDTH // 32) * 32
PAD = (PADDED_WIDTH - WIDTH) // 2
ENCODER_FEATURES = {"pool-3": (HEIGHT // 8, PADDED_WIDTH // 8, 128),
                    "pool-4": (HEIGHT // 16, PADDED_WIDTH // 16, 256),
                    "pool-5": (HEIGHT // 32, PADDED_WIDTH // 32, 256)}
ENCODER_FILTERS = (32, 64, 128, 256, 256)
BLOCK_LAYERS = ("Conv2D", "LeakyReLU", "Conv2D", "LeakyReLU", "MaxPooling2D", "BatchNormalization")
BN_MOMENTUM = 0.9


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


def _run(number, title, check):
    """Run ``check()`` (which returns a list of problems) and print the verdict."""
    try:
        problems = check()
    except Exception as e:  # the learner's code failed: say where, do not crash the notebook
        frames = traceback.extract_tb(e.__traceback__)
        # The deepest frame of the learner's own code, not of Keras or of this module.
        own = [f for f in frames if not _is_library_frame(f.filename)]
        frame = (own or frames)[-1]
        problems = [f"your code raised {type(e).__name__}: {e} (line {frame.lineno}: "
                    f"{(frame.line or '').strip()})"]
    if problems:
        print(f"Exercise {number} ({title}) does not pass yet:")
        for problem in problems:
            print(f"  - {problem}")
    else:
        print(f"Exercise {number} ({title}) passes.")


def _layers(inputs, outputs):
    """Return the layers between ``inputs`` and ``outputs``, in the order they were called."""
    import keras

    model = keras.Model(inputs, outputs)
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _is_tensor(value):
    import keras

    return isinstance(value, keras.KerasTensor)


def _shape(tensor):
    return tuple(tensor.shape[1:])


def _block_problems(conv_block, filters, kernel_size, pool):
    """Return what is wrong with one call of the learner's conv_block."""
    import keras

    inputs = keras.Input((HEIGHT, PADDED_WIDTH, 1))
    out = conv_block(inputs, filters, kernel_size=kernel_size, pool_size=pool, pool_strides=pool)
    if out is None:
        return ["conv_block returned None: replace each None between the markers with a layer "
                "applied to x"]
    if not _is_tensor(out):
        return [f"conv_block returned a {type(out).__name__}; it must return the tensor x"]
    found = _layers(inputs, out)
    names = [type(layer).__name__ for layer in found]
    if tuple(names) != BLOCK_LAYERS:
        for i, (want, got) in enumerate(zip(BLOCK_LAYERS, names + [None] * 6)):
            if want != got:
                where = f"found {got}" if got else "the block ends there"
                return [f"layer {i + 1} of the block should be {want}, {where} "
                        f"(expected order: {', '.join(BLOCK_LAYERS)})"]
        return [f"the block has {len(names)} layers, expected {len(BLOCK_LAYERS)}: "
                f"{', '.join(BLOCK_LAYERS)}"]
    issues = []
    for i in (0, 2):
        conv = found[i]
        if conv.filters != filters:
            issues.append(f"Conv2D {i // 2 + 1} has {conv.filters} filters when filters={filters}; "
                          "use the `filters` argument")
        if tuple(conv.kernel_size) != (kernel_size, kernel_size):
            issues.append(f"Conv2D {i // 2 + 1} has kernel_size {conv.kernel_size} when "
                          f"kernel_size={kernel_size}; use the `kernel_size` argument")
        if conv.padding != "same":
            issues.append(f"Conv2D {i // 2 + 1} has padding='{conv.padding}'; use "
                          "padding='same' so only the pooling changes the size")
    pooling, norm = found[4], found[5]
    if tuple(pooling.pool_size) != (pool, pool) or tuple(pooling.strides) != (pool, pool):
        issues.append(f"MaxPooling2D has pool_size {pooling.pool_size} and strides "
                      f"{pooling.strides} when pool_size={pool} and pool_strides={pool}; use the "
                      "`pool_size` and `pool_strides` arguments")
    if abs(norm.momentum - BN_MOMENTUM) > 1e-6:
        issues.append(f"BatchNormalization has momentum {norm.momentum}; use "
                      f"momentum={BN_MOMENTUM} (see the note above the exercise)")
    expected = (HEIGHT // pool, PADDED_WIDTH // pool, filters)
    if not issues and _shape(out) != expected:
        issues.append(f"a {HEIGHT}x{PADDED_WIDTH}x1 input gives {_shape(out)}, expected {expected}")
    return issues


def check_conv_block(conv_block):
    """Check exercise 1: two Conv2D + LeakyReLU, then MaxPooling2D and BatchNormalization."""

    def problems():
        # Two calls with different arguments: a block that hard-codes 3x3 and 2x2 fails one.
        return (_block_problems(conv_block, 8, kernel_size=3, pool=2)
                or _block_problems(conv_block, 4, kernel_size=5, pool=3))

    _run(1, "conv block", problems)


def check_encoder(encoder):
    """Check exercise 2: padding to 96 wide and five conv blocks returning pool-3, -4 and -5."""
    import keras

    def problems():
        inputs = keras.Input((HEIGHT, WIDTH, 1))
        features = encoder(inputs)
        if not isinstance(features, (tuple, list)) or len(features) != 3:
            return [f"encoder must return (pool3, pool4, pool5); it returned {type(features).__name__}"]
        issues = []
        for (name, want), got in zip(ENCODER_FEATURES.items(), features):
            if got is None:
                issues.append(f"{name} is None: assign it the output of a conv_block")
            elif not _is_tensor(got):
                issues.append(f"{name} is a {type(got).__name__}, not a Keras tensor")
            elif _shape(got) != want:
                issues.append(f"{name} has shape {_shape(got)}, expected {want}")
        if issues:
            if any("shape" in i for i in issues) and not any(
                    type(layer).__name__ == "ZeroPadding2D"
                    for layer in _layers(inputs, [f for f in features if _is_tensor(f)])):
                issues.append(f"no ZeroPadding2D layer: pad the {WIDTH}-pixel width to "
                              f"{PADDED_WIDTH} (a multiple of 32) before the first block")
            return issues
        found = _layers(inputs, features[2])
        pad = [layer for layer in found if type(layer).__name__ == "ZeroPadding2D"]
        if not pad:
            issues.append(f"no ZeroPadding2D layer: pad the width from {WIDTH} to {PADDED_WIDTH} "
                          "before the first block")
        pools = [layer for layer in found if type(layer).__name__ == "MaxPooling2D"]
        if len(pools) != 5:
            issues.append(f"found {len(pools)} MaxPooling2D layers; the encoder has five conv blocks")
        filters = [layer.filters for layer in found if type(layer).__name__ == "Conv2D"][::2]
        if tuple(filters) != ENCODER_FILTERS:
            issues.append(f"the blocks have {filters} filters, expected {list(ENCODER_FILTERS)}")
        return issues

    _run(2, "encoder", problems)


def check_decoder(decoder):
    """Check exercise 3: the FCN-8 decoder, from the three pooled features to (64, 84, 11)."""
    import keras

    def problems():
        inputs = [keras.Input(shape) for shape in ENCODER_FEATURES.values()]
        out = decoder(*inputs, N_CLASSES)
        if out is None:
            return ["fcn8_decoder returned None: replace each None between the markers"]
        if not _is_tensor(out):
            return [f"fcn8_decoder returned a {type(out).__name__}, not a Keras tensor"]
        issues = []
        if _shape(out) != (HEIGHT, WIDTH, N_CLASSES):
            hint = ""
            if _shape(out)[:2] == (HEIGHT, PADDED_WIDTH):
                hint = f": crop the {PAD} padded columns on each side with Cropping2D"
            issues.append(f"the output has shape {_shape(out)}, expected "
                          f"{(HEIGHT, WIDTH, N_CLASSES)}{hint}")
        found = _layers(inputs, out)
        kinds = [type(layer).__name__ for layer in found]
        model = keras.Model(inputs, out)
        rng = np.random.default_rng(0)
        sample = [rng.normal(size=(1, *s)).astype("float32") for s in ENCODER_FEATURES.values()]
        probs = np.asarray(model(sample))
        for i, name in enumerate(ENCODER_FEATURES):
            changed = list(sample)
            changed[i] = rng.normal(size=sample[i].shape).astype("float32")
            if np.allclose(np.asarray(model(changed)), probs):
                issues.append(f"the output does not depend on the {name} features: FCN-8 "
                              "combines all three")
        if kinds.count("Add") < 2:
            issues.append(f"found {kinds.count('Add')} Add layers; FCN-8 adds the upsampled "
                          "scores to pool-4's and then to pool-3's (two Add layers)")
        if "Conv2DTranspose" not in kinds:
            issues.append("no Conv2DTranspose layer: upsample with transposed convolutions")
        if (probs < 0).any() or not np.allclose(probs.sum(-1), 1, atol=1e-3):
            issues.append("the outputs are not probabilities: end with a softmax over the "
                          f"{N_CLASSES} classes (layers.Activation('softmax'))")
        return issues

    _run(3, "FCN-8 decoder", problems)


def check_compile(loss, optimizer, metric_list):
    """Check exercise 4: a sparse cross-entropy loss, an optimiser, and a list of metrics."""
    import keras

    def problems():
        issues = []
        if loss is None:
            issues.append("loss is None: the labels are integer class ids per pixel, so use "
                          "sparse categorical cross-entropy")
        else:
            name = loss if isinstance(loss, str) else getattr(loss, "name", getattr(loss, "__name__", ""))
            if "sparse_categorical_crossentropy" not in str(name):
                issues.append(f"loss is {name or type(loss).__name__}; the labels are integer "
                              "class ids (not one-hot), so use sparse categorical cross-entropy")
            elif getattr(loss, "from_logits", False):
                issues.append("the loss has from_logits=True, but the model ends with a softmax: "
                              "leave from_logits=False")
        if optimizer is None:
            issues.append("optimizer is None: use an optimiser such as "
                          "keras.optimizers.Adam(learning_rate=LEARNING_RATE)")
        else:
            try:
                keras.optimizers.get(optimizer)
            except (ValueError, TypeError):
                issues.append(f"optimizer {optimizer!r} is not a Keras optimiser")
        if metric_list is None:
            issues.append("metric_list is None: make it a list, e.g. ['accuracy']")
        elif not isinstance(metric_list, (list, tuple)) or not metric_list:
            issues.append(f"metric_list must be a non-empty list, not {metric_list!r}")
        else:
            for metric in metric_list:
                try:
                    keras.metrics.get(metric)
                except (ValueError, TypeError):
                    issues.append(f"{metric!r} is not a Keras metric")
        return issues

    _run(4, "compile", problems)


def check_training(epochs, history):
    """Check exercise 5: an epoch count, and the History of a fit with validation data."""
    import keras

    def problems():
        if epochs is None:
            return ["epochs is None: choose how many passes over the training images to make "
                    "(the parameters cell's EPOCHS is a good start)"]
        if not isinstance(epochs, (int, np.integer)) or epochs < 1:
            return [f"epochs must be a whole number of at least 1, not {epochs!r}"]
        if history is None:
            return ["history is None: call model.fit(...) and keep the History it returns"]
        if not isinstance(history, keras.callbacks.History):
            return [f"history is a {type(history).__name__}; assign it what model.fit returns"]
        issues = []
        if not history.epoch:
            issues.append("the model was trained for 0 epochs")
        if "val_loss" not in history.history:
            issues.append("no validation scores: pass validation_data=val_ds to model.fit")
        return issues

    _run(5, "training", problems)
