"""Check a submitted .keras file before Keras loads it: no code in it, nothing too large in it.

The grader (``python -m grader``, taught in notebook 4) runs these checks on every
submission before ``keras.saving.load_model``. A ``.keras`` file is a zip of ``config.json`` (the
architecture), ``model.weights.h5`` (the weights) and ``metadata.json``. Two things in it can
hurt the machine that grades it:

- code: a ``Lambda`` layer, a serialized function, or a class from outside the Keras modules
  a plain model uses (``scan_config``);
- size: a file of a few kilobytes can declare gigabytes, which Keras allocates while loading
  it: a zip entry that decompresses to gigabytes, a weights array whose declared shape is
  enormous (HDF5 stores an unwritten array as nothing), or a layer with an absurd number of
  filters or units, whose weights Keras creates as it builds the model.

``read_configuration`` checks the zip and scans the configuration without importing Keras;
``check_sizes`` then counts the variables the configuration builds (Keras builds it without
allocating them) and compares the weights file's arrays with them. Each raises
``InvalidSubmission`` saying what was refused and the limit.
"""

import functools
import io
import json
import math
import threading
import zipfile

from helpers.grading import InvalidSubmission  # the lesson's rule names what is refused

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
# Keras writes three entries (metadata.json, config.json, model.weights.h5), plus one per
# asset of a preprocessing layer; a course model has none.
MAX_ZIP_ENTRIES = 100
# config.json, metadata.json or an asset: a course model's config.json is tens of kilobytes
# (a 31-million-parameter U-Net's about 60 KB), and Keras' deserializing takes far more
# memory than the text.
MAX_ENTRY_BYTES = 2 << 20
# Room for MAX_PARAMETERS float32 weights and an optimizer's state beside them (Adam keeps
# two slots per weight, AMSGrad three): 4 x 200 MB. The solution's FCN-8 file is 29 MB.
MAX_WEIGHTS_FILE_BYTES = 1 << 30
# The assignment's FCN-8 has 2.4 million parameters, a classic U-Net (64 to 1024 filters)
# 31 million: a cap in the tens of millions leaves room for any honest architecture.
MAX_PARAMETERS = 50_000_000
# Groups, arrays and links in the weights file: the FCN-8 saved after training has 210.
MAX_WEIGHTS_FILE_OBJECTS = 10_000
# Keras stores the weights entry uncompressed; a zip tool may deflate it, which shrinks float
# weights by a little, not by 10x: a larger ratio is a decompression bomb.
MAX_COMPRESSION_RATIO = 10
# A value stored in the configuration (a constant operand of `x + c`, or a CoordConv-style
# map the size of a few images): it becomes an array as Keras reads the configuration.
MAX_CONSTANT_VALUES = 1 << 17
# HDF5's own bookkeeping: about 555 bytes per group or array, 3.7 KB per layer (measured).
WEIGHTS_FILE_BYTES_PER_OBJECT = 4096
# A saved optimizer keeps up to three slots per weight (AMSGrad), so an honest weights file
# declares at most about 4 x what the configuration builds; the floor covers small states
# (an optimizer's step count, a metric's totals) in a tiny model.
MAX_WEIGHTS_FACTOR = 4
SMALL_ARRAY_VALUES = 1 << 16

# The modules a plain model's config.json names, found by saving typical course models
# (Sequential, functional, nested; the course's layers with initializers, regularizers,
# constraints, dtype policies; compiled with optimizers, schedules, losses and metrics).
# Any other module, e.g. keras.config, keras.utils, keras.saving or keras.ops, can name a
# function that Keras' own block list has missed before (CVE-2025-1550, -8747, -9906).
_CONFIG_MODULES = frozenset({
    "keras.layers", "keras.initializers", "keras.regularizers", "keras.constraints",
    "keras.optimizers", "keras.optimizers.schedules", "keras.losses", "keras.metrics",
    "keras.dtype_policies", "keras.src.models.functional",
    # Tensor operations in a functional model (`up + skip`, `x[..., :8]`, `keras.ops.relu(x)`)
    # are saved as operation classes from these modules. Their configurations hold only
    # plain arguments; a function passed to one would appear as a "function", scanned below.
    "keras.src.ops.numpy", "keras.src.ops.nn", "keras.src.ops.math", "keras.src.ops.image",
    "keras.src.ops.core", "keras.src.ops.linalg"})
_TOP_LEVEL_CLASSES = frozenset({"Functional", "Sequential", "Model", "DTypePolicy",
                                "FloatDTypePolicy"})  # written with module "keras"
# Keras' encodings of values (tensors, arrays, slices): they name no class to import.
_VALUE_MARKERS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__",
                            "__ellipsis__", "__slice__"})


def size_text(n_bytes):
    """Return a byte count as people read it: 512 B, 16 MiB, 3.8 GiB."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n_bytes >= 1 << shift:
            return f"{n_bytes / (1 << shift):.3g} {unit}"
    return f"{n_bytes} B"


def _itemsize(dtype_name):
    """Return the bytes per value of a Keras dtype name (float32: 4, bfloat16: 2, bool: 1)."""
    bits = "".join(c for c in dtype_name if c.isdigit())
    return max(1, int(bits) // 8) if bits else 1


def _too_large(name, what, limit_text):
    return InvalidSubmission(f"{name} {what}; the limit is {limit_text}. That is not a course "
                             "model; nothing from the file was loaded.")


@functools.cache
def _keras_function_names():
    """Return the names of Keras' own activation, loss and metric functions."""
    import inspect

    import keras

    names = set()
    for family in (keras.activations, keras.losses, keras.metrics):
        names.update(name for name in dir(family)
                     if not name.startswith("_") and inspect.isfunction(getattr(family, name)))
    # These look up or build other objects by name: not a loss, metric or activation.
    return frozenset(names - {"get", "serialize", "deserialize"})


def _plain_keras_class(module, class_name):
    # A dotted or lower-case name would let Keras resolve a function (keras.utils.get_file)
    # through an allowed module.
    return (isinstance(class_name, str) and class_name.isidentifier() and class_name[0].isupper()
            and (module in _CONFIG_MODULES
                 or (module == "keras" and class_name in _TOP_LEVEL_CLASSES)))


def _count_values(node):
    """Return how many numbers a nested list holds."""
    if isinstance(node, list):
        return sum(_count_values(value) for value in node)
    return 1


def _holds_tensor(node):
    """Whether a functional node's arguments include a symbolic input (a ``__keras_tensor__``)."""
    if isinstance(node, dict):
        return node.get("class_name") == "__keras_tensor__" or any(map(_holds_tensor, node.values()))
    if isinstance(node, list):
        return any(map(_holds_tensor, node))
    return False


def scan_config(node, problems, top=True):
    """Collect serialized code, foreign functions and classes, and eager work anywhere in a model configuration."""
    if isinstance(node, dict):
        class_name = node.get("class_name")
        module = node.get("module")
        if class_name in ("__numpy__", "__tensor__"):
            # Keras turns these into arrays as it reads the configuration.
            count = _count_values((node.get("config") or {}).get("value") if isinstance(
                node.get("config"), dict) else None)
            if count > MAX_CONSTANT_VALUES:
                problems.add(f"a stored constant of {count:,} values (at most "
                             f"{MAX_CONSTANT_VALUES:,}; a model keeps its numbers in its weights)")
        inbound = node.get("inbound_nodes")
        if isinstance(inbound, list) and any(not _holds_tensor(call) for call in inbound):
            # A layer called on stored constants only runs, eagerly, while Keras reads the
            # configuration, before any check of its size can see what it allocates.
            problems.add(f"a layer ({node.get('name', class_name)}) applied to stored constants "
                         "instead of the model's input")
        if class_name in ("__lambda__", "__python_function__"):
            problems.add("serialized Python code (a lambda or function)")
        elif class_name in ("Lambda", "TFSMLayer"):
            problems.add(f"a {class_name} layer")
        elif class_name == "function":
            name = node.get("config")
            # Keras writes its own functions (a loss or metric given to compile) by name under
            # "builtins"; under any other module the name can reach any function there.
            if not (module == "builtins" and isinstance(name, str)
                    and name in _keras_function_names()):
                problems.add(f"the function {name} from module {module}")
        elif ("class_name" in node and class_name not in _VALUE_MARKERS
              and not _plain_keras_class(module, class_name)):
            problems.add(f"the class {class_name} from module {module}")
        registered = node.get("registered_name")
        if isinstance(registered, str) and registered != class_name:
            problems.add(f"the registered custom object {registered}")
        for key, value in node.items():
            # Loaded with compile=False, Keras skips the model's own compile_config, but it
            # still compiles nested models from theirs: scan those.
            if not (top and key == "compile_config"):
                scan_config(value, problems, top=False)
    elif isinstance(node, list):
        for value in node:
            scan_config(value, problems, top=False)


def _check_entries(name, zf):
    """Refuse an archive with too many entries, declared sizes too large, or a bomb's compression."""
    entries = zf.infolist()
    if len(entries) > MAX_ZIP_ENTRIES:
        raise _too_large(name, f"holds {len(entries):,} files", f"{MAX_ZIP_ENTRIES} (a .keras "
                         "file Keras writes holds 3)")
    for info in entries:
        # zipfile stops reading an entry at its declared size, so these bound what is decoded.
        weights = info.filename == WEIGHTS_FILE
        limit = MAX_WEIGHTS_FILE_BYTES if weights else MAX_ENTRY_BYTES
        if info.file_size > limit:
            raise _too_large(name, f"has a {info.filename} of {size_text(info.file_size)} "
                             f"uncompressed ({size_text(info.compress_size)} in the file)",
                             f"{size_text(limit)} for "
                             + (WEIGHTS_FILE if weights else f"any file but {WEIGHTS_FILE}"))
        if info.file_size > MAX_COMPRESSION_RATIO * info.compress_size + (1 << 20):
            raise _too_large(name, f"has a {info.filename} that expands from "
                             f"{size_text(info.compress_size)} to {size_text(info.file_size)}",
                             f"{MAX_COMPRESSION_RATIO} times its size in the file (Keras does not "
                             "compress it)")


def read_configuration(path):
    """Return a .keras file's configuration after checking its zip entries and scanning it for code.

    Raises InvalidSubmission for an archive that is unreadable, too large or carries code.
    Imports neither Keras nor TensorFlow.
    """
    name = getattr(path, "name", str(path))
    try:
        with zipfile.ZipFile(path) as zf:
            _check_entries(name, zf)
            configuration = json.loads(zf.read(CONFIG_FILE))
            has_weights = WEIGHTS_FILE in zf.namelist()
        if not isinstance(configuration, dict):
            raise ValueError("config.json does not describe a model")
        problems = set()
        scan_config(configuration, problems)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, RecursionError) as e:
        if isinstance(e, InvalidSubmission):
            raise
        raise InvalidSubmission(f"{name} is not a readable .keras archive (corrupt or "
                                f"truncated?): {type(e).__name__}: {str(e)[:200]}") from e
    if problems:
        raise InvalidSubmission(
            f"{name} contains {', '.join(sorted(problems))}. Submissions may use built-in "
            "Keras layers only; nothing from the file was run. Replace the custom part with "
            "built-in layers and save again.")
    if not has_weights:
        # Keras would read weights from a model.weights.npz instead: arrays these checks do
        # not cover, and never what model.save writes.
        raise InvalidSubmission(f"{name} holds no {WEIGHTS_FILE}; save the model with "
                                "model.save('model.keras')")
    return configuration


def without_compile_configs(node):
    """Return a copy of a configuration without any compile settings, its nested models' included.

    Keras compiles a nested model from its settings as it loads it, creating its metrics'
    state (sized by their arguments) and optimizer; grading needs none of that.
    """
    if isinstance(node, dict):
        return {key: None if key == "compile_config" else without_compile_configs(value)
                for key, value in node.items()}
    if isinstance(node, list):
        return [without_compile_configs(value) for value in node]
    return node


def write_without_compile_configs(path, configuration, target):
    """Copy a checked .keras file to ``target`` with ``configuration`` stripped of compile settings."""
    import shutil

    with zipfile.ZipFile(path) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            if info.filename == CONFIG_FILE:
                out.writestr(CONFIG_FILE, json.dumps(without_compile_configs(configuration)))
            elif not info.is_dir():
                with src.open(info) as data, out.open(info.filename, "w", force_zip64=True) as copy:
                    shutil.copyfileobj(data, copy, 1 << 20)
    return target


def without_weights(build):
    """Return ``build()``, run where Keras records the variables it creates but allocates none.

    In a StatelessScope Keras records a new variable's shape and initializer and defers
    creating its value; ``initialize_variables=False`` keeps it from creating them on exit.
    Deferred variables wait in a per-thread list for the next scope to initialize them:
    building in a thread of its own drops them with the thread, so no later Keras call in this
    process allocates them. Symbolic shapes and the layer graph are all there. (The course's
    architecture figures are drawn from models built this way too.)
    """
    import keras

    result = {}

    def run():
        try:
            with keras.StatelessScope(initialize_variables=False):
                result["value"] = build()
        except BaseException as e:  # re-raised in the caller's thread
            result["error"] = e

    worker = threading.Thread(target=run, name="without-weights")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def configured_variables(configuration):
    """Return (shape, dtype) of every variable a scanned model configuration builds, allocating none.

    Call it only on a configuration ``scan_config`` passed, with a Keras whose safe_mode holds.
    """
    import keras

    def build():
        # Without compile settings: load_model skips the model's own when compile=False, as
        # the grader loads, and a nested model's optimizer creates its learning rate from a
        # value, which a StatelessScope refuses. What a nested compile creates is checked
        # apart (check_sizes). The copy also keeps the caller's configuration: Keras changes
        # what it deserializes.
        model = keras.saving.deserialize_keras_object(without_compile_configs(configuration),
                                                      safe_mode=True)
        return [(tuple(int(d) for d in v.shape), str(v.dtype))
                for v in getattr(model, "variables", [])]

    return without_weights(build)


def _weights_arrays(name, zf):
    """Return (path, shape, dtype) of every array in the weights file, reading no array data."""
    import h5py

    info = zf.getinfo(WEIGHTS_FILE)
    # h5py reads only the file's metadata here. A stored entry (as Keras writes) is read in
    # place; seeking in a compressed one restarts its decompression, so that is read whole
    # (at most MAX_WEIGHTS_FILE_BYTES, checked above).
    raw = (zf.open(info) if info.compress_type == zipfile.ZIP_STORED
           else io.BytesIO(zf.read(info)))
    arrays, problems, seen = [], [], [0]  # seen: objects walked
    with raw, h5py.File(raw, "r") as f:
        def visit(path, link):
            seen[0] += 1
            if seen[0] > MAX_WEIGHTS_FILE_OBJECTS:
                problems.append(f"more than {MAX_WEIGHTS_FILE_OBJECTS:,} objects")
                return True  # stops the walk
            if not isinstance(link, h5py.HardLink):
                # A link can reach another file on the grading machine; Keras never writes one.
                problems.append(f"a link ({type(link).__name__}) at {path}")
                return None
            node = f[path]
            if isinstance(node, h5py.Dataset):
                bfloat16 = node.dtype.kind == "V" and node.dtype.itemsize == 2 and \
                    node.attrs.get("dtype") in ("bfloat16", b"bfloat16")  # as Keras saves it
                if node.is_virtual or node.external:
                    problems.append(f"an array {path} whose data is in another file")
                elif node.chunks is not None or node.id.get_create_plist().get_nfilters() or \
                        node.maxshape != node.shape:
                    # Keras writes plain contiguous arrays. A chunk's compressed data can
                    # decode to far more than the array's declared shape says.
                    problems.append(f"an array {path} stored in compressed or resizable chunks")
                elif node.dtype.kind not in "biuf" and not bfloat16:
                    problems.append(f"an array {path} of type {node.dtype}, not numbers")
                else:
                    arrays.append((path, tuple(node.shape), node.dtype))
            return None

        f.visititems_links(visit)
    if problems:
        raise InvalidSubmission(f"{name}'s weights file holds {problems[0]}; Keras never writes "
                                "that. Nothing from the file was loaded.")
    return arrays, seen[0]


def check_sizes(path, configuration):
    """Refuse a .keras file whose configuration or weights file declares more than a course model can need.

    Compares the parameter count the configuration builds with MAX_PARAMETERS, and each array
    of the weights file (its declared shape, read without its data) with the variables the
    configuration builds. Raises InvalidSubmission saying what was too large and the limit.
    """
    name = getattr(path, "name", str(path))
    try:
        variables = configured_variables(configuration)
    except Exception as e:
        reason = " ".join(str(e).split())[:400] or type(e).__name__
        raise InvalidSubmission(f"{name} cannot be loaded safely: {reason}") from e
    counts = [math.prod(shape) for shape, _ in variables]
    total = sum(counts)
    built_bytes = sum(c * _itemsize(dtype) for c, (_, dtype) in zip(counts, variables))
    if total > MAX_PARAMETERS:
        biggest = max(range(len(counts)), key=counts.__getitem__)
        raise _too_large(name, f"describes a model of {total:,} parameters (its largest "
                         f"weight has shape {variables[biggest][0]})",
                         f"{MAX_PARAMETERS:,} (the assignment's FCN-8 has 2.4 million)")
    largest = max([SMALL_ARRAY_VALUES, *counts])  # the floor: small states of a tiny model
    try:
        with zipfile.ZipFile(path) as zf:
            arrays, objects = _weights_arrays(name, zf)
    except InvalidSubmission:
        raise
    except Exception as e:  # h5py raises OSError, ValueError, KeyError, ... on a broken file
        raise InvalidSubmission(f"{name}'s weights file is not readable (corrupt or truncated?): "
                                f"{type(e).__name__}: {str(e)[:200]}") from e
    for array_path, shape, dtype in arrays:
        values = math.prod(shape)
        if values > largest:
            raise _too_large(name, f"has a weights array {array_path} of shape {shape} "
                             f"({size_text(values * dtype.itemsize)}), more values than any "
                             "variable its configuration builds (the largest holds "
                             f"{max(counts, default=0):,})", f"{largest:,} values")
    # The optimizer's state is never read (the grader loads with compile=False), so it counts
    # against the per-array cap above but not here: AMSGrad with EMA keeps five arrays per weight.
    declared = sum(math.prod(shape) * dtype.itemsize for path, shape, dtype in arrays
                   if not path.startswith("optimizer/"))
    every = sum(math.prod(shape) * dtype.itemsize for _, shape, dtype in arrays)
    with zipfile.ZipFile(path) as zf:
        file_size = zf.getinfo(WEIGHTS_FILE).file_size
    bookkeeping = (1 << 20) + objects * WEIGHTS_FILE_BYTES_PER_OBJECT
    if file_size > every + every // 8 + bookkeeping:
        raise _too_large(name, f"has a weights file of {size_text(file_size)} whose arrays hold "
                         f"{size_text(every)}", f"their size plus an eighth and {size_text(bookkeeping)} "
                         f"for the file's own bookkeeping of {objects:,} groups and arrays")
    budget = MAX_WEIGHTS_FACTOR * (built_bytes + SMALL_ARRAY_VALUES * 8)
    if declared > budget:
        raise _too_large(name, f"has weights arrays of {size_text(declared)} in all, for a "
                         f"configuration whose variables hold {size_text(built_bytes)}",
                         f"{size_text(budget)}, {MAX_WEIGHTS_FACTOR} x that (room for an "
                         "optimizer's state)")
