"""COCO for notebook 3: the 2017 label map, and COCO's mask AP through pycocotools.

The TF Hub detectors trained on COCO 2017 return class ids 1..90: the ids of the original
COCO paper, of which the 2017 release uses 80. The map is kept here as plain data, so no
``.pbtxt`` parser (and no Object Detection API) is needed to name a detection.

``mask_ap`` scores instance masks with the COCO benchmark's own code (pycocotools, with its
run-length mask encoding) rather than a hand-written AP, so the numbers mean what COCO's mean.
"""

import contextlib
import io

import numpy as np

# id -> display name, as in the Object Detection API's mscoco_label_map.pbtxt.
COCO_2017_LABELS = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus",
    7: "train", 8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant",
    13: "stop sign", 14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog",
    19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra",
    25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie",
    33: "suitcase", 34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball",
    38: "kite", 39: "baseball bat", 40: "baseball glove", 41: "skateboard",
    42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass", 47: "cup",
    48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza",
    60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote",
    76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster",
    81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors",
    88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}
MAX_ID = 90


def class_id(value):
    """Turn a model's class output (often a float such as 18.0) into an int id."""
    number = float(value)
    if not np.isfinite(number) or number != round(number):
        raise ValueError(f"A class id must be a whole number, got {value!r}.")
    return int(round(number))


def class_name(value, label_map=None):
    """Return the name of a class id; ids the label map lacks read 'id N (unknown)'."""
    label_map = COCO_2017_LABELS if label_map is None else label_map
    number = class_id(value)
    return label_map.get(number, f"id {number} (unknown)")


def _rle(mask):
    """Return pycocotools' run-length encoding of a boolean (H, W) mask."""
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))


def mask_ap(truths, detections):
    """Return COCO mask AP (IoU 0.5:0.95), AP50 and AP75 of detections against true instances.

    ``truths`` is one ``(class_ids, masks)`` per image, ``detections`` one ``(class_ids,
    scores, masks)`` per image; masks are boolean (N, H, W), or empty lists for an image
    without any. Uses pycocotools' COCOeval with ``iouType="segm"`` (up to 100 detections per
    image).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(truths) != len(detections):
        raise ValueError(f"{len(truths)} images of truth but {len(detections)} of detections.")
    images, annotations, results, classes = [], [], [], set()
    for image_id, ((true_ids, true_masks), (ids, scores, masks)) in enumerate(
            zip(truths, detections), start=1):
        true_masks, masks = np.asarray(true_masks, bool), np.asarray(masks, bool)
        if not len(true_ids) == len(true_masks) or not len(ids) == len(scores) == len(masks):
            raise ValueError(f"Image {image_id}: {len(true_ids)} true classes for "
                             f"{len(true_masks)} masks, {len(ids)} detected classes and "
                             f"{len(scores)} scores for {len(masks)} masks.")
        sized = [m for m in (true_masks, masks) if m.ndim == 3]
        if not sized:
            continue  # neither truths nor detections: nothing to score, and no size to read
        height, width = sized[0].shape[1:]
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for class_value, mask in zip(true_ids, true_masks):
            rle = _rle(mask)
            rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": class_id(class_value),
                "segmentation": rle, "area": float(mask.sum()), "iscrowd": 0,
                "bbox": [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1),
                         float(rows[-1] - rows[0] + 1)]})
            classes.add(class_id(class_value))
        for class_value, score, mask in zip(ids, scores, masks):
            results.append({"image_id": image_id, "category_id": class_id(class_value),
                            "segmentation": _rle(mask), "score": float(score)})
            classes.add(class_id(class_value))
    if not annotations:
        raise ValueError("AP needs at least one true instance.")
    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c, "name": class_name(c)} for c in sorted(classes)]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {"AP": float(stats[0]), "AP50": float(stats[1]), "AP75": float(stats[2])}
