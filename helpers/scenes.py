"""Generated scenes of touching, overlapping shapes, for the small Mask R-CNN of notebook 3.

Instance segmentation only matters when instances touch, so these scenes are made for it:
four shape classes in random colours and sizes on a noisy, textured background, several
objects per image, and often two objects of one class side by side or one partly hiding
another. Each instance's mask is its *visible* pixels. A scene is fully determined by its
seed; training, validation, test and the notebook's scenes use separate seed ranges.
"""

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from helpers import config, download

VERSION = 1  # bump when make_scene draws differently, so cached scene files are redrawn
SIZE = 128  # the small model works at 128x128
# The four shapes, reported under the COCO classes they stand for, so that the lab's COCO
# label map and drawing code read the small model's outputs exactly as the real model's.
SHAPES = ("circle", "rectangle", "diamond", "half disc")
COCO_IDS = (37, 72, 38, 28)  # sports ball, tv, kite, umbrella
LABEL_MAP = dict(zip(COCO_IDS, SHAPES))  # names the small model's classes by their shapes
MAX_INSTANCES = 8
MIN_VISIBLE = 0.45  # an instance keeps at least this share of its area visible
MIN_PIXELS = 40

# Seed ranges, kept apart so that no scene is both trained and scored on: validation scenes
# are for tuning a recipe (``python -m helpers.mask_rcnn_export evaluate --split validation``),
# test scenes for the figures reported with the weights and in notebook 3.
TRAIN_SEEDS = range(0, 100_000)
VALIDATION_SEEDS = range(100_000, 110_000)
TEST_SEEDS = range(200_000, 210_000)
NOTEBOOK_SEEDS = range(300_000, 300_100)


@dataclass
class Scene:
    """A generated scene and its true instances."""

    image: np.ndarray   # (H, W, 3) uint8
    labels: np.ndarray  # (N,) int, 1..len(SHAPES); 0 is background
    boxes: np.ndarray   # (N, 4) float32 ymin, xmin, ymax, xmax, normalised pixel edges
    masks: np.ndarray   # (N, H, W) bool, visible pixels
    hidden: np.ndarray  # (N,) float, the share of each shape that later shapes cover

    @property
    def class_ids(self):
        """Return the instances' COCO class ids."""
        return np.asarray(COCO_IDS, np.int64)[self.labels - 1]

    def semantic(self):
        """Return the (H, W) class map a semantic segmentation would see (0 background)."""
        out = np.zeros(self.image.shape[:2], np.int64)
        for label, mask in zip(self.labels, self.masks):
            out[mask] = label
        return out


def draw_shape(draw, shape, box, fill=1):
    """Draw a shape (one of SHAPES, or the stand-in's ellipse or octagon) filling ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape in ("circle", "ellipse"):
        draw.ellipse(box, fill=fill)
    elif shape == "octagon":  # the stand-in's stop sign
        angles = np.pi / 8 + np.arange(8) * np.pi / 4
        draw.polygon([(cx + (x1 - x0) / 2 * np.cos(a), cy + (y1 - y0) / 2 * np.sin(a)) for a in angles],
                     fill=fill)
    elif shape == "rectangle":
        draw.rectangle(box, fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "half disc":
        draw.pieslice((x0, y0, x1, y1 + (y1 - y0)), 180, 360, fill=fill)
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}, ellipse or octagon.")


def _shape_box(rng, shape, size):
    """Return a random (height, width) for a shape of roughly ``size`` pixels across."""
    side = rng.uniform(0.11, 0.36) * size
    if shape == "circle":
        return side, side
    if shape == "half disc":
        return side / 2, side
    return side * rng.uniform(0.65, 1.5), side


def _background(rng, size):
    """A muted colour field with stripes or blotches and sensor noise."""
    coarse = rng.uniform(60, 190, (4, 4, 3)).astype(np.float32)
    field = np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((size, size), Image.BILINEAR))
                      for c in range(3)], -1)
    y, x = np.mgrid[:size, :size].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period)
    field += rng.uniform(0, 18) * stripes[..., None]
    # Desaturate: the background is greyish, the objects are coloured, but not always by much.
    grey = field.mean(-1, keepdims=True)
    return grey + rng.uniform(0.2, 0.6) * (field - grey)


def _colour(rng, avoid_hues):
    """A random object colour whose hue is far from ``avoid_hues`` (the instances it touches)."""
    for _ in range(50):
        hue = rng.uniform(0, 1)
        if all(min(abs(hue - h), 1 - abs(hue - h)) > 0.15 for h in avoid_hues):
            break
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 1.0), rng.uniform(0.55, 1.0))
    return hue, np.array(rgb, np.float32) * 255


def _touches(a, b, margin=2):
    """Whether two (x0, y0, x1, y1) boxes overlap or come within ``margin`` pixels."""
    return not (a[2] + margin < b[0] or b[2] + margin < a[0] or a[3] + margin < b[1]
                or b[3] + margin < a[1])


def make_scene(seed, size=SIZE, max_objects=6):
    """Draw the scene of ``seed``: 2..max_objects shapes, often touching; return a ``Scene``."""
    rng = np.random.default_rng(seed)
    image = _background(rng, size)
    wanted = int(rng.integers(2, max_objects + 1))
    placed = []  # (shape index, box, full mask, hue)
    for _ in range(wanted * 20):
        if len(placed) == wanted:
            break
        if placed and rng.uniform() < 0.5:
            # A neighbour of one class with an earlier shape, touching or overlapping it.
            ref = placed[int(rng.integers(len(placed)))]
            shape = ref[0]
            h, w = _shape_box(rng, SHAPES[shape], size)
            rx0, ry0, rx1, ry1 = ref[1]
            angle = rng.uniform(0, 2 * np.pi)
            reach = rng.uniform(0.7, 1.0)
            cx = (rx0 + rx1) / 2 + np.cos(angle) * reach * ((rx1 - rx0) + w) / 2
            cy = (ry0 + ry1) / 2 + np.sin(angle) * reach * ((ry1 - ry0) + h) / 2
        else:
            shape = int(rng.integers(len(SHAPES)))
            h, w = _shape_box(rng, SHAPES[shape], size)
            cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if box[0] < 0 or box[1] < 0 or box[2] > size - 1 or box[3] > size - 1:
            continue
        canvas = Image.new("L", (size, size), 0)
        draw_shape(ImageDraw.Draw(canvas), SHAPES[shape], box)
        full = np.asarray(canvas, bool)
        if full.sum() < MIN_PIXELS:
            continue
        # Refuse a shape that would hide too much of an earlier one.
        visible = [m & ~full for m in visible_masks(placed)]
        if any(v.sum() < max(MIN_VISIBLE * p[2].sum(), MIN_PIXELS) for v, p in zip(visible, placed)):
            continue
        hue, colour = _colour(rng, [p[3] for p in placed if _touches(p[1], box)])
        placed.append((shape, box, full, hue))
        # Shading from one side, so that an object is not one flat colour.
        ramp = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0), size, dtype=np.float32)
        shade = np.broadcast_to(ramp[:, None] if rng.uniform() < 0.5 else ramp[None, :], (size, size))
        image[full] = colour * shade[full][:, None]
    image = np.clip(np.round(image + rng.normal(0, 6, image.shape)), 0, 255).astype(np.uint8)

    masks = visible_masks(placed)
    return Scene(
        image=image,
        labels=np.array([p[0] + 1 for p in placed], np.int64),
        boxes=np.array([mask_box(m) for m in masks], np.float32).reshape(-1, 4),
        masks=np.stack(masks) if masks else np.zeros((0, size, size), bool),
        hidden=np.array([1 - m.sum() / p[2].sum() for m, p in zip(masks, placed)], np.float32),
    )


def make_scenes(seeds, size=SIZE):
    """Yield the scenes of ``seeds`` one at a time (for ``detection.evaluate``)."""
    for seed in seeds:
        yield make_scene(seed, size)


def visible_masks(placed):
    """Return each placed shape's pixels that no later shape covers."""
    masks, covered = [], None
    for p in reversed(placed):
        masks.append(p[2] if covered is None else p[2] & ~covered)
        covered = p[2] if covered is None else covered | p[2]
    return masks[::-1]


def mask_box(mask):
    """Return the normalised (ymin, xmin, ymax, xmax) pixel-edge box around a mask's pixels."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    h, w = mask.shape
    return rows[0] / h, cols[0] / w, (rows[-1] + 1) / h, (cols[-1] + 1) / w


def make_batch(seeds, size=SIZE, max_instances=MAX_INSTANCES):
    """Stack the scenes of ``seeds`` into padded arrays for training.

    Returns images (B, S, S, 3) uint8, boxes (B, M, 4) float32, labels (B, M) int32 (0 is
    padding) and masks (B, M, S, S) uint8.
    """
    seeds = list(seeds)
    images = np.zeros((len(seeds), size, size, 3), np.uint8)
    boxes = np.zeros((len(seeds), max_instances, 4), np.float32)
    labels = np.zeros((len(seeds), max_instances), np.int32)
    masks = np.zeros((len(seeds), max_instances, size, size), np.uint8)
    for i, seed in enumerate(seeds):
        scene = make_scene(seed, size)
        n = min(len(scene.labels), max_instances)
        images[i] = scene.image
        boxes[i, :n], labels[i, :n], masks[i, :n] = scene.boxes[:n], scene.labels[:n], scene.masks[:n]
    return images, boxes, labels, masks


def touching_pairs(scene):
    """Return the (i, j) pairs of instances of one class whose masks touch or overlap."""
    grown = np.zeros_like(scene.masks)
    for k, mask in enumerate(scene.masks):  # each mask grown by one pixel in 4 directions
        g = mask.copy()
        g[1:] |= mask[:-1]; g[:-1] |= mask[1:]; g[:, 1:] |= mask[:, :-1]; g[:, :-1] |= mask[:, 1:]
        grown[k] = g
    return [(i, j) for i in range(len(scene.labels)) for j in range(i + 1, len(scene.labels))
            if scene.labels[i] == scene.labels[j] and (grown[i] & scene.masks[j]).any()]


def scene_files(seeds, size=SIZE, root=None):
    """Write the scenes of ``seeds`` as PNG files once; return {name: path} for notebook 3."""
    root = Path(root) if root is not None else config.data_dir()
    files = {}
    for seed in seeds:
        def write(path, seed=seed):
            Image.fromarray(make_scene(seed, size).image).save(path, format="PNG")

        files[f"scene {seed}"] = download.generated_archive(root, f"shapes-v{VERSION}-scene-{seed}-{size}.png", write)
    return files
