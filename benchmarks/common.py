"""Shared pieces of the benchmarks: the machine's description, generated data, timing."""

import os
import platform
import shutil
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

from helpers import environment
# The benchmarks train the notebooks' own models with their parameters (training.py, memory.py).
from maintainer.notebook_code import notebook_function, notebook_parameters  # noqa: F401


def machine():
    """Return a one-line description of this machine: CPU, cores, accelerator, TF and Keras."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        accelerator = f"{len(gpus)} GPU ({', '.join(names)})"
    else:
        accelerator = "no GPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{environment.cpu_model() or platform.processor() or platform.machine()}, {cores} cores, {accelerator}; TensorFlow {tf.__version__}, "
            f"Keras {keras.__version__}, Python {platform.python_version()}")


@contextmanager
def scratch_dir(prefix="course-bench-"):
    """Yield a fresh temporary folder, and delete it afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def camvid_frames(folder, n_frames, height=360, width=480, seed=0):
    """Generate ``n_frames`` CamVid-format training pairs under ``folder``; return the pairs."""
    from helpers import datasets, synthetic

    archive = Path(folder) / "camvid.zip"
    synthetic.write_camvid_archive(archive, seed=seed, n_train=n_frames, n_test=1,
                                   height=height, width=width)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(folder)
    archive.unlink()
    return datasets.camvid_pairs(folder, "train")


def timed(fn, *args, **kwargs):
    """Call ``fn``; return (its result, seconds taken)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def table(rows, headers):
    """Format rows as a plain text table."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def peak_rss_mib():
    """Return this process's peak resident set size so far, in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(module, args, timeout=900):
    """Run ``python -m module *args`` in a fresh interpreter; return its last stdout line as JSON."""
    import json
    import subprocess
    import sys

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
