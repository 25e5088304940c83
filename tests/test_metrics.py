import numpy as np
import pytest

from helpers import metrics

# Hand-computed example, 4 classes; class 3 is in neither truth nor prediction.
TRUTH = np.array([[0, 0, 1], [1, 2, 2]])
PRED = np.array([[0, 1, 1], [1, 2, 0]])


def test_confusion_matrix_counts_pixels_by_true_and_predicted_class():
    cm = metrics.confusion_matrix(TRUTH, PRED, 4)
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 1
    expected[0, 1] = 1
    expected[1, 1] = 2
    expected[2, 2] = 1
    expected[2, 0] = 1
    np.testing.assert_array_equal(cm, expected)


def test_iou_and_dice_match_hand_computed_values():
    scores = metrics.segmentation_scores(TRUTH, PRED, 4)
    # class 0: TP 1, FP 1, FN 1; class 1: TP 2, FP 1, FN 0; class 2: TP 1, FP 0, FN 1.
    np.testing.assert_allclose(scores.iou[:3], [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(scores.dice[:3], [2 / 4, 4 / 5, 2 / 3])
    assert np.isnan(scores.iou[3]) and np.isnan(scores.dice[3])
    assert scores.mean_iou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scores.mean_dice == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert scores.pixel_accuracy == pytest.approx(4 / 6)


def test_class_predicted_but_absent_from_truth_scores_zero_and_counts_in_the_mean():
    truth = np.zeros((2, 2), int)
    pred = np.array([[0, 0], [0, 1]])
    scores = metrics.segmentation_scores(truth, pred, 3)
    assert scores.iou[1] == 0 and scores.dice[1] == 0
    assert np.isnan(scores.iou[2])
    assert scores.mean_iou == pytest.approx((3 / 4 + 0) / 2)


def test_perfect_prediction_scores_one():
    scores = metrics.segmentation_scores(TRUTH, TRUTH, 4)
    assert scores.mean_iou == 1 and scores.mean_dice == 1 and scores.pixel_accuracy == 1


@pytest.mark.parametrize("truth, pred, message", [
    (np.zeros((2, 2), int), np.zeros((2, 3), int), "shape"),
    (np.zeros((2, 2), int), np.full((2, 2), 4), "outside 0..3"),
    (np.full((2, 2), -1), np.zeros((2, 2), int), "outside 0..3"),
    (np.zeros((2, 2), float), np.zeros((2, 2), int), "integer"),
])
def test_bad_inputs_raise_clear_errors(truth, pred, message):
    with pytest.raises(ValueError, match=message):
        metrics.confusion_matrix(truth, pred, 4)


class FixedModel:
    """Predicts a given label map per image, as one-hot probabilities."""

    def __init__(self, n_classes, table):
        self.n_classes, self.table = n_classes, table

    def predict(self, images, verbose=0):
        labels = self.table[np.asarray(images)[:, 0, 0, 0].astype(int)]
        return np.eye(self.n_classes)[labels]


def test_evaluate_dataset_accumulates_over_batches_like_one_big_evaluation():
    rng = np.random.default_rng(0)
    truths = rng.integers(0, 3, (5, 4, 4))
    preds = rng.integers(0, 3, (5, 4, 4))
    images = np.arange(5, dtype=float)[:, None, None, None] * np.ones((5, 4, 4, 1))
    batches = [(images[i:i + 2], truths[i:i + 2]) for i in range(0, 5, 2)]
    scores = metrics.evaluate_dataset(FixedModel(3, preds), batches, 3)
    whole = metrics.segmentation_scores(truths, preds, 3)
    np.testing.assert_array_equal(scores.confusion, whole.confusion)
    np.testing.assert_allclose(scores.iou, whole.iou)


def test_majority_baseline_predicts_the_most_frequent_training_class():
    train = [(None, np.array([[2, 2, 1]])), (None, np.array([[2, 0, 2]]))]
    test = [(None, np.array([[2, 1], [1, 1]]))]
    majority, scores = metrics.majority_baseline(train, test, 3)
    assert majority == 2
    assert scores.pixel_accuracy == pytest.approx(1 / 4)
    assert scores.iou[2] == pytest.approx(1 / 4)
    assert scores.iou[1] == 0
    np.testing.assert_array_equal(metrics.class_counts(train, 3), [1, 1, 4])


def test_table_lists_every_class_and_the_means():
    text = metrics.segmentation_scores(TRUTH, PRED, 4).table(["a", "b", "c", "d"])
    assert text.splitlines()[1].split() == ["a", "0.333", "0.500"]
    assert "mean" in text and "pixel accuracy 0.667" in text
