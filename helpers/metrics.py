"""Per-class IoU and Dice from a confusion matrix: the course's only formulas for them.

Convention, used everywhere in the course (notebooks, grader, tests):

- IoU_c = TP / (TP + FP + FN) and Dice_c = 2 TP / (2 TP + FP + FN), counted over all
  pixels of all images evaluated together.
- A class that occurs in neither the truth nor the prediction has no IoU or Dice: its
  value is NaN and it is left out of the means. A class that is predicted but absent from
  the truth scores 0 (every predicted pixel is a false positive).

NumPy only, so that the grader's main process scores without importing TensorFlow; the
Keras metric and the Dice loss built on this convention are in ``helpers.keras_metrics``.
First taught in notebook 1.
"""

from dataclasses import dataclass

import numpy as np


def check_labels(labels, n_classes, name="labels", ignore_class=None):
    """Return ``labels`` as an array after checking it holds integer class ids in 0..n-1
    (or ``ignore_class``, the id of pixels that are not scored, such as CamVid's void)."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"The {name} must hold integer class ids, not {labels.dtype}.")
    scored = labels if ignore_class is None else labels[labels != ignore_class]
    if scored.size and (scored.min() < 0 or scored.max() >= n_classes):
        also = "" if ignore_class is None else f" or {ignore_class} (ignored)"
        raise ValueError(f"The {name} holds class ids outside 0..{n_classes - 1}{also} "
                         f"(found {scored.min()}..{scored.max()}).")
    return labels


def confusion_matrix(y_true, y_pred, n_classes, ignore_class=None):
    """Count pixels by (true class, predicted class) into an (n, n) int64 matrix.

    Pixels whose truth is ``ignore_class`` are not counted at all, whatever was predicted
    there: CamVid's void (11, beside 11 scored classes 0..10), or the pets' border band.
    """
    y_true = check_labels(y_true, n_classes, "truth", ignore_class)
    y_pred = check_labels(y_pred, n_classes, "prediction")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"Truth {y_true.shape} and prediction {y_pred.shape} differ in shape.")
    if ignore_class is not None:
        scored = y_true != ignore_class
        y_true, y_pred = y_true[scored], y_pred[scored]
    index = y_true.astype(np.int64).ravel() * n_classes + y_pred.astype(np.int64).ravel()
    return np.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(numerator, denominator):
    """Divide elementwise, giving NaN where the denominator is 0 (a class never seen)."""
    # Divide by the denominator itself, not max(denominator, 1): a normalised confusion
    # matrix (cm / cm.sum()) has denominators below 1 and must give the same scores.
    return np.divide(numerator, denominator, out=np.full(np.shape(numerator), np.nan),
                     where=denominator > 0)


def iou_per_class(cm):
    """Return each class's IoU from a confusion matrix (NaN for classes never seen)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    return _ratio(tp, cm.sum(0) + cm.sum(1) - tp)


def dice_per_class(cm):
    """Return each class's Dice coefficient from a confusion matrix (NaN for classes never seen)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    return _ratio(2 * tp, cm.sum(0) + cm.sum(1))


def _nanmean(values):
    # np.nanmean of all-NaN values warns "Mean of empty slice"; no class seen is simply NaN.
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


@dataclass
class Scores:
    """Per-class IoU and Dice, their means and the pixel accuracy of one evaluation."""

    confusion: np.ndarray
    iou: np.ndarray
    dice: np.ndarray

    @classmethod
    def from_confusion(cls, cm, ignore_class=None):
        """Score an (n, n) confusion matrix; a class absent from truth and prediction gets NaN,
        and so does ``ignore_class`` when it is one of the n (it is then left out of the means)."""
        cm = np.asarray(cm)
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
            raise ValueError(f"A confusion matrix must be square (n, n), not {cm.shape}.")
        iou, dice = iou_per_class(cm), dice_per_class(cm)
        if ignore_class is not None and 0 <= ignore_class < len(cm):
            iou[ignore_class] = dice[ignore_class] = np.nan
        return cls(cm, iou, dice)

    @property
    def mean_iou(self):
        """Return the mean IoU over the classes seen, leaving out NaN (absent) classes."""
        return _nanmean(self.iou)

    @property
    def mean_dice(self):
        """Return the mean Dice over the classes seen, leaving out NaN (absent) classes."""
        return _nanmean(self.dice)

    @property
    def pixel_accuracy(self):
        """Return the fraction of pixels classified correctly (NaN when there are no pixels)."""
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else float("nan")

    def table(self, class_names):
        """Return the scores as a text table, one row per class."""
        if len(class_names) != len(self.iou):
            raise ValueError(f"Got {len(class_names)} class names for {len(self.iou)} classes.")
        width = max(len("class"), *(len(n) for n in class_names))
        rows = [f"{'class':<{width}}  {'IoU':>6}  {'Dice':>6}"]
        for name, iou, dice in zip(class_names, self.iou, self.dice):
            rows.append(f"{name:<{width}}  {iou:6.3f}  {dice:6.3f}")
        rows.append(f"{'mean':<{width}}  {self.mean_iou:6.3f}  {self.mean_dice:6.3f}")
        rows.append(f"pixel accuracy {self.pixel_accuracy:.3f}")
        return "\n".join(rows)


def segmentation_scores(y_true, y_pred, n_classes, ignore_class=None):
    """Score integer label maps against integer predictions of the same shape (pixels whose
    truth is ``ignore_class`` not scored)."""
    return Scores.from_confusion(confusion_matrix(y_true, y_pred, n_classes, ignore_class),
                                 ignore_class)


def predict_labels(model, images, batch_size=32):
    """Return the model's per-pixel class ids (argmax over the last axis) for a batch.

    The images go through ``model.predict_on_batch`` in batches of ``batch_size`` (Keras' own
    default for ``predict``): the same traced function ``predict`` runs, without the tf.data
    pipeline ``predict`` would wrap an array in, whose autotuner can keep it waiting after the
    last batch (``helpers.datasets.without_autotune`` says why).
    """
    images = np.asarray(images)
    if not len(images):
        raise ValueError("There are no images to predict.")
    return np.concatenate([np.argmax(model.predict_on_batch(images[i:i + batch_size]), axis=-1)
                           for i in range(0, len(images), batch_size)])


def evaluate_dataset(model, dataset, n_classes, ignore_class=None):
    """Score a segmentation model over a batched dataset of (image, sparse label)."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    for images, labels in dataset:
        cm += confusion_matrix(np.asarray(labels), predict_labels(model, images), n_classes,
                               ignore_class)
    return Scores.from_confusion(cm, ignore_class)


def class_counts(dataset, n_classes, ignore_class=None):
    """Count the pixels of each class in a dataset of (image, sparse label), ``ignore_class`` left out."""
    counts = np.zeros(n_classes, dtype=np.int64)
    for _, labels in dataset:
        labels = check_labels(labels, n_classes, ignore_class=ignore_class)
        if ignore_class is not None:
            labels = labels[labels != ignore_class]
        # bincount refuses uint64 ("cannot cast safely"), so count in int64.
        counts += np.bincount(labels.astype(np.int64).ravel(), minlength=n_classes)[:n_classes]
    return counts


def majority_baseline(train_dataset, test_dataset, n_classes, ignore_class=None):
    """Score the trivial predictor that outputs the training set's most frequent class."""
    counts = class_counts(train_dataset, n_classes, ignore_class)
    if not counts.any():
        raise ValueError("The training set holds no labelled pixels: there is no majority class.")
    majority = int(np.argmax(counts))
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    for _, labels in test_dataset:
        labels = np.asarray(labels)
        cm += confusion_matrix(labels, np.full_like(labels, majority), n_classes, ignore_class)
    return majority, Scores.from_confusion(cm, ignore_class)
