"""M2NIST: up to three handwritten digits on a 64x84 canvas, for the graded assignment.

The archive holds ``combined.npy`` (uint8 images, N x 64 x 84) and ``segmented.npy``
(either one-hot N x 64 x 84 x 11 with channel 10 the background, or a label map
N x 64 x 84 with values 0..9 for digits and 10 for background; mirrors differ). Both
forms are validated and normalised to a uint8 label map. The split into train,
validation and test is seeded, so every learner and the grader see the same test set.

Taught in notebook 4; the grader (``python -m grader``) uses the same loader.
"""

from pathlib import Path

import numpy as np

from helpers import download, synthetic

M2NIST_URL = download.DATASETS["m2nist"].url  # the record in the download registry
CLASSES = tuple(str(d) for d in range(10)) + ("background",)
N_CLASSES = len(CLASSES)
BACKGROUND = 10
IMAGE_SHAPE = synthetic.M2NIST_SHAPE
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.16, "test": 0.04}  # 4000 / 800 / 200 of 5000
SPLIT_SEED = 2024
FULL_COUNT = download.DATASETS["m2nist"].counts
QUICK_COUNT = download.DATASETS["m2nist"].quick_counts  # 960 / 192 / 48


def _find(tree, name):
    found = sorted(p for p in Path(tree).rglob(name) if not p.name.startswith("._"))
    if len(found) != 1:
        where = ", ".join(str(p.relative_to(tree)) for p in found) or "nowhere"
        raise download.DataError(f"expected exactly one {name} in the archive, found it {where}")
    return found[0]


def _load_npy(path):
    try:
        # Never unpickle: a .npy with object arrays could run code.
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise download.DataError(f"{path.name} is not a readable .npy array ({e})") from e


def _labels_from(segmented, chunk=500):
    """Validate ``segmented`` (one-hot or label map) and return a uint8 label map."""
    if segmented.ndim == 3:
        if not (np.issubdtype(segmented.dtype, np.integer) or segmented.dtype == bool):
            raise download.DataError(f"the label map segmented.npy holds {segmented.dtype}, "
                                     "not integer class ids")
        labels = np.asarray(segmented).astype(np.uint8, copy=False)
        if segmented.size and (segmented.min() < 0 or segmented.max() > BACKGROUND):
            raise download.DataError(f"the label map segmented.npy holds values "
                                     f"{segmented.min()}..{segmented.max()}, not 0..{BACKGROUND}")
        return labels
    if segmented.ndim == 4 and segmented.shape[-1] == N_CLASSES:
        labels = np.empty(segmented.shape[:3], np.uint8)
        for start in range(0, len(segmented), chunk):
            block = np.asarray(segmented[start:start + chunk])
            if not np.isin(block, (0, 1)).all() or not (block.sum(-1) == 1).all():
                raise download.DataError("the one-hot segmented.npy is not one-hot: each pixel "
                                         "must hold a single 1 across its 11 channels")
            labels[start:start + chunk] = block.argmax(-1)
        return labels
    raise download.DataError(f"segmented.npy has shape {segmented.shape}; expected "
                             f"(N, 64, 84, {N_CLASSES}) one-hot or (N, 64, 84) label map")


def read_m2nist(tree, expected_count=None):
    """Validate the M2NIST files under ``tree``; return (images, labels) as uint8 arrays."""
    images = _load_npy(_find(tree, "combined.npy"))
    segmented = _load_npy(_find(tree, "segmented.npy"))
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8:
        raise download.DataError(f"combined.npy is {images.dtype} {images.shape}; expected "
                                 f"uint8 (N, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]})")
    if segmented.shape[:3] != images.shape:
        raise download.DataError(f"segmented.npy {segmented.shape} does not match "
                                 f"combined.npy {images.shape} image for image")
    if expected_count is not None and len(images) != expected_count:
        raise download.DataError(f"the archive holds {len(images)} images, expected {expected_count}")
    return np.asarray(images), _labels_from(segmented)


def download_m2nist(url=None, quick=None, root=None):
    """Download (or in quick mode generate) M2NIST and return its extracted folder."""
    return download.fetch("m2nist", read_m2nist, url, quick, root)


def split_indices(count, seed=SPLIT_SEED):
    """Return the seeded train / validation / test index arrays for ``count`` images."""
    order = np.random.default_rng(seed).permutation(count)
    n_train = round(count * SPLIT_FRACTIONS["train"])
    n_val = round(count * SPLIT_FRACTIONS["validation"])
    return {"train": np.sort(order[:n_train]),
            "validation": np.sort(order[n_train:n_train + n_val]),
            "test": np.sort(order[n_train + n_val:])}


def load_m2nist(url=None, quick=None, root=None):
    """Return {"train" | "validation" | "test": (images, labels)} with the course's fixed split."""
    images, labels = read_m2nist(download_m2nist(url, quick, root))
    return {split: (images[index], labels[index])
            for split, index in split_indices(len(images)).items()}


def scale_images(images):
    """Scale uint8 images (N, 64, 84) to float32 in [-1, 1] with a channel axis."""
    return (np.asarray(images, np.float32)[..., None] / 127.5 - 1.0)


def check_weights(weights, labels):
    """Return per-pixel loss weights as float32 after checking they fit ``labels``."""
    weights = np.asarray(weights)
    if weights.shape != np.shape(labels):
        raise ValueError(f"The weights have shape {weights.shape} and the labels {np.shape(labels)}: "
                         "give one weight per pixel, in an array shaped like the labels.")
    if not (np.issubdtype(weights.dtype, np.number) or weights.dtype == bool):
        raise ValueError(f"The weights hold {weights.dtype}, not numbers.")
    weights = weights.astype(np.float32)
    if weights.size and not (np.isfinite(weights).all() and weights.min() >= 0):
        bad = weights[~np.isfinite(weights) | (weights < 0)]
        raise ValueError("The weights must be finite and not negative "
                         f"(found {bad.size:,} that are not, such as {bad[0]}).")
    if weights.size and not weights.any():
        raise ValueError("Every weight is 0: no pixel would count in the loss.")
    return weights
