"""A small Mask R-CNN in Keras 3, trained on generated scenes: notebook 3's offline model.

Mask R-CNN (He et al., 2017) works in two stages on one shared backbone: a region proposal
network (RPN) proposes boxes, then heads classify each proposed box, refine it and predict a
mask inside it. This module builds them small, for 128x128 images, and reads in the paper's
order:

1. the **backbone** with a small feature pyramid: levels P1, P2, P3 at strides 2, 4, 8;
2. **anchors and box coding**: boxes of 3 sizes x 3 aspect ratios around every P3 cell, and
   the deltas that move an anchor onto a box;
3. the **RPN**: an objectness logit and four deltas per anchor; non-maximum suppression (NMS)
   keeps the best proposals;
4. **RoIAlign**: a fixed-size feature crop per region, each bin the average of 2 x 2 bilinear
   samples taken inside it (``tf.image.crop_and_resize``, then average pooling);
5. the **heads**: a box head classifies each region and refines its box per class, and a mask
   head (convolutions, a transposed convolution) predicts a 28x28 mask per class;
6. ``SmallMaskRCNN``, the stages put together, one method per stage (``model(images)`` runs
   them all and returns the detections);
7. **targets and losses**: anchors and proposals matched to true boxes by IoU, positives and
   negatives sampled, a Huber (smooth-L1) loss on normalised deltas, and per-pixel binary
   cross-entropy on the true class's mask only;
8. **training** from scratch with ``RECIPE``: AdamW, warm-up and cosine decay, fresh scenes.

Design choices, where this model differs from the paper's Mask R-CNN with FPN:

- The RPN runs on one pyramid level, P3, with 3 sizes x 3 ratios per cell, as Faster R-CNN
  does; FPN gives each level one size instead. The scenes' objects are 14 to 46 pixels
  across, which anchors of 16, 32 and 64 pixels on one level cover.
- RoI levels are fixed: the box head always reads P2 and the mask head P1; FPN picks a level
  by the size of each box.
- The RPN's and the box head's box losses are divided by the number of positives (Faster
  R-CNN divides the RPN's by the number of anchor positions and weights it by 10; Fast R-CNN
  averages the box loss over all sampled RoIs). The classification losses are averaged over
  the sampled anchors or RoIs, the mask loss over the positive RoIs, as in the paper.
- AdamW's weight decay reaches every trainable variable, batch normalisation's scales and
  offsets and the biases included; many implementations exempt those.
- Boxes are normalised pixel edges: y = 0 is the top edge of the first row, y = 1 the bottom
  edge of the last. (The TF Hub format puts 0 and 1 at the centres of the first and last
  pixel; the export converts.)

Training from scratch takes minutes on 2 CPU cores (the weights' record, ``RESULTS``, has the time), and is
deterministic. The export to the TF Hub Mask R-CNN's inputs and outputs, its cache and the
command line that trains and scores the model are in ``helpers.mask_rcnn_export``; scoring
any model with that signature is ``helpers.detection.evaluate``.

Taught in notebook 3 ("Inside Mask R-CNN").
"""

import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import keras
from keras import layers

from helpers import download, scenes

IMAGE_SIZE = scenes.SIZE
NUM_CLASSES = len(scenes.SHAPES)  # plus background, class 0
ANCHOR_STRIDE = 8  # the RPN's level, P3
ANCHOR_SIZES = (16, 32, 64)  # pixels: the scenes' objects are 14 to 46 pixels across
ANCHOR_RATIOS = (0.5, 1.0, 2.0)  # height / width
BOX_STD = (0.1, 0.1, 0.2, 0.2)  # deltas are divided by these, so all four have similar scale
BOX_ROI_SIZE = 7  # RoIAlign's bins for the box head, on P2
MASK_ROI_SIZE = 14  # and for the mask head, on P1
# The pyramid level each stage reads: fixed here (FPN picks the RoI level by box size instead).
RPN_LEVEL, BOX_LEVEL, MASK_LEVEL = "p3", "p2", "p1"
MASK_SIZE = 28
MAX_DETECTIONS = 100  # padded like the TF Hub model's outputs

VERSION = 2  # bump when the architecture or training changes; the shipped weights must be retrained
WEIGHTS = Path(__file__).with_name("weights") / f"small_mask_rcnn_v{VERSION}.weights.h5"
RESULTS = WEIGHTS.with_suffix("").with_suffix(".json")  # how WEIGHTS were made, and their scores
TRAIN_COMMAND = "python -m helpers.mask_rcnn_export train"

# The training recipe (``train`` writes it beside the weights).
RECIPE = {"seed": 0, "steps": 2400, "batch_size": 8, "learning_rate": 2e-3, "warmup": 150,
          "weight_decay": 1e-4}


# ----------------------------------------------------------- 1. backbone

def _conv(x, filters, name, stride=1, kernel=3, norm=True):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=not norm,
                      kernel_initializer="he_normal", name=name)(x)
    if norm:
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_backbone():
    """Return the backbone: a 128x128x3 image in [-1, 1] to pyramid levels P1, P2, P3."""
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    c1 = _conv(_conv(image, 24, "c1a", 2), 24, "c1b")  # stride 2
    c2 = _conv(_conv(c1, 48, "c2a", 2), 48, "c2b")     # stride 4
    c3 = _conv(_conv(c2, 64, "c3a", 2), 64, "c3b")     # stride 8
    c4 = _conv(_conv(c3, 96, "c4a", 2), 96, "c4b")     # stride 16: context for large shapes
    # Feature pyramid: coarse, semantic levels are upsampled and added to finer ones.
    p4 = layers.Conv2D(48, 1, name="p4_lateral")(c4)
    p3 = layers.Add(name="p3_add")([layers.Conv2D(48, 1, name="p3_lateral")(c3),
                                    layers.UpSampling2D(name="p4_up")(p4)])
    p2 = layers.Add(name="p2_add")([layers.Conv2D(48, 1, name="p2_lateral")(c2),
                                    layers.UpSampling2D(name="p3_up")(p3)])
    p1 = layers.Add(name="p1_add")([layers.Conv2D(24, 1, name="p1_lateral")(c1),
                                    layers.Conv2D(24, 1, name="p2_reduce")(
                                        layers.UpSampling2D(name="p2_up")(p2))])
    p3 = _conv(p3, 48, "p3", norm=False)
    p2 = _conv(p2, 48, "p2", norm=False)
    p1 = _conv(p1, 24, "p1", norm=False)
    return keras.Model(image, {"p1": p1, "p2": p2, "p3": p3}, name="backbone")


# ------------------------------------------------ 2. anchors, box coding

def make_anchors(feature_size=IMAGE_SIZE // ANCHOR_STRIDE, stride=ANCHOR_STRIDE,
                 sizes=ANCHOR_SIZES, ratios=ANCHOR_RATIOS, image_size=IMAGE_SIZE):
    """Return (feature_size**2 * len(sizes) * len(ratios), 4) normalised anchor boxes.

    Anchors are centred on the feature cells, row by row, and for each cell ordered by size,
    then ratio: the order of the RPN's outputs. A ratio is height / width at equal area.
    """
    centres = (np.arange(feature_size) + 0.5) * stride
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    shapes = np.array([(s * np.sqrt(r), s / np.sqrt(r)) for s in sizes for r in ratios])
    cy, cx = cy[..., None], cx[..., None]
    h, w = shapes[:, 0], shapes[:, 1]
    anchors = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], -1) / image_size
    return anchors.reshape(-1, 4).astype(np.float32)


def box_iou(a, b):
    """Return the IoU of every box in ``a`` [..., N, 4] with every box in ``b`` [..., M, 4]."""
    a, b = tf.convert_to_tensor(a, tf.float32), tf.convert_to_tensor(b, tf.float32)
    a, b = a[..., :, None, :], b[..., None, :, :]
    top, left = tf.maximum(a[..., 0], b[..., 0]), tf.maximum(a[..., 1], b[..., 1])
    bottom, right = tf.minimum(a[..., 2], b[..., 2]), tf.minimum(a[..., 3], b[..., 3])
    inter = tf.maximum(bottom - top, 0.0) * tf.maximum(right - left, 0.0)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / tf.maximum(area_a + area_b - inter, 1e-9)


def encode_boxes(boxes, anchors):
    """Return the deltas (dy, dx, log dh, log dw) / BOX_STD that move ``anchors`` onto ``boxes``."""
    boxes, anchors = tf.cast(boxes, tf.float32), tf.cast(anchors, tf.float32)
    ah, aw = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    bh, bw = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    ah, aw = tf.maximum(ah, 1e-6), tf.maximum(aw, 1e-6)
    deltas = tf.stack([
        ((boxes[..., 0] + boxes[..., 2]) - (anchors[..., 0] + anchors[..., 2])) / 2 / ah,
        ((boxes[..., 1] + boxes[..., 3]) - (anchors[..., 1] + anchors[..., 3])) / 2 / aw,
        tf.math.log(tf.maximum(bh, 1e-6) / ah),
        tf.math.log(tf.maximum(bw, 1e-6) / aw)], -1)
    return deltas / BOX_STD


def decode_boxes(deltas, anchors):
    """Apply ``deltas`` (as ``encode_boxes`` makes them) to ``anchors``; the inverse of encoding."""
    deltas, anchors = tf.cast(deltas, tf.float32) * BOX_STD, tf.cast(anchors, tf.float32)
    ah, aw = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    cy = (anchors[..., 0] + anchors[..., 2]) / 2 + deltas[..., 0] * ah
    cx = (anchors[..., 1] + anchors[..., 3]) / 2 + deltas[..., 1] * aw
    # Clipped so that a wild early prediction cannot overflow exp.
    h = ah * tf.exp(tf.minimum(deltas[..., 2], 4.0))
    w = aw * tf.exp(tf.minimum(deltas[..., 3], 4.0))
    return tf.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], -1)


# ------------------------------------------------------------ 3. the RPN

def build_rpn_head(channels=48):
    """Return the RPN head: per anchor of each cell, an objectness logit and four deltas."""
    k = len(ANCHOR_SIZES) * len(ANCHOR_RATIOS)
    features = keras.Input((None, None, channels), name="p3")
    x = _conv(features, 48, "rpn_conv", norm=False)
    logits = layers.Conv2D(k, 1, name="rpn_objectness")(x)
    deltas = layers.Conv2D(4 * k, 1, name="rpn_deltas",
                           kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))(x)
    return keras.Model(features, {"logits": logits, "deltas": deltas}, name="rpn")


# ----------------------------------------------------------- 4. RoIAlign

def roi_align(features, boxes, box_indices, output_size, sampling=2, method="bilinear"):
    """Cut an (output_size, output_size) crop per box out of ``features`` [B, H, W, C].

    ``boxes`` [N, 4] are normalised pixel-edge boxes; ``box_indices`` [N] say which image.
    Each output bin averages ``sampling`` x ``sampling`` bilinear samples taken at regular
    points inside it, as in the paper's RoIAlign. Feature cell (i, j) sits at the centre of
    its stride x stride patch of pixels, hence the half-cell shifts. Points in the half cell
    beyond the outer centres read the border value, not zero.
    """
    height, width = tf.shape(features)[1], tf.shape(features)[2]
    # One cell of edge padding: crop_and_resize would read zeros past the outer centres.
    features = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], "SYMMETRIC")
    n = output_size * sampling
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    y1, x1, y2, x2 = tf.unstack(tf.convert_to_tensor(boxes, tf.float32), axis=-1)
    # First and last sample points, in feature-cell coordinates (cell centres are integers).
    step_y, step_x = (y2 - y1) / n, (x2 - x1) / n
    first_y, last_y = (y1 + step_y / 2) * h - 0.5, (y2 - step_y / 2) * h - 0.5
    first_x, last_x = (x1 + step_x / 2) * w - 0.5, (x2 - step_x / 2) * w - 0.5
    # crop_and_resize maps 0..1 onto the first..last cell centre of the padded map.
    crop_boxes = tf.stack([(first_y + 1) / (h + 1), (first_x + 1) / (w + 1),
                           (last_y + 1) / (h + 1), (last_x + 1) / (w + 1)], -1)
    crops = tf.image.crop_and_resize(features, crop_boxes, box_indices, [n, n], method=method)
    if sampling > 1:
        crops = tf.nn.avg_pool2d(crops, sampling, sampling, "VALID")
    return crops


# ---------------------------------------------------------- 5. the heads

def build_box_head(channels=48):
    """Return the box head: a 7x7 RoI crop to class logits and per-class box deltas."""
    crops = keras.Input((BOX_ROI_SIZE, BOX_ROI_SIZE, channels), name="box_crops")
    x = layers.Flatten()(crops)
    x = layers.Dense(256, activation="relu", name="box_fc1")(x)
    x = layers.Dense(256, activation="relu", name="box_fc2")(x)
    logits = layers.Dense(NUM_CLASSES + 1, name="box_classes")(x)
    deltas = layers.Dense(4 * (NUM_CLASSES + 1), name="box_deltas",
                          kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))(x)
    deltas = layers.Reshape((NUM_CLASSES + 1, 4))(deltas)
    return keras.Model(crops, {"logits": logits, "deltas": deltas}, name="box_head")


def build_mask_head(channels=24):
    """Return the mask head: a 14x14 RoI crop to one 28x28 mask logit map per class."""
    crops = keras.Input((MASK_ROI_SIZE, MASK_ROI_SIZE, channels), name="mask_crops")
    x = crops
    for i in range(4):
        x = _conv(x, 32, f"mask_conv{i + 1}", norm=False)
    x = layers.Conv2DTranspose(32, 2, 2, activation="relu", name="mask_up")(x)
    logits = layers.Conv2D(NUM_CLASSES, 1, name="mask_logits")(x)
    return keras.Model(crops, logits, name="mask_head")


# ---------------------------------------------------------- 6. the model

class SmallMaskRCNN(keras.Model):
    """The small Mask R-CNN: one method per stage, so notebook 3 can run them one by one.

    ``model(images)`` (uint8 or 0..255 images [B, 128, 128, 3]) returns the detections, as
    ``detect`` does; training goes through ``compute_losses``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.backbone = build_backbone()
        self.rpn_head = build_rpn_head()
        self.box_head = build_box_head()
        self.mask_head = build_mask_head()
        self.anchors = tf.constant(make_anchors())
        self.built = True  # every part is a functional model, built on creation

    def call(self, images, training=False):
        """Return the detections of ``images`` (see ``detect``)."""
        return self.detect(images)

    def features(self, images, training=False):
        """Return the pyramid {"p1", "p2", "p3"} of uint8 or 0..255 images [B, 128, 128, 3]."""
        images = tf.cast(images, tf.float32) / 127.5 - 1.0
        return self.backbone(images, training=training)

    def rpn(self, features, training=False):
        """Return per-anchor objectness logits [B, A] and box deltas [B, A, 4]."""
        out = self.rpn_head(features[RPN_LEVEL], training=training)
        batch = tf.shape(out["logits"])[0]
        return tf.reshape(out["logits"], [batch, -1]), tf.reshape(out["deltas"], [batch, -1, 4])

    def proposals(self, logits, deltas, pre_nms=1000, post_nms=100, iou_threshold=0.7):
        """Decode the RPN's best anchors into boxes and keep ``post_nms`` after NMS.

        Returns boxes [B, post_nms, 4], objectness [B, post_nms] and the count of real
        (not padding) proposals per image [B].
        """
        scores, top = tf.math.top_k(tf.sigmoid(logits), min(pre_nms, self.anchors.shape[0]))
        boxes = decode_boxes(tf.gather(deltas, top, batch_dims=1), tf.gather(self.anchors, top))
        boxes = tf.clip_by_value(boxes, 0.0, 1.0)
        boxes, scores, _, valid = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], scores[..., None], post_nms, post_nms,
            iou_threshold=iou_threshold, clip_boxes=False)
        return tf.stop_gradient(boxes), tf.stop_gradient(scores), valid

    def _crops(self, level, boxes, size):
        """RoIAlign for a batch of box sets [B, N, 4]: crops [B * N, size, size, C]."""
        batch, count = tf.shape(boxes)[0], tf.shape(boxes)[1]
        indices = tf.repeat(tf.range(batch), count)
        return roi_align(level, tf.reshape(boxes, [-1, 4]), indices, size)

    def classify_boxes(self, features, boxes, training=False):
        """Return class logits [B, N, K + 1] and per-class deltas [B, N, K + 1, 4] of boxes."""
        batch, count = tf.shape(boxes)[0], tf.shape(boxes)[1]
        out = self.box_head(self._crops(features[BOX_LEVEL], boxes, BOX_ROI_SIZE), training=training)
        return (tf.reshape(out["logits"], [batch, count, NUM_CLASSES + 1]),
                tf.reshape(out["deltas"], [batch, count, NUM_CLASSES + 1, 4]))

    def mask_logits(self, features, boxes, training=False):
        """Return mask logits [B, N, 28, 28, K] for boxes [B, N, 4]."""
        batch, count = tf.shape(boxes)[0], tf.shape(boxes)[1]
        out = self.mask_head(self._crops(features[MASK_LEVEL], boxes, MASK_ROI_SIZE), training=training)
        return tf.reshape(out, [batch, count, MASK_SIZE, MASK_SIZE, NUM_CLASSES])

    def detect(self, images, score_threshold=0.05, iou_threshold=0.5):
        """Run both stages on images [B, 128, 128, 3]; return padded detections.

        Returns a dict: boxes [B, 100, 4], scores [B, 100], labels [B, 100] (1..K, 0 for
        padding), masks [B, 100, 28, 28] (box-relative probabilities) and count [B].
        """
        features = self.features(images)
        proposals, _, valid = self.proposals(*self.rpn(features))
        logits, deltas = self.classify_boxes(features, proposals)
        probs = tf.nn.softmax(logits)[..., 1:]
        real = tf.sequence_mask(valid, tf.shape(proposals)[1], tf.float32)[..., None]
        # A box per proposal and class; a second NMS, per class, removes duplicates.
        boxes = decode_boxes(deltas[:, :, 1:], proposals[:, :, None, :])
        boxes, scores, classes, count = tf.image.combined_non_max_suppression(
            tf.clip_by_value(boxes, 0.0, 1.0), probs * real, MAX_DETECTIONS, MAX_DETECTIONS,
            iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False)
        classes = tf.cast(classes, tf.int32)
        # Of the K masks per box, the detected class's.
        masks = tf.sigmoid(self.mask_logits(features, boxes))
        masks = tf.reduce_sum(masks * tf.one_hot(classes, NUM_CLASSES)[:, :, None, None, :], -1)
        is_real = tf.sequence_mask(count, MAX_DETECTIONS)
        return {"boxes": boxes, "scores": scores, "labels": tf.where(is_real, classes + 1, 0),
                "masks": masks * tf.cast(is_real, tf.float32)[..., None, None], "count": count}


# ---------------------------------------------------- 7. targets, losses

def sample_mask(candidates, counts, seed):
    """Choose at random up to ``counts`` [B] of the True entries of each row of ``candidates``."""
    noise = tf.random.stateless_uniform(tf.shape(candidates), seed)
    score = tf.where(candidates, noise, -1.0)
    rank = tf.argsort(tf.argsort(score, axis=-1, direction="DESCENDING"), axis=-1)
    return candidates & (rank < tf.cast(counts, tf.int32)[:, None])


def rpn_targets(anchors, gt_boxes, gt_labels, seed, per_image=256, positive_fraction=0.5):
    """Label anchors for the RPN by IoU with the true boxes, and sample them.

    Positive: IoU >= 0.7 with a true box, or the best anchor of a true box; negative: IoU below
    0.3 with every true box. Returns (sampled positives [B, A], sampled negatives [B, A],
    regression targets [B, A, 4]).
    """
    real = gt_labels > 0
    iou = tf.where(real[:, None, :], box_iou(anchors[None], gt_boxes), -1.0)  # [B, A, G]
    best_iou, best_gt = tf.reduce_max(iou, 2), tf.argmax(iou, 2, output_type=tf.int32)
    best_anchor_iou = tf.reduce_max(iou, 1, keepdims=True)  # [B, 1, G]
    is_best = tf.reduce_any((iou >= best_anchor_iou - 1e-6) & (iou > 0.0) & real[:, None, :], 2)
    positive = (best_iou >= 0.7) | is_best
    negative = (best_iou < 0.3) & ~positive
    seeds = tf.random.experimental.stateless_split(seed, 2)
    n_pos = tf.fill([tf.shape(gt_labels)[0]], int(per_image * positive_fraction))
    positive = sample_mask(positive, n_pos, seeds[0])
    n_neg = per_image - tf.reduce_sum(tf.cast(positive, tf.int32), 1)
    negative = sample_mask(negative, n_neg, seeds[1])
    targets = encode_boxes(tf.gather(gt_boxes, best_gt, batch_dims=1), anchors[None])
    return positive, negative, targets


ROIS_PER_IMAGE = 32  # sampled for the heads in training
MAX_POSITIVE_ROIS = 8  # a quarter of them at most: these are also the mask head's RoIs


def roi_targets(proposals, valid, gt_boxes, gt_labels, seed, per_image=ROIS_PER_IMAGE,
                max_positive=MAX_POSITIVE_ROIS):
    """Match proposals (and the true boxes themselves) to true boxes, and sample RoIs.

    Positive: IoU >= 0.5 with a true box; negative: below it. Returns the sampled RoIs [B, R, 4],
    their weights [B, R] (0 for padding), target labels [B, R] (0 background), matched true-box
    index [B, R] and whether each is positive [B, R], positives first.
    """
    # The true boxes join the proposals, so the heads see good boxes from the first step on.
    rois = tf.concat([proposals, gt_boxes], 1)
    real = tf.concat([tf.sequence_mask(valid, tf.shape(proposals)[1]), gt_labels > 0], 1)
    iou = tf.where((gt_labels > 0)[:, None, :], box_iou(rois, gt_boxes), -1.0)
    best_iou, best_gt = tf.reduce_max(iou, 2), tf.argmax(iou, 2, output_type=tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    batch = tf.shape(gt_labels)[0]
    positive = sample_mask(real & (best_iou >= 0.5), tf.fill([batch], max_positive), seeds[0])
    negative = sample_mask(real & (best_iou < 0.5),
                           per_image - tf.reduce_sum(tf.cast(positive, tf.int32), 1), seeds[1])
    order = tf.cast(positive, tf.float32) * 2 + tf.cast(negative, tf.float32)
    # Positives first, then negatives, then padding.
    _, keep = tf.math.top_k(order, min(per_image, rois.shape[1] or per_image))
    weight = tf.cast(tf.gather(positive | negative, keep, batch_dims=1), tf.float32)
    is_positive = tf.gather(positive, keep, batch_dims=1)
    matched = tf.gather(best_gt, keep, batch_dims=1)
    labels = tf.where(is_positive, tf.gather(gt_labels, matched, batch_dims=1), 0)
    return tf.gather(rois, keep, batch_dims=1), weight, labels, matched, is_positive


def mask_targets(gt_masks, boxes, matched):
    """Cut the true masks [B, G, H, W] of ``matched`` [B, N] at ``boxes`` [B, N, 4], 28x28."""
    batch, n_gt = tf.shape(gt_masks)[0], tf.shape(gt_masks)[1]
    height, width = tf.shape(gt_masks)[2], tf.shape(gt_masks)[3]
    flat = tf.reshape(tf.cast(gt_masks, tf.float32), [-1, height, width, 1])
    index = tf.reshape(matched + tf.range(batch)[:, None] * n_gt, [-1])
    # Nearest: each target cell takes the value of the pixel its centre falls in (0 or 1), so
    # a small object's mask is not eroded by interpolating with the background around it.
    crops = roi_align(flat, tf.reshape(boxes, [-1, 4]), index, MASK_SIZE, sampling=1,
                      method="nearest")
    return tf.reshape(crops[..., 0], [batch, -1, MASK_SIZE, MASK_SIZE])


def _huber(x):
    """Smooth L1, the paper's box loss: quadratic below 1, linear above."""
    x = tf.abs(x)
    return tf.where(x < 1.0, 0.5 * x * x, x - 0.5)


def _weighted_mean(weights, values):
    """Sum ``values`` where ``weights`` (0/1) say, divided by how many they pick (at least 1)."""
    weights = tf.cast(weights, tf.float32)
    return tf.reduce_sum(weights * values) / tf.maximum(tf.reduce_sum(weights), 1.0)


def compute_losses(model, images, gt_boxes, gt_labels, gt_masks, seed, training=True):
    """Return the five Mask R-CNN losses of one batch, as a dict of scalars (summed to train).

    ``rpn_class``: objectness, binary cross-entropy over the sampled anchors; ``rpn_box``:
    Huber on the deltas of the positive anchors; ``class``: softmax cross-entropy over the
    sampled RoIs; ``box``: Huber on the true class's deltas of the positive RoIs; ``mask``:
    per-pixel binary cross-entropy of the true class's mask, averaged over positive RoIs.
    """
    seeds = tf.random.experimental.stateless_split(seed, 2)
    features = model.features(images, training=training)

    # The RPN: anchors labelled and sampled by IoU with the true boxes.
    logits, deltas = model.rpn(features, training=training)
    positive, negative, targets = rpn_targets(model.anchors, gt_boxes, gt_labels, seeds[0])
    objectness = tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(positive, tf.float32), logits)
    rpn_class = _weighted_mean(positive | negative, objectness)
    rpn_box = _weighted_mean(tf.cast(positive, tf.float32)[..., None], _huber(deltas - targets))

    # The box head: proposals (and the true boxes) labelled and sampled by IoU.
    proposals, _, valid = model.proposals(logits, deltas, pre_nms=600, post_nms=64)
    rois, weight, labels, matched, is_positive = roi_targets(proposals, valid, gt_boxes,
                                                             gt_labels, seeds[1])
    class_logits, box_deltas = model.classify_boxes(features, rois, training=training)
    head_class = _weighted_mean(
        weight, tf.nn.sparse_softmax_cross_entropy_with_logits(labels, class_logits))
    box_targets = encode_boxes(tf.gather(gt_boxes, matched, batch_dims=1), rois)
    chosen = tf.gather(box_deltas, labels, batch_dims=2)  # the deltas of the true class
    head_box = _weighted_mean(tf.cast(is_positive, tf.float32)[..., None],
                              _huber(chosen - box_targets))

    # The mask head: positive RoIs only, which come first (at most MAX_POSITIVE_ROIS per image).
    n_mask = MAX_POSITIVE_ROIS
    mask_rois, mask_positive = rois[:, :n_mask], is_positive[:, :n_mask]
    target = mask_targets(gt_masks, mask_rois, matched[:, :n_mask])
    predicted = model.mask_logits(features, mask_rois, training=training)
    true_class = tf.maximum(labels[:, :n_mask] - 1, 0)[..., None]  # no background channel
    predicted = tf.gather(predicted, true_class, axis=4, batch_dims=2)[..., 0]
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(target, predicted)
    mask = _weighted_mean(mask_positive, tf.reduce_mean(per_pixel, [2, 3]))
    return {"rpn_class": rpn_class, "rpn_box": rpn_box, "class": head_class, "box": head_box,
            "mask": mask}


# ----------------------------------------------------------- 8. training

def training_batches(seed, batch_size, steps):
    """Yield (step, images, boxes, labels, masks) of fresh training scenes, the same for a seed."""
    order = np.random.default_rng(seed).permutation(len(scenes.TRAIN_SEEDS))
    for step in range(steps):
        picked = order[(np.arange(batch_size) + step * batch_size) % len(order)]
        yield (step, *scenes.make_batch(scenes.TRAIN_SEEDS[i] for i in picked))


def make_optimizer(steps, learning_rate, warmup, weight_decay):
    """AdamW with linear warm-up and cosine decay, gradients clipped for the first steps' outliers.

    The weight decay applies to every variable it is given, batch normalisation's included.
    """
    warmup = min(warmup, steps // 4)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(steps - warmup, 1), alpha=0.01, warmup_target=learning_rate, warmup_steps=warmup)
    return keras.optimizers.AdamW(schedule, weight_decay=weight_decay, global_clipnorm=5.0)


def train(steps=None, seed=None, weights=WEIGHTS, log_every=100, batch_size=None, log=print):
    """Train the small Mask R-CNN from scratch with RECIPE; save the weights; return the history.

    Returns (model, record): the record holds the recipe, the mean losses every ``log_every``
    steps and the training time. Deterministic with TensorFlow's op determinism on.
    """
    chosen = {"steps": steps, "seed": seed, "batch_size": batch_size}
    recipe = dict(RECIPE, **{k: v for k, v in chosen.items() if v is not None})
    keras.utils.set_random_seed(recipe["seed"])
    model = SmallMaskRCNN()
    optimizer = make_optimizer(recipe["steps"], recipe["learning_rate"], recipe["warmup"],
                               recipe["weight_decay"])

    @tf.function
    def step_fn(images, boxes, labels, masks, step):
        seed_pair = tf.stack([tf.constant(recipe["seed"], tf.int64), tf.cast(step, tf.int64)])
        with tf.GradientTape() as tape:
            losses = compute_losses(model, images, boxes, labels, masks, seed_pair)
            total = tf.add_n(list(losses.values()))
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return losses

    history, start, running = [], time.perf_counter(), {}
    batches = training_batches(recipe["seed"], recipe["batch_size"], recipe["steps"])
    for step, images, boxes, labels, masks in batches:
        # The step as a tensor, so the function is traced once.
        losses = step_fn(images, boxes, labels, masks, tf.constant(step, tf.int64))
        for key, value in losses.items():
            running[key] = running.get(key, 0.0) + float(value)
        if (step + 1) % log_every == 0 or step + 1 == recipe["steps"]:
            n = log_every if (step + 1) % log_every == 0 else (step + 1) % log_every
            mean = {k: round(v / n, 4) for k, v in running.items()}
            seconds = time.perf_counter() - start
            history.append({"step": step + 1, "seconds": round(seconds, 1), **mean})
            log(f"step {step + 1}/{recipe['steps']}  {seconds:6.0f} s  "
                + "  ".join(f"{k} {v:.3f}" for k, v in mean.items()))
            running = {}
    if weights is not None:
        save_weights(model, weights)
    return model, {"recipe": recipe, "history": history,
                   "training_seconds": round(time.perf_counter() - start, 1)}


# ----------------------------------------------------------- the weights

def save_weights(model, weights):
    """Save ``model``'s weights to ``weights`` through a temporary file: no half file on a crash."""
    # Keras wants the .weights.h5 ending; shipped files are readable by all.
    return download.write_atomically(weights, lambda part: model.save_weights(str(part)),
                                     suffix=".weights.h5", mode=0o644)


class WeightsError(download.DataError):
    """The small Mask R-CNN's weights file is missing or does not fit the code."""


def load_model(weights=WEIGHTS):
    """Return a SmallMaskRCNN with ``weights`` loaded; say how to rebuild them if they are bad."""
    weights = Path(weights)
    rebuild = f"Rebuild them with `{TRAIN_COMMAND}` (about 7 minutes on 2 CPU cores)."
    if not weights.is_file():
        raise WeightsError(f"The small Mask R-CNN's weights {weights} are missing. {rebuild}")
    model = SmallMaskRCNN()
    try:
        model.load_weights(str(weights))
    except Exception as e:  # h5py and Keras raise many kinds for a damaged or foreign file
        raise WeightsError(f"Could not load the small Mask R-CNN's weights {weights}: "
                           f"{type(e).__name__}: {str(e).strip()[:300]}. {rebuild}") from e
    return model


def shipped_results():
    """Return the record of how the shipped weights were trained and how they scored."""
    return json.loads(RESULTS.read_text())
