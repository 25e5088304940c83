"""A rule-based stand-in for Mask R-CNN: the tests' oracle for notebook 3's post-processing.

Notebook 3's offline model is the small, trained Mask R-CNN of ``helpers.mask_rcnn``; this
stand-in stays for the tests because it knows its masks exactly. It is **not** Mask R-CNN
and learns nothing: it is a few TensorFlow ops saved as a
SavedModel with the TF Hub model's call signature (uint8 [1, H, W, 3] in, a dict of
``detection_*`` tensors and ``num_detections`` out, same dtypes and shapes). It finds the
brightly coloured shapes of ``make_scene``'s scenes: each of eight hues stands for a COCO
class, a shape's pixels of that hue are its mask, and how saturated they are is its score.
Because the scenes are generated, their true instances are known, and the tests check the
whole post-processing chain against them.
"""

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from helpers import config, detection, download, scenes

# Bump when the stand-in's graph changes, so cached copies are rebuilt.
STANDIN_VERSION = 1
STANDIN_NAME = f"mask-rcnn-standin-v{STANDIN_VERSION}"
MAX_DETECTIONS = 100  # padded like the real model's outputs
MASK_SIZE = 33  # box-relative mask resolution, as the real model's
MIN_SATURATION = 0.25  # the scenes' grey background stays below this
HUE_TOLERANCE = 20 / 360  # hues are 45 degrees apart
MIN_AREA = 30  # pixels; smaller colour specks are not objects

# One entry per hue, 45 degrees apart: (hue in degrees, COCO class id, shape drawn).
# Two hues share a class (kite, sports ball), so a scene can hold two instances of one class.
HUES = (
    (0, 13, "octagon"),       # stop sign
    (45, 37, "circle"),       # sports ball
    (90, 38, "diamond"),      # kite
    (135, 34, "ellipse"),     # frisbee
    (180, 38, "diamond"),     # kite
    (225, 72, "rectangle"),   # tv
    (270, 28, "half disc"),   # umbrella
    (315, 37, "circle"),      # sports ball
)
_FADE = 0.3  # faded shapes keep this much of their colour: detected, but with a low score


def hue_colour(degrees, saturation=0.95, value=0.9):
    """Return the RGB uint8 colour of a stand-in hue."""
    return tuple(round(255 * c) for c in colorsys.hsv_to_rgb(degrees / 360, saturation, value))


@dataclass
class Scene:
    """A generated scene and its true instances (boxes normalised as the model's)."""

    image: np.ndarray      # (H, W, 3) uint8
    class_ids: np.ndarray  # (N,) int, COCO ids
    boxes: np.ndarray      # (N, 4) float32 ymin, xmin, ymax, xmax in 0..1
    masks: np.ndarray      # (N, H, W) bool
    faded_masks: np.ndarray  # (M, H, W) bool: pale shapes, which score low


def make_scene(seed=0, height=360, width=480, n_vivid=4, n_faded=2):
    """Draw a scene of vivid and faded coloured shapes on grey; return it with its instances."""
    if n_vivid + n_faded > len(HUES):
        raise ValueError(f"A scene holds at most {len(HUES)} shapes (one per hue).")
    rng = np.random.default_rng(seed)
    # Background: a smooth grey field with a faint tint and sensor noise, far from any hue.
    coarse = rng.uniform(115, 165, (4, 5)).astype(np.float32)
    grey = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    image = grey[..., None] + rng.uniform(-3, 3, 3).astype(np.float32)

    instances = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(instances)
    scale = min(height, width) / 360
    hues = rng.permutation(len(HUES))[:n_vivid + n_faded]
    placed = []
    for hue_index in hues:
        kind = HUES[hue_index][2]
        for _ in range(500):
            w = rng.uniform(50, 110) * scale
            h = w * (rng.uniform(0.5, 0.8) if kind in ("ellipse", "half disc", "rectangle") else 1)
            x0, y0 = rng.uniform(4, width - w - 4), rng.uniform(4, height - h - 4)
            box = (x0, y0, x0 + w, y0 + h)
            gap = 8 * scale  # shapes never touch, so each is one connected instance
            if all(box[2] + gap < b[0] or b[2] + gap < box[0] or box[3] + gap < b[1]
                   or b[3] + gap < box[1] for _, b in placed):
                placed.append((hue_index, box))
                break
        else:
            raise ValueError(f"Could not place {n_vivid + n_faded} shapes in {height}x{width}.")
    for i, (hue_index, box) in enumerate(placed):
        scenes.draw_shape(draw, HUES[hue_index][2], box, i + 1)
    labels = np.asarray(instances)

    shading = np.linspace(1.0, 0.85, height, dtype=np.float32)[:, None]
    for i, (hue_index, _) in enumerate(placed):
        inside = labels == i + 1
        # Vivid shapes differ in saturation, so their scores differ a little too.
        colour = np.array(hue_colour(HUES[hue_index][0], rng.uniform(0.75, 1.0)), np.float32)
        if i >= n_vivid:  # faded: mostly background grey
            colour = _FADE * colour + (1 - _FADE) * image[inside].mean(0)
        image[inside] = colour * shading[np.nonzero(inside)[0]]
    image = np.clip(np.round(image + rng.normal(0, 2, image.shape)), 0, 255).astype(np.uint8)

    masks = np.stack([labels == i + 1 for i in range(len(placed))])
    return Scene(
        image=image,
        class_ids=np.array([HUES[h][1] for h, _ in placed[:n_vivid]], np.int64),
        boxes=np.array([_extent(m) for m in masks[:n_vivid]], np.float32).reshape(-1, 4),
        masks=masks[:n_vivid],
        faded_masks=masks[n_vivid:],
    )


def _extent(mask):
    """Normalised box of a mask's pixels, as the stand-in reports it (see ``StandInModel``)."""
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    h, w = max(mask.shape[0] - 1, 1), max(mask.shape[1] - 1, 1)
    return rows[0] / h, cols[0] / w, rows[-1] / h, cols[-1] / w


def find_hues(images):
    """The stand-in's whole "model": uint8 images [1, H, W, 3] to the TF Hub model's outputs."""
    import tensorflow as tf

    hues = tf.constant([h / 360 for h, _, _ in HUES], tf.float32)
    classes = tf.constant([c for _, c, _ in HUES], tf.float32)
    hsv = tf.image.rgb_to_hsv(tf.cast(images[0], tf.float32) / 255.0)
    hue, saturation = hsv[..., 0], hsv[..., 1]
    distance = tf.abs(hue[..., None] - hues)
    distance = tf.minimum(distance, 1.0 - distance)  # hue is an angle
    member = (saturation[..., None] > MIN_SATURATION) & (distance < HUE_TOLERANCE)
    member = tf.cast(member, tf.float32)[None]  # [1, H, W, hues]
    # Opening (erode, then dilate): a stray vivid pixel must not stretch a box.
    member = -tf.nn.max_pool2d(-member, 3, 1, "SAME")
    member = tf.nn.max_pool2d(member, 3, 1, "SAME")[0]  # [H, W, hues]

    area = tf.reduce_sum(member, [0, 1])
    score = tf.reduce_sum(member * saturation[..., None], [0, 1]) / tf.maximum(area, 1.0)
    size = tf.shape(member)
    rows, cols = tf.reduce_max(member, 1), tf.reduce_max(member, 0)
    top, left = tf.argmax(rows, 0), tf.argmax(cols, 0)
    bottom = tf.cast(size[0] - 1, tf.int64) - tf.argmax(tf.reverse(rows, [0]), 0)
    right = tf.cast(size[1] - 1, tf.int64) - tf.argmax(tf.reverse(cols, [0]), 0)
    # Normalised so that 0 and 1 are the centres of the first and last pixels: the
    # convention of tf.image.crop_and_resize, which cuts out the box-relative masks.
    h = tf.cast(tf.maximum(size[0] - 1, 1), tf.float32)
    w = tf.cast(tf.maximum(size[1] - 1, 1), tf.float32)
    boxes = tf.stack([tf.cast(top, tf.float32) / h, tf.cast(left, tf.float32) / w,
                      tf.cast(bottom, tf.float32) / h, tf.cast(right, tf.float32) / w], 1)
    masks = tf.image.crop_and_resize(tf.transpose(member, [2, 0, 1])[..., None], boxes,
                                     tf.range(len(HUES)), [MASK_SIZE, MASK_SIZE])[..., 0]

    found = area >= MIN_AREA
    count = tf.reduce_sum(tf.cast(found, tf.int32))
    keep = tf.argsort(tf.where(found, score, -1.0), direction="DESCENDING")[:count]

    def padded(values):
        values = tf.gather(values, keep)
        padding = [[0, MAX_DETECTIONS - count]] + [[0, 0]] * (len(values.shape) - 1)
        values = tf.pad(values, padding)[None]
        return tf.ensure_shape(values, [1, MAX_DETECTIONS] + values.shape[2:])

    return {
        "detection_boxes": padded(boxes),
        "detection_classes": padded(classes),
        "detection_scores": padded(score),
        "detection_masks": padded(masks),
        "num_detections": tf.cast(count, tf.float32)[None],
    }


def standin_module():
    """Return the stand-in as a ``tf.Module`` with the TF Hub Mask R-CNN's call signature."""
    return detection.detector_module(
        find_hues, "mask_rcnn_standin",
        "STAND-IN for Mask R-CNN: finds vivid hues, one detection per hue; no neural network.")


def standin_model_dir(root=None):
    """Save the stand-in SavedModel into the data cache once; return its folder."""
    models = Path(root) if root is not None else config.data_dir() / "models"

    def build(folder):
        detection.save_module(standin_module(), folder, "stand-in for Mask R-CNN, not a trained model")

    return download.install_folder(models / STANDIN_NAME, build)
