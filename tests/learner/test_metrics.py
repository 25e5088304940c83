import warnings

import numpy as np
import pytest

from helpers import keras_metrics, metrics

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


def test_scores_are_the_same_for_a_normalised_confusion_matrix():
    # IoU and Dice are ratios of counts, so dividing every count by the total changes nothing;
    # the denominators then fall below 1 (class 0: (1 + 1 + 1) / 6 = 0.5).
    cm = metrics.confusion_matrix(TRUTH, PRED, 4)
    scaled = metrics.Scores.from_confusion(cm / cm.sum())
    np.testing.assert_allclose(scaled.iou[:3], [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(scaled.dice[:3], [2 / 4, 4 / 5, 2 / 3])
    assert np.isnan(scaled.iou[3])
    assert scaled.pixel_accuracy == pytest.approx(4 / 6)


def test_no_pixels_at_all_gives_nan_everywhere_without_warnings():
    empty = np.zeros((0, 5), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice" or division warnings
        scores = metrics.segmentation_scores(empty, empty, 3)
        assert np.isnan(scores.iou).all() and np.isnan(scores.dice).all()
        assert np.isnan(scores.mean_iou) and np.isnan(scores.mean_dice)
        assert np.isnan(scores.pixel_accuracy)
    np.testing.assert_array_equal(scores.confusion, np.zeros((3, 3)))


def test_unsigned_labels_are_counted_like_signed_ones():
    truth = np.array([[0, 1], [1, 1]], np.uint64)
    np.testing.assert_array_equal(metrics.confusion_matrix(truth, truth.astype(np.uint8), 2),
                                  [[1, 0], [0, 3]])
    np.testing.assert_array_equal(metrics.class_counts([(None, truth)], 2), [1, 3])


def test_a_confusion_matrix_must_be_square():
    with pytest.raises(ValueError, match=r"square \(n, n\), not \(2, 3\)"):
        metrics.Scores.from_confusion(np.ones((2, 3), int))


@pytest.mark.parametrize("labels, message", [
    (np.array([[0, 1, 255]]), r"outside 0..2 \(found 0..255\)"),  # e.g. a 255 "void" label
    (np.array([[0, -1]]), r"outside 0..2 \(found -1..0\)"),
    (np.array([[0.0, 1.0]]), "integer class ids, not float64"),
])
def test_class_counts_rejects_what_confusion_matrix_rejects(labels, message):
    with pytest.raises(ValueError, match=message):
        metrics.class_counts([(None, np.array([[0]])), (None, labels)], 3)
    with pytest.raises(ValueError, match=message):
        metrics.confusion_matrix(labels, np.zeros_like(labels, int), 3)


def test_majority_baseline_needs_labelled_training_pixels():
    with pytest.raises(ValueError, match="no labelled pixels"):
        metrics.majority_baseline([(None, np.zeros((0, 4), int))], [(None, np.zeros((1, 1), int))], 2)


class FixedModel:
    """Predicts a given label map per image, as one-hot probabilities."""

    def __init__(self, n_classes, table):
        self.n_classes, self.table = n_classes, table

    def predict_on_batch(self, images):
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
    lines = text.splitlines()
    assert lines[0] == "class     IoU    Dice"
    assert lines[1] == "a       0.333   0.500"  # names shorter than "class" stay aligned
    assert lines[4] == "d         nan     nan"
    assert lines[5].split() == ["mean", "0.500", "0.656"]  # (1/2 + 4/5 + 2/3) / 3 = 0.6556
    assert lines[6] == "pixel accuracy 0.667"


def test_table_needs_one_name_per_class():
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        metrics.segmentation_scores(TRUTH, PRED, 4).table(["a", "b", "c"])


def _scores_for(labels, n_classes, rng):
    """Random per-pixel class scores whose argmax is ``labels``."""
    scores = rng.random((*labels.shape, n_classes)).astype("float32")
    np.put_along_axis(scores, labels[..., None], 2.0, axis=-1)
    return scores


def test_mean_iou_metric_matches_segmentation_scores_over_an_epoch():
    # Five classes: 3 is in neither truth nor prediction (left out of the mean), 4 is
    # predicted but never true (IoU 0). Two batches whose per-batch mean IoUs differ from the
    # pooled one, so a mean of batch means would not match.
    rng = np.random.default_rng(0)
    truth = np.array([[[0, 0, 1], [1, 2, 2]], [[2, 2, 2], [0, 1, 1]]])
    pred = np.array([[[0, 1, 1], [1, 2, 0]], [[2, 4, 2], [0, 0, 1]]])
    metric = keras_metrics.mean_iou_metric(5)
    assert metric.name == "mean_iou"
    for t, p in zip(truth, pred):
        metric.update_state(t[None], _scores_for(p[None], 5, rng))
    expected = metrics.segmentation_scores(truth, pred, 5)
    assert np.isnan(expected.iou[3]) and expected.iou[4] == 0
    batch_means = [metrics.segmentation_scores(t, p, 5).mean_iou for t, p in zip(truth, pred)]
    assert abs(np.mean(batch_means) - expected.mean_iou) > 0.01
    assert float(metric.result()) == pytest.approx(expected.mean_iou, abs=1e-6)
    metric.reset_state()
    metric.update_state(TRUTH, _scores_for(PRED, 4 + 1, rng))
    assert float(metric.result()) == pytest.approx(metrics.segmentation_scores(TRUTH, PRED, 5).mean_iou, abs=1e-6)


def test_mean_iou_metric_tracks_training_by_name():
    import keras

    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(3, 1, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", metrics=[keras_metrics.mean_iou_metric(3)])
    x = np.random.default_rng(1).random((4, 4, 4, 3)).astype("float32")
    y = np.random.default_rng(2).integers(0, 3, (4, 4, 4))
    logs = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    expected = metrics.segmentation_scores(y, metrics.predict_labels(model, x), 3).mean_iou
    assert logs["mean_iou"] == pytest.approx(expected, abs=1e-6)


def test_predict_labels_predicts_in_batches_without_a_pipeline():
    import keras

    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(3, 1, activation="softmax")])
    x = np.random.default_rng(1).random((70, 4, 4, 3)).astype("float32")
    expected = np.argmax(model.predict(x, verbose=0), axis=-1)  # Keras on the array itself

    seen = []

    class Recording:
        def predict_on_batch(self, batch):
            seen.append(len(batch))
            return model.predict_on_batch(batch)

    np.testing.assert_array_equal(metrics.predict_labels(Recording(), x), expected)
    assert seen == [32, 32, 6]  # Keras' own batch size for predict
    with pytest.raises(ValueError, match="no images"):
        metrics.predict_labels(Recording(), x[:0])


# CamVid's void (11) beside 11 scored classes 0..10, and a border band inside the classes.
def test_ignored_pixels_are_not_counted_whatever_was_predicted_there():
    truth = np.array([[0, 0, 11], [1, 11, 1]])
    pred = np.array([[0, 1, 0], [1, 1, 0]])
    cm = metrics.confusion_matrix(truth, pred, 2, ignore_class=11)
    np.testing.assert_array_equal(cm, [[1, 1], [1, 1]])  # 4 of 6 pixels counted
    scores = metrics.segmentation_scores(truth, pred, 2, ignore_class=11)
    np.testing.assert_allclose(scores.iou, [1 / 3, 1 / 3])  # TP/(TP+FP+FN) = 1/(1+1+1) each
    assert scores.pixel_accuracy == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match=r"outside 0..1 or 11 \(ignored\)"):
        metrics.confusion_matrix(np.array([[2]]), np.array([[0]]), 2, ignore_class=11)
    with pytest.raises(ValueError, match="outside 0..1"):
        metrics.confusion_matrix(truth, pred, 2)  # without it, 11 is an error


def test_an_ignored_class_among_the_scored_ones_is_left_out_of_the_means():
    # Pets: 0 pet, 1 background, 2 the border band, ignored; predicting it elsewhere is an error.
    truth = np.array([[0, 0, 2, 1], [1, 1, 2, 0]])
    pred = np.array([[0, 2, 2, 1], [1, 0, 0, 0]])
    scores = metrics.segmentation_scores(truth, pred, 3, ignore_class=2)
    # pet: TP 2, FP 1 (a background pixel), FN 1 (predicted border) -> 2/4; background: 2/3
    np.testing.assert_allclose(scores.iou[:2], [2 / 4, 2 / 3])
    assert np.isnan(scores.iou[2]) and np.isnan(scores.dice[2])
    assert scores.mean_iou == pytest.approx((2 / 4 + 2 / 3) / 2)


def test_counts_baseline_and_the_keras_metric_ignore_the_same_pixels():
    truth = np.array([[[0, 0, 11], [1, 11, 1]], [[1, 1, 1], [11, 11, 0]]])
    batches = [(None, t[None]) for t in truth]
    np.testing.assert_array_equal(metrics.class_counts(batches, 2, ignore_class=11), [3, 5])
    majority, baseline = metrics.majority_baseline(batches, batches, 2, ignore_class=11)
    assert majority == 1 and baseline.iou[1] == pytest.approx(5 / 8) and baseline.iou[0] == 0
    pred = np.array([[[0, 1, 0], [1, 1, 0]], [[1, 0, 1], [0, 1, 0]]])
    metric = keras_metrics.mean_iou_metric(11, ignore_class=11)
    metric.update_state(truth, _scores_for(pred, 11, np.random.default_rng(0)))
    expected = metrics.segmentation_scores(truth, pred, 11, ignore_class=11).mean_iou
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
