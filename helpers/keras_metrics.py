"""The course's IoU and Dice as Keras objects: a mean-IoU metric for ``fit``, and the Dice loss.

The counting behind them is ``helpers.metrics`` (NumPy); these are what ``compile`` takes.
Taught in notebooks 1 and 2.
"""

import keras
from keras import ops


def mean_iou_metric(n_classes, name="mean_iou", ignore_class=None):
    """Return a Keras metric for mean IoU over sparse labels and per-pixel class scores.

    It follows ``helpers.metrics``' convention: one confusion matrix accumulated over the whole
    epoch (not a mean of per-batch IoUs), and classes absent from both truth and prediction
    left out of the mean. ``keras.metrics.MeanIoU`` computes exactly that once it takes the
    argmax of the scores (``sparse_y_pred=False``); ``tests/learner/test_metrics.py`` checks it
    against ``segmentation_scores``. Pixels whose truth is ``ignore_class`` are not counted
    (CamVid's void: ``ignore_class=11`` beside 11 scored classes). Being a built-in Keras
    class, it saves and reloads with a model.
    """
    return keras.metrics.MeanIoU(num_classes=n_classes, sparse_y_pred=False, name=name,
                                 ignore_class=ignore_class)


def dice_loss(y_true, y_pred, smooth=1.0):
    """Return the soft Dice loss of a batch: 1 - the mean over classes of each class's soft Dice.

    Taught in notebook 2, beside cross-entropy on the pets' three classes. ``y_true`` holds class
    ids, (batch, H, W) or (batch, H, W, 1); ``y_pred`` per-pixel class probabilities (batch, H,
    W, C), a softmax output. Each class's soft Dice is ``dice_per_class`` with probabilities in
    place of counts, over all pixels of the batch together:
    ``(2 * sum(p_c * [y == c]) + smooth) / (sum(p_c) + sum([y == c]) + smooth)``. Every class
    weighs the same in the mean however few pixels it has, unlike cross-entropy, which sums over
    pixels. ``smooth`` keeps a class absent from the batch and not predicted at 1 instead of 0/0.

    A model compiled with it saves to ``.keras`` as usual; to load it with its compile state,
    pass ``custom_objects={"dice_loss": keras_metrics.dice_loss}`` (or load with ``compile=False``).
    """
    y_pred = ops.cast(y_pred, "float32")  # a mixed-precision model's output may be 16-bit
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    if len(y_true.shape) != len(y_pred.shape) - 1:
        raise ValueError(f"dice_loss takes class ids (batch, H, W) and probabilities (batch, H, W, "
                         f"C); got labels {tuple(y_true.shape)} and scores {tuple(y_pred.shape)}.")
    truth = ops.one_hot(ops.cast(y_true, "int32"), y_pred.shape[-1], dtype="float32")
    pixels = tuple(range(len(y_pred.shape) - 1))  # batch and image axes: all but the classes
    overlap = ops.sum(truth * y_pred, axis=pixels)
    sizes = ops.sum(truth, axis=pixels) + ops.sum(y_pred, axis=pixels)
    return 1.0 - ops.mean((2.0 * overlap + smooth) / (sizes + smooth))
