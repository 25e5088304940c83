"""Read the course's configuration from environment variables.

The names here are a contract that notebooks, tests and users rely on:

- ``COURSE_QUICK=1``: quick mode (small generated data, small images, a few epochs).
- ``COURSE_DATA_DIR``: where downloads and extracted data are cached.
- ``COURSE_<DATASET>_URL`` (e.g. ``COURSE_CAMVID_URL``): a mirror or ``file://`` path.

First used in notebook 1; every notebook (1-4) starts from it, and so do the data loaders
and the grader.
"""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def quick_mode():
    """Return True when ``COURSE_QUICK`` asks for quick mode."""
    value = os.environ.get("COURSE_QUICK", "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"COURSE_QUICK={value!r} is not understood; use 1 (quick mode) or 0.")


def data_dir():
    """Return the cache folder for downloads and extracted data, creating it."""
    configured = os.environ.get("COURSE_DATA_DIR", "").strip()
    if configured:
        path = Path(configured).expanduser()
    elif (REPO_DIR / "notebooks").is_dir():
        # Running from a checkout (editable install or Colab clone): use its data/ folder.
        path = REPO_DIR / "data"
    else:
        path = Path.home() / ".cache" / "segmentation-course"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def models_dir(quick=None):
    """Return the folder for trained models and checkpoints: quick mode's is separate.

    A two-minute quick run must never overwrite the model of an hours-long full run.
    """
    quick = quick_mode() if quick is None else quick
    path = data_dir() / ("models-quick" if quick else "models")
    path.mkdir(parents=True, exist_ok=True)
    return path


def url_variable(dataset):
    """Return the name of the mirror variable for a dataset, e.g. ``COURSE_CAMVID_URL``."""
    return f"COURSE_{dataset.upper()}_URL"


def mirror_url(dataset):
    """Return the user's mirror URL for a dataset, or None when it is not set."""
    return os.environ.get(url_variable(dataset), "").strip() or None
