"""The assignment's rule: what a model must map, how it is scored, and when it passes.

Taught in notebook 4. A model maps (64, 84, 1) images scaled to [-1, 1] to (64, 84, 11)
per-pixel class scores; it is scored with the course's IoU (``helpers.metrics``) over a whole
test set; grade = 10 x the sum of the ten digit IoUs (a digit the test images never show and
the model never predicts counts 0); pass: grade above 60, decided on the grade rounded to 2
decimals as printed. NumPy only: the grader (the ``grader`` package, ``python -m grader``)
imports this module in its main process, which never imports TensorFlow.

``python -m helpers.grading`` still runs the grader, and says where it lives.
"""

import numpy as np

from helpers import m2nist, metrics

PASS_MARK = 60.0
DIGITS = tuple(range(10))
INPUT_SHAPE = (*m2nist.IMAGE_SHAPE, 1)
OUTPUT_SHAPE = (*m2nist.IMAGE_SHAPE, m2nist.N_CLASSES)


class InvalidSubmission(ValueError):
    """A model or file that cannot be graded, with the reason in words."""


def grade(scores):
    """Return 10 x the sum of the ten digit IoUs of a ``metrics.Scores`` (a digit never seen counts 0)."""
    return float(10 * np.nansum(np.asarray(scores.iou)[list(DIGITS)]))


def passed(grade_value):
    """Return True when a grade, rounded to 2 decimals, is above the pass mark."""
    # Decided on the printed value, so that "Grade: 60.00" can never read PASS.
    return round(grade_value, 2) > PASS_MARK


def _shape(tensor):
    return tuple(None if d is None else int(d) for d in tensor.shape)


def _fits(got, want):
    return len(got) == len(want) and all(g is None or g == w for g, w in zip(got, want))


def check_model_shapes(model):
    """Raise InvalidSubmission unless the model maps (64, 84, 1) images to (64, 84, 11) scores."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InvalidSubmission(f"the model has {len(model.inputs)} inputs and "
                                f"{len(model.outputs)} outputs; it must have one of each")
    got_in, got_out = _shape(model.inputs[0])[1:], _shape(model.outputs[0])[1:]
    # None (any size) is fine where the course's size fits: a fully convolutional model.
    if not _fits(got_in, INPUT_SHAPE):
        raise InvalidSubmission(f"the model's input shape is {got_in}; it must be {INPUT_SHAPE} "
                                "(64 x 84 grayscale images with a channel axis)")
    if not _fits(got_out, OUTPUT_SHAPE):
        raise InvalidSubmission(f"the model's output shape is {got_out}; it must be {OUTPUT_SHAPE} "
                                "(one score per class - 10 digits and background - per pixel)")


def score_model(model, images, labels):
    """Score a model's predictions on uint8 images against label maps; return ``metrics.Scores``."""
    scaled = m2nist.scale_images(images)
    # metrics.predict_labels drops the class axis, and with it the check of 11 scores per
    # pixel: a model with 10 would never predict background yet be scored. One image shows
    # it, run eagerly (model.predict would trace a graph for this one call).
    probe = np.asarray(model(scaled[:1], training=False))
    if probe.shape[1:] != OUTPUT_SHAPE:
        raise InvalidSubmission(f"on the test images the model's output shape is "
                                f"{probe.shape[1:]}; it must be {OUTPUT_SHAPE}")
    predicted = metrics.predict_labels(model, scaled)
    return metrics.segmentation_scores(np.asarray(labels), predicted, m2nist.N_CLASSES)


if __name__ == "__main__":
    import sys

    from grader.cli import main  # the one place the learner package names the grader

    print("The grader is its own package now: python -m grader (running it).", file=sys.stderr)
    sys.exit(main())
