"""Run a TF Hub Mask R-CNN and turn its outputs into full-image instance masks (notebook 3).

Conventions of the TF Hub detection models (the Object Detection API's), kept here:

- input: one uint8 image of shape (1, H, W, 3);
- ``detection_boxes``: (ymin, xmin, ymax, xmax) normalised to 0..1, where 0 and 1 are the
  centres of the first and last pixel row or column (the convention of
  ``tf.image.crop_and_resize``, with which the masks were cut out of their boxes), so a
  box's pixel row is ymin * (H - 1);
- ``detection_masks``: one small mask per detection (33x33 for Mask R-CNN), relative to its
  box, values in 0..1.

Also here: wrapping a function as a module with that signature and saving it
(``detector_module``, ``save_module``: the course's small Mask R-CNN and the tests' stand-in
are made so), and scoring any such model on scenes whose instances are known (``evaluate``).
Which model notebook 3 loads, the TF Hub one or the course's small one, is decided in
``helpers.mask_rcnn_export``.
"""

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from helpers import coco, config, download, metrics, viz
# Loading images is the download layer's job and drawing is viz's; notebook 3 reaches them here.
from helpers.download import TEST_IMAGES, load_image  # noqa: F401
from helpers.viz import annotate, instance_colours, show_detections  # noqa: F401

MASK_RCNN_HANDLE = "https://tfhub.dev/tensorflow/mask_rcnn/inception_resnet_v2_1024x1024/1"
HANDLE_VARIABLE = "COURSE_MASKRCNN_HANDLE"
OUTPUT_KEYS = ("detection_boxes", "detection_classes", "detection_scores", "detection_masks",
               "num_detections")


def use_course_tfhub_cache():
    """Cache TF Hub downloads in the course data folder unless ``TFHUB_CACHE_DIR`` is set."""
    if not os.environ.get("TFHUB_CACHE_DIR", "").strip():
        os.environ["TFHUB_CACHE_DIR"] = str(config.data_dir() / "tfhub_modules")
    return Path(os.environ["TFHUB_CACHE_DIR"])


def detector_module(call, name, description, **attributes):
    """Wrap ``call`` as a ``tf.Module`` with the TF Hub detectors' call signature.

    ``call`` maps a uint8 image [1, H, W, 3] to the dict of ``OUTPUT_KEYS``. ``attributes``
    (a Keras model, say) are set on the module, so that ``save_module`` saves their variables.
    """
    class Detector(tf.Module):
        def __init__(self):
            super().__init__(name=name)
            for key, value in attributes.items():
                setattr(self, key, value)

        # AutoGraph off: there is no Python control flow to convert, and it cannot read the
        # source of a class made inside a function.
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)],
                     autograph=False)
        def __call__(self, images):
            return call(images)

    Detector.__doc__ = description
    return Detector()


def save_module(module, folder, note):
    """Save a ``tf.Module`` with a detector's call signature as a SavedModel that ``hub.load`` reads."""
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("WARNING")  # not "Assets written to <temporary folder>"
    try:
        tf.saved_model.save(module, str(folder), signatures={"serving_default": module.__call__})
    finally:
        logger.setLevel(level)
    (Path(folder) / ".complete").write_text(note + "\n")


@contextlib.contextmanager
def explain_load_errors(handle):
    """Re-raise a failure inside the block as a ``DataError`` that says what to try."""
    try:
        yield
    except Exception as e:
        raise download.DataError(
            f"Could not load the model {handle}.\n"
            f"  Reason:  {type(e).__name__}: {str(e).strip()[:500]}\n"
            f"  Cache:   TF Hub keeps downloads in {os.environ.get('TFHUB_CACHE_DIR', 'its cache')}\n"
            f"  Local:   download the model's archive by hand, extract it and set {HANDLE_VARIABLE} "
            "to that folder\n"
            + download.offline_hint("the lab with the course's small Mask R-CNN")) from e


def _interpolation(lo, hi, n_out, n_in):
    """Matrix (n_out, n_in) that samples a box-relative axis of n_in cells at the image's
    n_out pixels bilinearly, with zero rows for the pixels outside [lo, hi]."""
    # Pixel i of the image sits at i / (n_out - 1), as in tf.image.crop_and_resize (which
    # samples a single pixel at the centre).
    positions = np.arange(n_out) / (n_out - 1) if n_out > 1 else np.array([0.5])
    relative = (positions - lo) / (hi - lo) * (n_in - 1)
    # A little slack, so a pixel exactly on the box's edge is not lost to float rounding.
    inside = (relative >= -1e-3) & (relative <= n_in - 1 + 1e-3)
    relative = np.clip(relative, 0, n_in - 1)
    below = np.clip(np.floor(relative), 0, n_in - 1).astype(np.intp)
    above = np.minimum(below + 1, n_in - 1)
    fraction = relative - below
    weights = np.zeros((n_out, n_in))
    rows = np.nonzero(inside)[0]
    np.add.at(weights, (rows, below[rows]), 1 - fraction[rows])
    np.add.at(weights, (rows, above[rows]), fraction[rows])
    return weights


def reframe_box_masks(box_masks, boxes, height, width):
    """Paste box-relative masks (N, h, w) into their boxes on an (N, height, width) canvas.

    Each mask is resized bilinearly to its box's extent; pixels outside the box are 0, and
    boxes reaching past the image are cut at its border. A box with no height or width gives
    an empty mask. This is the job of the Object Detection API's
    ``reframe_box_masks_to_image_masks``, with the same sampling.
    """
    box_masks = np.asarray(box_masks, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float64)
    if box_masks.ndim != 3:
        raise ValueError(f"Expected box masks of shape (N, h, w), got {box_masks.shape}.")
    if boxes.shape != (len(box_masks), 4):
        raise ValueError(f"Expected boxes of shape ({len(box_masks)}, 4) for "
                         f"{len(box_masks)} masks, got {boxes.shape}.")
    if not np.isfinite(boxes).all():
        raise ValueError("Boxes must be finite numbers.")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError("Boxes must be (ymin, xmin, ymax, xmax) with ymin <= ymax and "
                         "xmin <= xmax.")
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"The image size must be positive, got {height}x{width}.")
    out = np.zeros((len(box_masks), int(height), int(width)), np.float32)
    for i, ((ymin, xmin, ymax, xmax), mask) in enumerate(zip(boxes, box_masks)):
        if ymax > ymin and xmax > xmin:
            rows = _interpolation(ymin, ymax, int(height), mask.shape[0])
            cols = _interpolation(xmin, xmax, int(width), mask.shape[1])
            out[i] = rows @ mask @ cols.T  # bilinear resizing is separable
    return out


@dataclass
class Detections:
    """The kept detections of one image, with full-image boolean masks."""

    boxes: np.ndarray      # (N, 4) float32 ymin, xmin, ymax, xmax in 0..1
    class_ids: np.ndarray  # (N,) int64 label-map ids
    scores: np.ndarray     # (N,) float32, highest first
    masks: np.ndarray      # (N, H, W) bool

    def __len__(self):
        return len(self.scores)

    def pixel_boxes(self):
        """Return the boxes in pixels (top, left, bottom, right), rounded to ints."""
        h, w = self.masks.shape[1:]
        scale = np.array([h - 1, w - 1, h - 1, w - 1], np.float64)
        return np.round(self.boxes * scale).astype(np.int64)

    def names(self, label_map=None):
        """Return each detection's class name."""
        return [coco.class_name(c, label_map) for c in self.class_ids]

    def table(self, label_map=None):
        """Return a text table: class, score, box in pixels and mask area of each detection."""
        h, w = self.masks.shape[1:]
        lines = [f"{'#':>3}  {'class':16} {'score':>5}  {'box: top, left, bottom, right':>30}"
                 f"  {'mask area':>18}"]
        for i, (name, score, box, mask) in enumerate(zip(self.names(label_map), self.scores,
                                                         self.pixel_boxes(), self.masks)):
            area = int(mask.sum())
            lines.append(f"{i + 1:>3}  {name:16} {score:5.2f}  {str(tuple(int(v) for v in box)):>30}"
                         f"  {area:>9,} px {area / (h * w):6.1%}")
        if not len(self):
            lines.append("  (no detection above the score threshold)")
        return "\n".join(lines)


def _numpy_outputs(outputs):
    missing = [k for k in OUTPUT_KEYS if k not in outputs]
    if missing:
        raise ValueError(f"The model's outputs lack {', '.join(missing)} (they have "
                         f"{', '.join(sorted(outputs))}); is it an instance segmentation model?")
    arrays = {k: np.asarray(outputs[k]) for k in OUTPUT_KEYS}
    if len(arrays["num_detections"]) != 1:
        raise ValueError("Expected the outputs of one image (batch size 1), got "
                         f"{len(arrays['num_detections'])}.")
    return arrays


def filter_detections(outputs, image_size, score_threshold=0.5, mask_threshold=0.6):
    """Keep detections scoring at least ``score_threshold`` and make their full-image masks.

    ``outputs`` is the model's dict for one image and ``image_size`` the image's (H, W). A
    pixel belongs to an instance where its reframed mask value exceeds ``mask_threshold``.
    """
    for name, value in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be between 0 and 1, got {value}.")
    height, width = (int(v) for v in image_size)
    arrays = _numpy_outputs(outputs)
    count = int(arrays["num_detections"][0])
    scores = arrays["detection_scores"][0, :count].astype(np.float32)
    keep = np.nonzero(scores >= score_threshold)[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    boxes = arrays["detection_boxes"][0, keep].astype(np.float32)
    box_masks = arrays["detection_masks"][0, keep]
    # One detection at a time: full-size float masks of a big photo take a lot of memory.
    masks = np.zeros((len(keep), height, width), bool)
    for i in range(len(keep)):
        full = reframe_box_masks(box_masks[i:i + 1], boxes[i:i + 1], height, width)[0]
        masks[i] = full > mask_threshold
    class_ids = np.array([coco.class_id(c) for c in arrays["detection_classes"][0, keep]], np.int64)
    return Detections(boxes=boxes, class_ids=class_ids, scores=scores[keep], masks=masks)


def detect(model, image):
    """Run a detection model on one uint8 image (1, H, W, 3); return its outputs as numpy."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 4 or image.shape[0] != 1 or image.shape[-1] != 3:
        raise ValueError(f"The model takes one uint8 RGB image of shape (1, H, W, 3), got "
                         f"{image.dtype} {image.shape}; use load_image.")
    return {key: value.numpy() for key, value in model(tf.constant(image)).items()}


def iou_matrix(masks_a, masks_b):
    """Return the IoU of every pair of boolean instance masks, an (N_a, N_b) array."""
    ious = np.zeros((len(masks_a), len(masks_b)))
    for i, a in enumerate(masks_a):
        for j, b in enumerate(masks_b):
            # The course's one IoU formula, on the "instance" class of a two-class map.
            cm = metrics.confusion_matrix(np.asarray(a, np.uint8), np.asarray(b, np.uint8), 2)
            ious[i, j] = np.nan_to_num(metrics.iou_per_class(cm)[1])
    return ious


def match_instances(predicted_masks, true_masks, min_iou=0.5):
    """Pair predicted and true instances one to one, best IoU first.

    Return ``(pairs, ious)``: ``pairs[k]`` is the predicted index matched to true instance
    ``k`` (or -1 when none overlaps it by at least ``min_iou``), ``ious[k]`` that IoU.
    """
    ious = iou_matrix(predicted_masks, true_masks)
    pairs = np.full(len(true_masks), -1)
    best = np.zeros(len(true_masks))
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        p, t = np.unravel_index(flat, ious.shape)
        if ious[p, t] < min_iou:
            break
        if pairs[t] < 0 and p not in pairs:
            pairs[t], best[t] = p, ious[p, t]
    return pairs, best


def evaluate(model, scenes, score_threshold=0.5, mask_threshold=0.5):
    """Score a model with the TF Hub call signature on ``scenes`` whose true instances are known.

    ``scenes`` is an iterable of objects with ``image`` (H, W, 3) uint8, ``class_ids`` (N,)
    and ``masks`` (N, H, W) bool, such as ``helpers.scenes.make_scenes`` yields. Returns COCO
    mask AP, AP50 and AP75 (pycocotools, over every detection the model makes) and, for the
    detections scoring at least ``score_threshold``, the share of true instances matched at
    mask IoU >= 0.5 with the right class and the mean mask IoU of those matched.
    """
    truths, found, matched_ious, n_true = [], [], [], 0
    for scene in scenes:
        every = filter_detections(detect(model, scene.image[None]), scene.image.shape[:2], 0.0,
                                  mask_threshold)
        truths.append((scene.class_ids, scene.masks))
        found.append((every.class_ids, every.scores, every.masks))
        kept = every.scores >= score_threshold
        pairs, ious = match_instances(every.masks[kept], scene.masks)
        # A match must have the right class too.
        kept_ids = np.append(every.class_ids[kept], -1)  # pairs of -1 (no match) index the -1
        right = (pairs >= 0) & (kept_ids[pairs] == scene.class_ids)
        matched_ious.extend(ious[right])
        n_true += len(scene.masks)
    scores = coco.mask_ap(truths, found)
    mean_iou = float(np.mean(matched_ious)) if matched_ious else 0.0
    scores.update({"scenes": len(truths), "instances": n_true,
                   "matched": round(len(matched_ious) / max(n_true, 1), 4),
                   "matched_mask_iou": round(mean_iou, 4)})
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}


def detection_browser(model, images, label_map=None, score_threshold=0.5, mask_threshold=0.6):
    """Return widgets to pick an image and the score and mask thresholds, and see the result."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    slider = dict(min=0.0, max=1.0, step=0.05, continuous_update=False)
    name = widgets.Dropdown(options=list(images), description="image")
    score = widgets.FloatSlider(value=score_threshold, description="min score", **slider)
    mask = widgets.FloatSlider(value=mask_threshold, description="mask >", **slider)
    # The picture goes into an Image widget, not through plt.show() inside an Output
    # widget: headless runs (nbclient, papermill) were seen to hang on large images there.
    picture = widgets.Image(format="png")
    table = widgets.Output()
    outputs = {}  # the model runs once per image; moving a slider only re-filters

    def update(_=None):
        image = images[name.value]
        if name.value not in outputs:
            outputs[name.value] = detect(model, image)
        found = filter_detections(outputs[name.value], image.shape[1:3], score.value, mask.value)
        fig, ax = plt.subplots(figsize=(10, 7))
        show_detections(image, found, label_map, ax=ax, title=name.value)
        picture.value = viz.figure_png(fig)
        with table:
            table.clear_output(wait=True)
            print(found.table(label_map))

    for control in (name, score, mask):
        control.observe(update, "value")
    update()
    return widgets.VBox([widgets.HBox([name, score, mask]), picture, table])
