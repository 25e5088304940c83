"""Set up and check the machine a notebook runs on: Colab installs, versions, accelerator, noise.

Every notebook (1-4) uses it: the set-up cell calls ``colab_setup`` on Colab, and the cell
after it calls ``check``, which prints the versions, the accelerator, the mode and the data
folder, and warns in plain words about what will hurt (a version below the course's floor,
full mode on a CPU). The decisions are pure functions of a ``Facts`` record, so the tests
pass the facts in instead of depending on the machine they run on.

Unlike the other modules it imports TensorFlow, Keras and what uses them inside its functions,
under a guard: it runs first, to hide start-up noise before TensorFlow loads, and to report a
missing or broken install instead of failing on it.
"""

import contextlib
import importlib
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from helpers import config

# The oldest versions the course supports; pyproject.toml declares the same floors (a test keeps
# them in step). Keras 3.11 is helpers.grading.MIN_KERAS: older safe_mode can be bypassed.
FLOORS = {"Python": (3, 10), "TensorFlow": (2, 16), "Keras": (3, 11), "tensorflow-datasets": (4, 9),
          "tensorflow-hub": (0, 16)}
DISTRIBUTIONS = {"TensorFlow": "tensorflow", "Keras": "keras",
                 "tensorflow-datasets": "tensorflow-datasets", "tensorflow-hub": "tensorflow-hub"}
# What Colab may lack, as pip installs it; Colab's TensorFlow is never replaced.
# Packages without a floor, each its own distribution: tfds' undeclared import, and notebook 3's
# COCO mask AP and connected regions.
UNVERSIONED = ("importlib_resources", "pycocotools", "scipy", "mlxtend")
COLAB_NEEDS = {"Keras": "keras>=3.11", "tensorflow-datasets": "tensorflow-datasets>=4.9",
               "tensorflow-hub": "tensorflow-hub>=0.16", **{name: name for name in UNVERSIONED}}

# What full mode on a CPU means for each notebook, in round figures a learner can plan with; the
# measured times (2 CPU cores) are in benchmarks/README.md, which the message points to.
FULL_MODE_ON_CPU = {
    "01": "up to 50 epochs of minutes each, then 30 more for the FCN family: about half a day",
    "02": "an 800 MB download, then a U-Net trained twice (cross-entropy and Dice): about half a day",
    "03": "tens of seconds per image for the real Mask R-CNN: several minutes for the lab",
    "04": "up to 30 epochs of a few minutes each: about two hours",
}
LONG_ON_CPU = {"01", "02", "04"}  # notebooks whose full run on a CPU is worth a GPU

# Messages learners cannot act on: TensorFlow's C++ start-up logs (matched line by line) and
# Keras' warning on every fit of a tf.data.Dataset (a dataset is shuffled in its pipeline).
# Without an NVIDIA device, TensorFlow's CUDA build also says it found no GPU: noise there, but
# the one explanation on a machine whose GPU it cannot use, so those lines are kept there.
NO_GPU_NOISE = r"failed call to cuInit|Could not find cuda drivers on your machine"
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT")
# Printed (in red, under the training cell) during some models' first fit: TensorFlow's graph
# optimiser skipped one rewrite of the graph, which still runs correctly. Matched by its message,
# so that every other line from the optimiser still shows.
RUNTIME_NOISE = r"meta_optimizer\.cc:\d+\] remapper failed: INVALID_ARGUMENT: Mutation::Apply error: "
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu", "tf-nightly")
_FILTER = ("import re, sys\n"
           "noise = re.compile(sys.argv[1])\n"
           "for line in sys.stdin.buffer:\n"
           "    if line.strip() and not noise.search(line.decode(errors='replace')):\n"
           "        sys.stdout.buffer.write(line)\n"
           "        sys.stdout.buffer.flush()\n")
KERAS_SHUFFLE_WARNING = (r"`shuffle=True` was passed, but will be ignored since the data `x` was "
                         r"provided as a tf\.data\.Dataset")


# What each notebook imports besides TensorFlow and Keras, each with names whose presence shows
# that the import completed: tensorflow-datasets catches (and only logs) an error in its own
# imports, and is then a module without its API ("has no attribute 'builder'", cells later).
LESSON_IMPORTS = {
    "01": {"PIL.Image": ("open",), "matplotlib.pyplot": ("subplots",)},
    "02": {"tensorflow_datasets": ("builder", "load"), "matplotlib.pyplot": ("subplots",)},
    "03": {"tensorflow_hub": ("load",), "pycocotools.mask": ("encode",),
           "pycocotools.cocoeval": ("COCOeval",), "scipy.ndimage": ("label",),
           "matplotlib.pyplot": ("subplots",)},
    "04": {"matplotlib.pyplot": ("subplots",)},
}
# Where a package hides the error of its own imports: importing this module raises it again.
HIDDEN_IMPORT_ERRORS = {"tensorflow_datasets": "tensorflow_datasets.public_api"}
PROTOBUF_MISMATCH = re.compile(r"when loading (?P<proto>\S+?\.proto): gencode (?P<gencode>\d+(?:\.\d+)*) "
                               r"runtime (?P<runtime>\d+(?:\.\d+)*)")


@dataclass
class Facts:
    """What the check looks at: versions (None: not installed), accelerator, mode, folder."""

    versions: dict
    accelerator: str = "CPU"  # "CPU", or a description such as "GPU: Tesla T4" or "TPU"
    quick: bool = True
    data_dir: str = ""
    notebook: str = ""  # "01".."04"
    cpu_count: int = 0
    cpu_model: str = ""  # "Intel(R) Xeon(R) Processor", where the system names it
    nvidia_device: bool = False  # an NVIDIA GPU is attached, whether TensorFlow can use it or not
    installed: dict = None  # versions pip has installed, where they differ from those running
    import_errors: dict = None  # module -> why a lesson cannot import it, and the fix


def parse_version(text):
    """Return the leading (major, minor) of a version string, or None."""
    found = re.match(r"\s*(\d+)\.(\d+)", str(text or ""))
    return tuple(int(v) for v in found.groups()) if found else None


def tensorflow_distribution():
    """Return (distribution name, version) of the installed TensorFlow, whichever build it is."""
    for name in TENSORFLOW_DISTRIBUTIONS:
        version = installed_version(name)
        if version:
            return name, version
    return "tensorflow", None


def installed_version(distribution):
    """Return an installed distribution's version string, or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def distribution_of(module):
    """Return the name of the installed distribution that provides ``module``, or None."""
    top = module.split(".")[0]
    try:
        names = metadata.packages_distributions().get(top) or []
    except Exception:  # a broken metadata entry must not hide the error being explained
        names = []
    return names[0] if names else None


def explain_import_error(module, error):
    """Return plain words on why ``module`` cannot be imported: the real error, and its fix."""
    dist = distribution_of(module) or module.split(".")[0]
    version = installed_version(dist)
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    said = f"{dist} {version or ''}".strip() + (f" ({module})" if module != dist else "")
    cause = f"{said} cannot be imported: {type(error).__name__}: {first}"
    mismatch = PROTOBUF_MISMATCH.search(str(error))
    if mismatch:
        owner = distribution_of(mismatch["proto"].replace("/", ".")) or mismatch["proto"].split("/")[0]
        owner_version = installed_version(owner)
        tf_name, tf_version = tensorflow_distribution()
        needs = [r for r in (metadata.requires(tf_name) or []) if re.match(r"protobuf\b", r)] \
            if tf_version else []
        pinned = f" (TensorFlow {tf_version} requires {needs[0].split(';')[0]})" if needs else ""
        if owner == tf_name:  # TensorFlow's own code is newer than protobuf: upgrade protobuf
            fix = f"pip install 'protobuf>={mismatch['gencode']}'"
        else:  # keep the protobuf TensorFlow wants; take a release of the package made for it
            fix = (f"pip install '{owner}<{owner_version}'" if owner_version else
                   f"install an older {owner}") + " (a release made for that protobuf)"
        return (f"{cause}\n  The cause: {owner} {owner_version or ''} was generated for protobuf "
                f"{mismatch['gencode']} or newer, but protobuf {mismatch['runtime']} is installed"
                f"{pinned}.\n  Fix: {fix}, then restart the session (on Colab: Runtime > Restart "
                "session).")
    if isinstance(error, ModuleNotFoundError) and error.name:
        missing = error.name.split(".")[0]
        if missing == module.split(".")[0]:
            return f"{module} is not installed.\n  Fix: pip install {dist}, or pip install -r requirements.txt."
        return (f"{cause}\n  The cause: it needs {missing}, which is not installed.\n  Fix: pip install "
                f"{distribution_of(missing) or missing}, then restart the session.")
    return (f"{cause}\n  Fix: reinstall it (pip install --force-reinstall --no-deps {dist}), or "
            "install the course's versions (pip install -r requirements.txt); then restart the session.")


def import_problem(module, names=()):
    """Import ``module`` as a lesson will; return None if it works, else the real error and its fix.

    ``names`` must be attributes of the imported module: a package that swallowed an error of
    its own imports lacks them, and the module of ``HIDDEN_IMPORT_ERRORS`` raises the error again.
    """
    try:
        imported = importlib.import_module(module)
        missing = [name for name in names if not hasattr(imported, name)]
        if not missing:
            return None
        if module in HIDDEN_IMPORT_ERRORS:
            importlib.import_module(HIDDEN_IMPORT_ERRORS[module])
        raise ImportError(f"the module has no {', '.join(missing)}: its installation is incomplete")
    except Exception as error:  # any error here is one the lesson would meet later
        return explain_import_error(module, error)


def missing_on_colab(versions):
    """Return the pip requirements the course needs that ``versions`` lacks or has too old."""
    needs = []
    for name, requirement in COLAB_NEEDS.items():
        found = parse_version(versions.get(name))
        floor = FLOORS.get(name)
        if versions.get(name) is None or (floor and found and found < floor):
            needs.append(requirement)
    return needs


def colab_setup(checkout):
    """Install the course's package and whatever Colab lacks, keeping Colab's TensorFlow."""
    run = [sys.executable, "-m", "pip", "install", "-q"]
    # The package alone, so that commands such as `python -m helpers.grading` work in a terminal.
    subprocess.run([*run, "--no-deps", "-e", str(checkout)], check=True)
    versions = {name: installed_version(dist) for name, dist in
                {**DISTRIBUTIONS, **{name: name for name in UNVERSIONED}}.items()}
    tf_name, versions["TensorFlow"] = tensorflow_distribution()
    needs = missing_on_colab(versions)
    if not needs:
        print("Colab already has every package the course needs; nothing installed.")
        return needs
    keep = [f"{tf_name}=={versions['TensorFlow']}"] if versions["TensorFlow"] else []
    subprocess.run([*run, *needs, *keep], check=True)  # pinning TF: pip may not swap it
    names = [re.split(r"[<>=!~ ]", need)[0] for need in needs]
    print("Installed:", ", ".join(f"{name} {installed_version(name) or '?'}" for name in names),
          "(Colab's TensorFlow is unchanged)")
    if any(need.startswith("keras") for need in needs) and "keras" in sys.modules:
        print("Keras was already imported: restart the session (Runtime > Restart session).")
    return needs


def quiet():
    """Silence the start-up logs and warnings learners cannot act on; keep all others."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO lines
    warnings.filterwarnings("ignore", message=KERAS_SHUFFLE_WARNING)


def nvidia_device():
    """Whether an NVIDIA GPU is attached to this machine (TensorFlow may still fail to use it)."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def startup_noise(gpu_attached=None):
    """Return the pattern of start-up lines to drop; CUDA's "no GPU" lines only without a GPU."""
    gpu_attached = nvidia_device() if gpu_attached is None else gpu_attached
    return STARTUP_NOISE if gpu_attached else re.compile(f"{STARTUP_NOISE.pattern}|{NO_GPU_NOISE}")


def session_noise(gpu_attached=None):
    """Return the pattern of lines to drop for a whole session: start-up and runtime noise."""
    return re.compile(f"{startup_noise(gpu_attached).pattern}|{RUNTIME_NOISE}")


def _start_filter(noise, out):
    """Start the filter process: it copies its stdin to the file descriptor ``out``, less ``noise``."""
    # -I -S: no current folder, user site or site packages on its path (a re.py beside the
    # notebook must not replace the filter's).
    return subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, noise.pattern],
                            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def filtered_stderr(noise=None):
    """Pass on what C++ code writes to stderr, line by line as it comes, except ``noise``.

    A separate process does the filtering, so a line written just before a crash (TensorFlow
    aborting on an unsupported CPU, say) still reaches the process's stderr (in Jupyter, the
    kernel's log).
    """
    noise = startup_noise() if noise is None else noise
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        child = _start_filter(noise, saved)
    except OSError:
        os.close(saved)
        yield
        return
    os.dup2(child.stdin.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        child.stdin.close()  # the filter reads to the end, then exits
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a process started in the block still holds the pipe
            child.kill()
            child.wait()
        os.close(saved)


_session_filter = None


def filter_session_stderr(noise=None):
    """From now until the process ends, pass C++ stderr on through the filter, less ``noise``.

    ``check`` calls it, so that a notebook's kernel drops TensorFlow's start-up lines and the
    runtime messages of ``RUNTIME_NOISE`` for the rest of the session (they are written by C++
    code, so Python's warning filters cannot reach them). Safe to call again: one filter per
    process. Returns whether a filter is in place.
    """
    global _session_filter
    if _session_filter is not None and _session_filter.poll() is None:
        return True
    noise = session_noise() if noise is None else noise
    try:
        sys.stderr.flush()
        out = os.dup(2)
    except (OSError, ValueError):
        return False
    try:
        child = _start_filter(noise, out)
    except OSError:
        return False
    finally:
        os.close(out)  # the filter holds its own copy
    # The filter exits when the last writer closes the pipe: this process and its children.
    os.dup2(child.stdin.fileno(), 2)
    child.stdin.close()
    _session_filter = child
    return True


def gather(notebook=""):
    """Return the Facts of this machine (importing TensorFlow quietly)."""
    quiet()
    versions = {"Python": ".".join(map(str, sys.version_info[:3]))}
    versions.update({name: installed_version(dist) for name, dist in DISTRIBUTIONS.items()})
    versions["TensorFlow"] = tensorflow_distribution()[1]
    installed = dict(versions)
    gpus, names, import_errors = [], [], {}
    try:
        with filtered_stderr():
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            for gpu in gpus:
                try:
                    names.append(tf.config.experimental.get_device_details(gpu).get("device_name"))
                except Exception:  # details are best effort; the count is what matters
                    names.append(None)
            for module, needed in LESSON_IMPORTS.get(notebook, {}).items():
                problem = import_problem(module, needed)
                if problem:
                    import_errors[module] = problem
        # What runs, which after an upgrade in a running kernel is not what pip has installed.
        versions["TensorFlow"] = tf.__version__
    except Exception as error:
        if isinstance(error, ModuleNotFoundError) and error.name == "tensorflow":
            versions["TensorFlow"] = None  # the report says it is missing, and how to install it
        else:  # installed but broken: the report names the real error and its fix
            import_errors["tensorflow"] = explain_import_error("tensorflow", error)
    try:
        import keras

        versions["Keras"] = keras.__version__
    except ImportError:
        versions["Keras"] = None
    except Exception as error:  # Keras on a broken TensorFlow: that error is reported already
        if "tensorflow" not in import_errors:
            import_errors["keras"] = explain_import_error("keras", error)

    if versions["TensorFlow"] is None:
        accelerator = "unknown (TensorFlow is not installed)"
    elif "tensorflow" in import_errors:
        accelerator = "unknown (TensorFlow cannot be imported)"
    elif gpus:
        accelerator = f"GPU: {', '.join(n or g.name for n, g in zip(names, gpus))}"
    else:
        from helpers import distribute

        tpu = distribute._tpu_attached() or os.environ.get("COLAB_TPU_ADDR")
        accelerator = "TPU" if tpu else "CPU"
    stale = {name: installed[name] for name in ("TensorFlow", "Keras")
             if versions[name] and installed[name] and installed[name] != versions[name]}
    return Facts(versions=versions, accelerator=accelerator, quick=config.quick_mode(),
                 data_dir=str(config.data_dir()), notebook=notebook, cpu_count=os.cpu_count() or 0,
                 cpu_model=cpu_model(), nvidia_device=nvidia_device(), installed=stale,
                 import_errors=import_errors)


def cpu_model(cpuinfo="/proc/cpuinfo"):
    """Return the CPU's model name ("Intel(R) Xeon(R) Processor"), or "" where none is given.

    Quick-mode figures differ between CPUs from the third decimal on (TensorFlow runs oneDNN's
    kernels on recent Intel CPUs and its own elsewhere): the notebooks say which CPU theirs came
    from, and the environment check names the learner's.
    """
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model Name") and value.strip():
                return " ".join(value.split())
    except OSError:
        pass  # not Linux: macOS and Windows name it elsewhere, and the check goes without
    return ""


def problems(facts):
    """Return plain-words warnings about what will hurt on the machine ``facts`` describes."""
    found = list((facts.import_errors or {}).values())  # first: the lesson stops on these
    for name, floor in FLOORS.items():
        text = facts.versions.get(name)
        version = parse_version(text)
        wanted = ".".join(map(str, floor))
        if text is None:
            found.append(f"{name} is not installed; the course needs {wanted} or newer "
                         f"(pip install -r requirements.txt).")
        elif version is not None and version < floor:
            found.append(f"{name} {text} is older than the course's floor {wanted}: expect errors; "
                         f"upgrade it (pip install -r requirements.txt).")
    for name, newer in (facts.installed or {}).items():
        found.append(f"{name} {newer} is installed but {facts.versions.get(name)} is running: "
                     "restart the session (on Colab: Runtime > Restart session) to use it.")
    if facts.accelerator == "CPU" and facts.nvidia_device:
        found.append("This machine has an NVIDIA GPU, but TensorFlow cannot use it (see the "
                     "messages above): check the CUDA driver, or install a TensorFlow built for it.")
    if not facts.quick and facts.accelerator == "CPU":
        cost = FULL_MODE_ON_CPU.get(facts.notebook)
        if facts.notebook in LONG_ON_CPU or cost is None:
            found.append(f"Full mode on a CPU is slow: {cost or 'hours of training'} on 2 cores "
                         "(benchmarks/README.md has the measured times). "
                         "Use a GPU runtime (on Colab: Runtime > Change runtime type), or set "
                         "COURSE_QUICK=1 for a run of a few minutes on small generated data.")
        else:
            found.append(f"No GPU: {cost}. A GPU runtime brings that to about a second per image.")
    return found


def report(facts):
    """Return the environment check's text for ``facts``."""
    v = facts.versions
    cores = f", {facts.cpu_count} cores" if facts.cpu_count else ""
    cores += f" ({facts.cpu_model})" if facts.cpu_model else ""
    mode = "quick (small generated data)" if facts.quick else "full (real data)"
    lines = [f"Python {v.get('Python')}, TensorFlow {v.get('TensorFlow')}, Keras {v.get('Keras')}, "
             f"tfds {v.get('tensorflow-datasets')}, TF Hub {v.get('tensorflow-hub')}",
             f"Accelerator: {facts.accelerator}{cores if facts.accelerator == 'CPU' else ''}",
             f"Mode: {mode}; data folder: {facts.data_dir}"]
    lines += [f"WARNING: {problem}" for problem in problems(facts)]
    return "\n".join(lines)


def check(notebook=""):
    """Print the environment check for notebook ``notebook`` ("01".."04").

    From here on, the session's C++ stderr goes through ``filter_session_stderr``.
    """
    filter_session_stderr()
    print(report(gather(notebook)))
