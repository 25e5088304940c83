"""The model-file checks: files small on disk but enormous when decoded are refused before loading.

These run the checks in this process and load nothing, so a check that stopped working fails
its test without allocating what the file declares. tests/test_grading.py measures the peak
memory of a grader refusing such files, and grades a folder holding one.
"""

import json
import math
import time
import zipfile

import h5py
import keras
import pytest
from bomb_files import (config_bomb, many_entries, two_layer_model, weights_bomb, zip_bomb)
from keras import layers

from grader import safety
from grader.safety import InvalidSubmission

GIB = 1 << 30


def solution_fcn8():
    """The assignment's FCN-8, as the solution notebook builds it (2.4 M parameters)."""
    def conv_block(x, filters):
        for _ in range(2):
            x = layers.LeakyReLU()(layers.Conv2D(filters, 3, padding="same")(x))
        return layers.BatchNormalization(momentum=0.9)(layers.MaxPooling2D(2, strides=2)(x))

    inputs = keras.Input((64, 84, 1), name="image")
    x = layers.ZeroPadding2D(((0, 0), (6, 6)))(inputs)
    x = conv_block(conv_block(x, 32), 64)
    pool3 = conv_block(x, 128)
    pool4 = conv_block(pool3, 256)
    pool5 = conv_block(pool4, 256)
    x = layers.Conv2DTranspose(11, 4, strides=2, padding="same", use_bias=False)(pool5)
    x = layers.Add()([x, layers.Conv2D(11, 1)(pool4)])
    x = layers.Conv2DTranspose(11, 4, strides=2, padding="same", use_bias=False)(x)
    x = layers.Add()([x, layers.Conv2D(11, 1)(pool3)])
    x = layers.Conv2DTranspose(11, 16, strides=8, padding="same", use_bias=False)(x)
    outputs = layers.Activation("softmax")(layers.Cropping2D(((0, 0), (6, 6)))(x))
    return keras.Model(inputs, outputs, name="fcn8_m2nist")


def unet(base, depth=4):
    """A U-Net on the padded image: ``base`` filters doubling per level; base 64 is the classic one."""
    inputs = keras.Input((64, 84, 1))
    x = layers.ZeroPadding2D(((0, 0), (6, 6)))(inputs)
    skips = []
    for level in range(depth):
        for _ in range(2):
            x = layers.Conv2D(base << level, 3, padding="same", activation="relu")(x)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    for _ in range(2):
        x = layers.Conv2D(base << depth, 3, padding="same", activation="relu")(x)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(base << level, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skips[level]])
        for _ in range(2):
            x = layers.Conv2D(base << level, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(11, 1)(layers.Cropping2D(((0, 0), (6, 6)))(x))
    return keras.Model(inputs, layers.Softmax()(x))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("model-files")


@pytest.fixture(scope="module")
def plain(folder):
    return two_layer_model(folder / "plain.keras")


def refused(path):
    """Run both checks on a file; return the refusal's message and the seconds it took."""
    start = time.perf_counter()
    with pytest.raises(InvalidSubmission) as caught:
        safety.check_sizes(path, safety.read_configuration(path))
    return str(caught.value), time.perf_counter() - start


@pytest.mark.parametrize("name, build", [
    ("fcn8", solution_fcn8),
    ("unet16", lambda: unet(16)),  # the classic U-Net's shape at a quarter of its filters
])
def test_honest_course_models_pass_and_their_parameters_are_counted_exactly(name, build, folder):
    model = build()
    # Saved with an AMSGrad optimizer's three slots per weight: the largest honest weights file.
    model.compile(keras.optimizers.Adam(amsgrad=True), "sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    path = folder / f"{name}.keras"
    model.save(path)
    with zipfile.ZipFile(path) as zf, h5py.File(zf.open(safety.WEIGHTS_FILE)) as f:
        assert "optimizer" in f  # the slots are in the file, so the budget is tested with them
    configuration = safety.read_configuration(path)
    safety.check_sizes(path, configuration)
    variables = safety.configured_variables(configuration)
    assert sum(math.prod(shape) for shape, _ in variables) == model.count_params()
    assert sorted(shape for shape, _ in variables) == sorted(tuple(v.shape) for v in model.variables)


def parameters(model):
    """Return the parameter count the safety checks find in a model's saved configuration."""
    configuration = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    return sum(math.prod(shape) for shape, _ in safety.configured_variables(configuration))


def test_the_parameter_cap_leaves_room_for_a_classic_unet():
    assert 30_000_000 < parameters(unet(64)) < safety.MAX_PARAMETERS
    assert 2_000_000 < parameters(solution_fcn8()) < safety.MAX_PARAMETERS / 10


def test_a_weights_array_declaring_gigabytes_is_refused_without_reading_it(plain, folder):
    bomb = weights_bomb(plain, folder / "weights-bomb.keras", int(3.8 * GIB))
    assert bomb.stat().st_size < 64 << 10
    message, seconds = refused(bomb)
    assert "has a weights array layers/conv2d/vars/0 of shape (1, 1, 1024, 996147) (3.8 GiB)" in message
    assert "the largest holds 11" in message and "the limit is 65,536 values" in message
    assert "nothing from the file was loaded" in message and seconds < 5


def test_a_layer_with_billions_of_weights_is_refused_without_building_them(plain, folder):
    bomb = config_bomb(plain, folder / "config-bomb.keras", filters=1 << 36)
    message, seconds = refused(bomb)
    assert f"describes a model of {2 * (1 << 36):,} parameters" in message
    assert "largest weight has shape (1, 1, 1, 68719476736)" in message
    assert f"the limit is {safety.MAX_PARAMETERS:,}" in message and seconds < 5


def test_the_variables_counted_without_building_them_stay_unbuilt(plain, folder):
    from keras.src.backend.common import global_state

    refused(config_bomb(plain, folder / "config-bomb-2.keras", filters=1 << 36))
    # A variable left deferred in this thread would be created by the next Keras call that
    # leaves a StatelessScope (model.predict does): all 256 GiB of it.
    assert not global_state.get_global_attribute("uninitialized_variables")


def test_a_zip_entry_declaring_gigabytes_is_refused_without_decoding_it(plain, folder):
    bomb = zip_bomb(plain, folder / "zip-bomb.keras", mib=3900)
    assert bomb.stat().st_size < 5 << 20
    message, seconds = refused(bomb)
    assert "has a model.weights.h5 of 3.81 GiB uncompressed (3.86 MiB in the file)" in message
    assert "the limit is 1 GiB for model.weights.h5" in message and seconds < 2


def test_a_zip_of_many_entries_is_refused(plain, folder):
    bomb = many_entries(plain, folder / "many.keras", safety.MAX_ZIP_ENTRIES)
    message, _ = refused(bomb)
    assert f"holds {safety.MAX_ZIP_ENTRIES + 3} files; the limit is 100" in message
    ok = many_entries(plain, folder / "some-assets.keras", 5)
    safety.check_sizes(ok, safety.read_configuration(ok))


def _edit_weights(source, target, edit):
    import io

    with zipfile.ZipFile(source) as zf:
        entries = {name: zf.read(name) for name in zf.namelist()}
    buffer = io.BytesIO(entries[safety.WEIGHTS_FILE])
    with h5py.File(buffer, "r+") as f:
        edit(f)
    entries[safety.WEIGHTS_FILE] = buffer.getvalue()
    with zipfile.ZipFile(target, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return target


def test_weights_arrays_adding_up_to_far_more_than_the_model_are_refused(plain, folder):
    # Each extra array is within the per-array floor; together they are 20 MiB for a
    # configuration of 22 parameters.
    def add(f):
        for i in range(40):
            f.create_dataset(f"extra/{i}", shape=(65536,), dtype="f8")  # unwritten: no bytes
    message, _ = refused(_edit_weights(plain, folder / "many-arrays.keras", add))
    assert "has weights arrays of 20 MiB in all, for a configuration whose variables hold 88 B" in message
    assert "4 x that" in message


@pytest.mark.parametrize("edit, found", [
    (lambda f: f.__setitem__("layers/conv2d/vars/2", h5py.ExternalLink("/etc/hostname", "/")),
     "a link (ExternalLink) at layers/conv2d/vars/2"),
    (lambda f: f.__setitem__("layers/conv2d/vars/2", h5py.SoftLink("/layers/conv2d/vars/0")),
     "a link (SoftLink) at layers/conv2d/vars/2"),
    (lambda f: f.create_dataset("notes", data=["text"], dtype=h5py.string_dtype()),
     "an array notes of type object, not numbers"),
])
def test_weights_files_with_links_or_non_numbers_are_refused(plain, folder, edit, found):
    message, _ = refused(_edit_weights(plain, folder / "linked.keras", edit))
    assert f"weights file holds {found}; Keras never writes that" in message


def test_a_model_without_a_weights_file_is_refused(plain, folder):
    path = folder / "no-weights.keras"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as out:
        out.writestr("config.json", src.read("config.json"))
        out.writestr("model.weights.npz", b"")
    with pytest.raises(InvalidSubmission, match="holds no model.weights.h5"):
        safety.read_configuration(path)


def test_a_nested_model_loads_without_its_compile_settings(folder):
    from grader import scoring

    inputs = keras.Input((64, 84, 1))
    inner = keras.Sequential([keras.Input((64, 84, 1)), layers.Conv2D(11, 1, activation="softmax")])
    inner.compile("sgd", "sparse_categorical_crossentropy", metrics=[keras.metrics.MeanIoU(11)])
    honest = folder / "nested.keras"
    keras.Model(inputs, inner(inputs)).save(honest)
    # Keras compiles a nested model as it loads it, creating MeanIoU's num_classes^2 totals:
    # 4 TiB here, and AUC or several metrics multiply it. The grader loads a copy without
    # any compile settings, so nothing of that is created.
    bomb = folder / "nested-metric.keras"
    with zipfile.ZipFile(honest) as src, zipfile.ZipFile(bomb, "w") as out:
        for name in src.namelist():
            data = src.read(name)
            if name == "config.json":
                assert data.count(b'"num_classes": 11') == 1
                data = data.replace(b'"num_classes": 11', b'"num_classes": 1048576')
            out.writestr(name, data)
    configuration = safety.read_configuration(bomb)
    safety.check_sizes(bomb, configuration)
    copy = safety.write_without_compile_configs(bomb, configuration, folder / "stripped.keras")
    with zipfile.ZipFile(copy) as zf, zipfile.ZipFile(bomb) as original:
        assert b"compile_config\": null" in zf.read("config.json") and b"MeanIoU" not in zf.read("config.json")
        assert zf.read(safety.WEIGHTS_FILE) == original.read(safety.WEIGHTS_FILE)
    model = scoring.load_submission(bomb)  # would fail allocating 4 TiB if it compiled
    assert not model.layers[-1].compiled


def test_layers_run_on_stored_constants_and_large_constants_are_refused():
    def node(*args):
        return {"args": list(args), "kwargs": {}}

    constant = {"class_name": "__numpy__", "config": {"value": [[[[1.0]]]], "dtype": "float32"}}
    tensor = {"class_name": "__keras_tensor__", "config": {"shape": [None, 64, 84, 1]}}
    layer = {"class_name": "ZeroPadding2D", "module": "keras.layers", "name": "pad",
             "config": {"padding": 20000}, "inbound_nodes": [node(constant)]}
    problems = set()
    safety.scan_config(layer, problems)
    assert problems == {"a layer (pad) applied to stored constants instead of the model's input"}
    problems = set()
    safety.scan_config({**layer, "inbound_nodes": [node(tensor, constant)]}, problems)
    assert problems == set()  # a constant operand beside the input is symbolic: nothing runs
    # An image-sized constant (CoordConv's coordinates, say) is fine; millions of values are not.
    image = {"class_name": "__numpy__", "config": {"value": [[[0.0]] * 84] * 64, "dtype": "float32"}}
    problems = set()
    safety.scan_config({**layer, "inbound_nodes": [node(tensor, image)]}, problems)
    assert problems == set()
    big = {"class_name": "__numpy__", "config": {"value": [[0.0] * 200_000], "dtype": "float32"}}
    problems = set()
    safety.scan_config({**layer, "inbound_nodes": [node(tensor, big)]}, problems)
    assert problems == {"a stored constant of 200,000 values (at most 131,072; a model keeps its "
                        "numbers in its weights)"}


def test_chunked_or_compressed_weights_arrays_are_refused(plain, folder):
    # A chunk's compressed data can decode to gigabytes whatever the array's declared shape.
    def chunked(f):
        values = f["layers/conv2d/vars/0"][()]
        del f["layers/conv2d/vars/0"]
        f.create_dataset("layers/conv2d/vars/0", data=values, chunks=values.shape, compression="gzip")
    message, _ = refused(_edit_weights(plain, folder / "chunked.keras", chunked))
    assert "holds an array layers/conv2d/vars/0 stored in compressed or resizable chunks" in message


def test_honest_bfloat16_and_five_slot_optimizer_files_pass(folder):
    model = keras.Sequential([keras.Input((64, 84, 1)), layers.Conv2D(64, 3, padding="same"),
                              layers.Conv2D(11, 1, dtype="bfloat16")])
    model.compile(keras.optimizers.Adam(amsgrad=True, use_ema=True), "sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    path = folder / "bfloat16-amsgrad-ema.keras"
    model.save(path)
    safety.check_sizes(path, safety.read_configuration(path))


def test_weights_entries_larger_than_their_arrays_or_deflated_bombs_are_refused(plain, folder):
    with zipfile.ZipFile(plain) as zf:
        entries = {name: zf.read(name) for name in zf.namelist()}
    padded = folder / "padded.keras"
    with zipfile.ZipFile(padded, "w") as zf:  # stored, as Keras writes, with 8 MiB of zeros after the file
        for name, data in entries.items():
            zf.writestr(name, data + bytes(8 << 20) if name == safety.WEIGHTS_FILE else data)
    message, _ = refused(padded)
    assert "has a weights file of 8.01 MiB whose arrays hold 88 B" in message
    assert "their size plus an eighth and 1.04 MiB for the file's own bookkeeping of 10 groups" in message
    deflated = folder / "deflated.keras"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data + bytes(64 << 20) if name == safety.WEIGHTS_FILE else data)
    message, _ = refused(deflated)
    assert "that expands from" in message and "10 times its size in the file" in message


def test_a_config_entry_over_two_mib_is_refused(plain, folder):
    with zipfile.ZipFile(plain) as zf:
        entries = {name: zf.read(name) for name in zf.namelist()}
    entries["config.json"] = entries["config.json"] + b" " * (3 << 20)  # still valid JSON
    path = folder / "big-config.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    with pytest.raises(InvalidSubmission, match="has a config.json of 3 MiB uncompressed"):
        safety.read_configuration(path)


@pytest.mark.slow
def test_a_deep_model_of_small_layers_passes(folder):
    # HDF5 keeps about 3.7 KB of bookkeeping per layer: 300 small layers' file is mostly that.
    x = inputs = keras.Input((64, 84, 1))
    for _ in range(100):
        x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(x)))
    model = keras.Model(inputs, layers.Conv2D(11, 1, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(), "sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    path = folder / "deep.keras"
    model.save(path)
    safety.check_sizes(path, safety.read_configuration(path))
