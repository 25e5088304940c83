"""The small Mask R-CNN as a TF Hub model: its export, its cache, and the command line.

``helpers.mask_rcnn`` is the model; this module is the plumbing around it.

- ``hub_module`` wraps a trained ``SmallMaskRCNN`` with the call signature and outputs of the
  TF Hub Mask R-CNN as notebook 3 uses them, so that every cell of the lab runs on it
  unchanged. ``saved_model_dir`` saves that once as a SavedModel into the data cache, where
  ``hub.load`` loads it like any TF Hub model.
- ``model_handle`` decides which model notebook 3 loads: yours, the TF Hub Mask R-CNN, or in
  quick mode this export of the small one. (It lives here, above ``helpers.detection``,
  because choosing the small model means exporting it.)
- The command line trains the model from scratch and scores it through ``hub.load``, as
  notebook 3 loads it::

    python -m helpers.mask_rcnn_export train     # minutes on 2 CPU cores; writes the weights
    python -m helpers.mask_rcnn_export evaluate  # COCO mask AP on held-out test scenes
    python -m helpers.mask_rcnn_export evaluate --split validation  # to tune a recipe on

  Tune a recipe on the validation scenes; report the test scenes' scores.
"""

import argparse
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path

import tensorflow as tf
import keras
import tensorflow_hub as hub

from helpers import config, detection, download, mask_rcnn, scenes

EXPORT_MASK_SIZE = 33  # the TF Hub model's box-relative masks are 33x33
EXPORT_VERSION = 2  # bump when the exported SavedModel changes, so cached exports are rebuilt


# ---------------------------------------------------------------- the TF Hub signature

def to_centre_boxes(boxes, image_size):
    """Turn pixel-edge boxes into the convention of the lab's ``reframe_box_masks``.

    There, as in the Object Detection API, 0 and 1 are the centres of the first and last
    pixel, so a box's pixel-edge coordinate y * H becomes (y * H - 0.5) / (H - 1).
    """
    size = tf.cast(image_size, tf.float32)
    scale = tf.concat([size, size], 0)
    return tf.clip_by_value((boxes * scale - 0.5) / tf.maximum(scale - 1.0, 1.0), 0.0, 1.0)


def to_corner_masks(masks):
    """Resample (N, 28, 28) bin-centre masks to the lab's (N, 33, 33) box masks.

    ``reframe_box_masks`` puts cell j of 33 at j / 32 of the way across the box, edges included,
    while the mask head predicts the centres of 28 bins: so read the 28 at -0.5 .. 27.5 (their
    border values past the outer centres).
    """
    count = tf.shape(masks)[0]
    size = mask_rcnn.MASK_SIZE
    padded = tf.pad(masks[..., None], [[0, 0], [1, 1], [1, 1], [0, 0]], "SYMMETRIC")
    lo, hi = 0.5 / (size + 1), (size + 0.5) / (size + 1)
    crops = tf.image.crop_and_resize(padded, tf.tile([[lo, lo, hi, hi]], [count, 1]),
                                     tf.range(count), [EXPORT_MASK_SIZE, EXPORT_MASK_SIZE])
    return tf.clip_by_value(crops[..., 0], 0.0, 1.0)


def hub_outputs(model, images):
    """Run a SmallMaskRCNN on uint8 images [1, H, W, 3]; return the TF Hub model's outputs."""
    # The network works at 128x128; boxes and box-relative masks are normalised, so they
    # hold for the image at its own size.
    size = mask_rcnn.IMAGE_SIZE
    small = tf.image.resize(tf.cast(images, tf.float32), [size, size], antialias=True)
    out = model.detect(small)
    real = out["labels"] > 0
    boxes = tf.where(real[..., None], to_centre_boxes(out["boxes"], tf.shape(images)[1:3]), 0.0)
    masks = to_corner_masks(out["masks"][0])
    coco_ids = tf.constant(scenes.COCO_IDS, tf.float32)
    classes = tf.where(real, tf.gather(coco_ids, tf.maximum(out["labels"] - 1, 0)), 0.0)
    return {
        "detection_boxes": boxes,
        "detection_classes": classes,
        "detection_scores": out["scores"],
        "detection_masks": masks[None],
        "num_detections": tf.cast(out["count"], tf.float32),
    }


def hub_module(model):
    """Wrap a SmallMaskRCNN as a ``tf.Module`` with the TF Hub Mask R-CNN's call signature."""
    return detection.detector_module(
        lambda images: hub_outputs(model, images), "small_mask_rcnn",
        "Small Mask R-CNN trained on generated shapes, with the TF Hub model's inputs and outputs.",
        model=model)


# ---------------------------------------------------------------- the cached export

def saved_model_dir(weights=mask_rcnn.WEIGHTS, root=None):
    """Export ``weights`` as a SavedModel into the data cache once; return its folder."""
    weights = Path(weights)
    models = Path(root) if root is not None else config.data_dir() / "models"
    if not weights.is_file():
        mask_rcnn.load_model(weights)  # raises the WeightsError that says how to rebuild them
    digest = download.sha256_file(weights)[:12]

    def build(folder):
        detection.save_module(hub_module(mask_rcnn.load_model(weights)), folder,
                              f"small Mask R-CNN from {weights.name}")

    name = f"small-mask-rcnn-v{mask_rcnn.VERSION}-e{EXPORT_VERSION}-{digest}"
    return download.install_folder(models / name, build)


def small_model_handle():
    """Return the folder of the course's small Mask R-CNN as a SavedModel (exported once)."""
    return str(saved_model_dir())


def model_handle(handle=None, quick=None):
    """Return the model notebook 3 loads: ``handle``, else ``COURSE_MASKRCNN_HANDLE``, else a default.

    The default is the TF Hub Mask R-CNN, or in quick mode the course's small Mask R-CNN
    (exported from its shipped weights into the data cache on first use). A local handle
    must be a SavedModel folder.
    """
    handle = str(handle or os.environ.get(detection.HANDLE_VARIABLE, "").strip() or "")
    if handle:
        if urllib.parse.urlsplit(handle).scheme in ("http", "https", "gs"):
            return handle  # TF Hub fetches these itself
        path = download.local_path(handle)
        if not (path / "saved_model.pb").is_file():
            raise ValueError(
                f"{handle} is not a SavedModel folder (it has no saved_model.pb). Set "
                f"{detection.HANDLE_VARIABLE} to a TF Hub URL or to the folder you extracted "
                "the model's archive into.")
        return str(path.resolve())
    quick = config.quick_mode() if quick is None else quick
    return small_model_handle() if quick else detection.MASK_RCNN_HANDLE


# ---------------------------------------------------------------- the command line

def _write_record(path, record):
    """Write the weights' record (a shipped file, so readable by all) through a temporary file."""
    download.write_atomically(
        path, lambda part: part.write_text(json.dumps(record, indent=1) + "\n"), mode=0o644)


def main(argv=None):
    """Train or evaluate the small Mask R-CNN from the command line."""
    parser = argparse.ArgumentParser(prog="python -m helpers.mask_rcnn_export",
                                     description="Train or score the small Mask R-CNN.")
    sub = parser.add_subparsers(dest="command", required=True)
    train_cmd = sub.add_parser("train", help="train from scratch with RECIPE, save the weights, "
                                             "score them on the test scenes")
    train_cmd.add_argument("--steps", type=int, default=None)
    train_cmd.add_argument("--seed", type=int, default=None)
    eval_cmd = sub.add_parser("evaluate", help="COCO mask AP of the weights on held-out scenes")
    eval_cmd.add_argument("--split", choices=("test", "validation"), default="test",
                          help="validation scenes to tune a recipe on; test scenes to report")
    for command in (train_cmd, eval_cmd):
        command.add_argument("--weights", type=Path, default=mask_rcnn.WEIGHTS)
        command.add_argument("--scenes", type=int, default=300, help="how many scenes to score")
    args = parser.parse_args(argv)

    split = getattr(args, "split", "test")
    seeds = (scenes.VALIDATION_SEEDS if split == "validation" else scenes.TEST_SEEDS)[:args.scenes]
    if args.command == "train":
        tf.config.experimental.enable_op_determinism()
        _, record = mask_rcnn.train(args.steps, args.seed, args.weights)
    else:
        record = {}
    model = hub.load(str(saved_model_dir(args.weights)))  # as notebook 3 loads it
    start = time.perf_counter()
    record[split] = detection.evaluate(model, scenes.make_scenes(seeds))
    record["evaluation_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(record[split], indent=1))
    if args.command == "train":
        record.update({"command": mask_rcnn.TRAIN_COMMAND, "weights": args.weights.name,
                       "sha256": download.sha256_file(args.weights),
                       "tensorflow": tf.__version__, "keras": keras.__version__})
        _write_record(args.weights.with_suffix("").with_suffix(".json"), record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
