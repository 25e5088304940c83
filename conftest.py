"""Test-session set-up shared by the unit tests and the notebooks run end to end.

Tests are hermetic: quick mode, a fresh data cache, and the datasets served from a
loopback HTTP server, so the notebooks download them through the real code path.
"""

import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

# No TensorFlow here: pytest's main process (and xdist's controller) only serves files.
from helpers import download, m2nist, synthetic

# Archives the loopback server generates on first request: file name -> writer(path).
GENERATED = {
    "fcnn-dataset.zip": lambda path: synthetic.write_camvid_archive(
        path, **{f"n_{split}": n for split, n in download.DATASETS["camvid"].quick_counts.items()}),
    # Served as a label map, the form some mirrors use; quick mode's own archive is one-hot.
    "m2nist.zip": lambda path: synthetic.write_m2nist_archive(
        path, seed=0, count=m2nist.QUICK_COUNT, one_hot=False),
}


class _Handler(http.server.SimpleHTTPRequestHandler):
    lock = threading.Lock()

    def do_GET(self):
        name = self.path.lstrip("/").split("?")[0]
        if name in GENERATED:
            with self.lock:
                path = Path(self.directory) / name
                if not path.exists():
                    GENERATED[name](path.with_suffix(".part"))
                    path.with_suffix(".part").replace(path)
        super().do_GET()

    def log_message(self, *args):
        pass


def serve(directory):
    """Serve ``directory`` over HTTP on 127.0.0.1; return (server, base URL)."""
    handler = functools.partial(_Handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def pytest_configure(config):
    scratch = Path(tempfile.mkdtemp(prefix="course-tests-"))
    (scratch / "served").mkdir()
    server, base_url = serve(scratch / "served")
    config._course_scratch = (scratch, server)
    # The notebooks' kernels inherit this environment.
    os.environ["COURSE_QUICK"] = "1"
    os.environ["COURSE_DATA_DIR"] = str(scratch / "data")
    os.environ["COURSE_CAMVID_URL"] = f"{base_url}/fcnn-dataset.zip"
    os.environ["COURSE_M2NIST_URL"] = f"{base_url}/m2nist.zip"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")


# Tests grouped by what they test: tests/learner (the helpers package), tests/grading (the
# grader), tests/notebooks (the lessons run end to end, and their code). The notebooks' group
# is marked `notebooks` and `slow`; the other slow tests carry `slow` themselves, so that
# `pytest -m "not slow"` is the fast tier.
NOTEBOOK_GROUPS = ("tests/notebooks",)


def pytest_collection_modifyitems(config, items):
    root = Path(config.rootpath)
    for item in items:
        where = Path(item.path).resolve().relative_to(root).as_posix()
        if any(where == g or where.startswith(g + "/") for g in NOTEBOOK_GROUPS):
            item.add_marker(pytest.mark.notebooks)
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("long") and os.environ.get("COURSE_LONG_TESTS") != "1":
            item.add_marker(pytest.mark.skip(reason="minutes long; COURSE_LONG_TESTS=1 runs it"))


def pytest_unconfigure(config):
    scratch, server = getattr(config, "_course_scratch", (None, None))
    if server is not None:
        server.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def http_dir(tmp_path):
    """Serve a fresh folder over loopback HTTP; yield (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server, base_url = serve(folder)
    yield folder, base_url
    server.shutdown()
