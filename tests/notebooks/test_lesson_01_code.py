"""Notebook 1 writes its own confusion matrix, IoU and Dice, baseline and argmax (the lesson),
and trains with void left out; they must give exactly what the course's helpers give, which the
grader, the benchmarks and the other notebooks use."""

import ast

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import datasets, keras_metrics, metrics, models
from maintainer import notebook_code

NOTEBOOK = "01_fcn8_camvid.ipynb"
VOID = datasets.CAMVID_VOID
N_CLASSES = len(datasets.CAMVID_CLASSES) - 1  # the classes the notebook's model predicts


def notebook_functions():
    """Define the notebook's own functions (only their ``def``s) with the notebook's imports."""
    namespace = {"np": np, "keras": keras, "layers": keras.layers}
    for name, source in notebook_code.function_cells(notebook_code.read_notebook(NOTEBOOK)).items():
        node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)
        exec(compile(ast.Module([node], type_ignores=[]), f"{NOTEBOOK}:{name}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def lesson():
    return notebook_functions()


def street_labels(seed, shape=(3, 8, 10)):
    """Random CamVid-like truth (void included) and predictions (never void)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, N_CLASSES + 1, shape)
    prediction = np.where(rng.random(shape) < 0.6, np.minimum(truth, N_CLASSES - 1),
                          rng.integers(0, N_CLASSES, shape))
    truth[0, 0, :3] = VOID  # some void for certain
    return truth, prediction


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_notebooks_confusion_iou_and_dice_are_the_course_metrics(lesson, seed):
    truth, prediction = street_labels(seed)
    prediction[truth == 3] = 0  # class 3 never predicted where it is: IoU 0
    truth[truth == 7] = 6  # class 7 absent from the truth (and, below, the prediction): NaN
    prediction[prediction == 7] = 6
    cm = lesson["count_confusion"](truth, prediction, N_CLASSES, ignore_class=VOID)
    expected = metrics.confusion_matrix(truth, prediction, N_CLASSES, ignore_class=VOID)
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == np.sum(truth != VOID)  # void pixels are not counted at all
    iou, dice = lesson["iou_and_dice"](cm)
    np.testing.assert_array_equal(iou, metrics.iou_per_class(expected))  # NaN where NaN
    np.testing.assert_array_equal(dice, metrics.dice_per_class(expected))
    scores = metrics.segmentation_scores(truth, prediction, N_CLASSES, ignore_class=VOID)
    assert np.isnan(iou[7]) and iou[3] == 0
    assert np.nanmean(iou) == pytest.approx(scores.mean_iou)


def test_the_notebooks_hand_example_is_what_the_helpers_count(lesson):
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 1]])
    prediction = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [2, 2, 1, 1]])
    cm = lesson["count_confusion"](truth, prediction, 3)
    np.testing.assert_array_equal(cm, metrics.confusion_matrix(truth, prediction, 3))
    iou, dice = lesson["iou_and_dice"](cm)
    np.testing.assert_allclose(iou, [4 / 5, 4 / 6, 2 / 3])
    np.testing.assert_allclose(dice, [8 / 9, 8 / 10, 4 / 5])


def test_the_notebooks_majority_baseline_is_the_helpers(lesson):
    # The notebook counts every label value (void too), takes the commonest of the 11 classes,
    # and scores "always that class" with its own functions, void left out.
    train, _ = street_labels(3, (4, 6, 8))
    train[:, :4] = VOID  # void the commonest value: it must not become the majority
    test, _ = street_labels(4, (3, 6, 8))
    as_batches = lambda labels: tf.data.Dataset.from_tensor_slices(  # noqa: E731
        (np.zeros((*labels.shape, 3), "float32"), labels.astype("int32"))).batch(2)
    counts = metrics.class_counts(as_batches(train), len(datasets.CAMVID_CLASSES))
    assert counts.argmax() == VOID
    majority = int(np.argmax(counts[:N_CLASSES]))
    always = np.full_like(test, majority)
    iou, _ = lesson["iou_and_dice"](lesson["count_confusion"](test, always, N_CLASSES, ignore_class=VOID))
    accuracy = np.mean(test[test != VOID] == majority)
    helper_majority, baseline = metrics.majority_baseline(as_batches(train), as_batches(test),
                                                          N_CLASSES, ignore_class=VOID)
    assert majority == helper_majority
    assert accuracy == pytest.approx(baseline.pixel_accuracy)
    assert np.nanmean(iou) == pytest.approx(baseline.mean_iou)


@pytest.fixture(scope="module")
def small_fcn(lesson):
    keras.utils.set_random_seed(0)
    model = lesson["fcn"](models.vgg16_encoder((64, 64, 3), weights=None), N_CLASSES, "8s", 8)
    models.init_bilinear(model)
    return model


def test_the_notebooks_argmax_of_the_probabilities_is_predict_labels(small_fcn):
    images = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    probabilities = small_fcn.predict(images, verbose=0)
    assert probabilities.shape == (3, 64, 64, N_CLASSES)  # 11 scores: void is not predicted
    np.testing.assert_array_equal(np.argmax(probabilities, axis=-1),
                                  metrics.predict_labels(small_fcn, images))


def test_the_loss_leaves_void_pixels_out():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(N_CLASSES), (2, 4, 5)).astype("float32")
    labels = rng.integers(0, N_CLASSES + 1, (2, 4, 5))
    labels[0, 0] = VOID
    loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=VOID)(labels, probabilities)
    scored = labels != VOID
    expected = -np.mean(np.log(np.take_along_axis(probabilities[scored],
                                                  labels[scored][:, None], axis=-1)))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_the_notebooks_trained_fcn_saves_and_reloads_safely(small_fcn, tmp_path):
    # As train_fcn compiles it: void ignored by the loss and the metric, both built into Keras,
    # so the saved model reloads with safe_mode=True and predicts the same labels.
    small_fcn.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=VOID),
                      metrics=[keras_metrics.mean_iou_metric(N_CLASSES, ignore_class=VOID)])
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    labels = rng.integers(0, N_CLASSES + 1, (2, 64, 64)).astype("int32")  # void included
    small_fcn.fit(images, labels, epochs=1, verbose=0)
    path = tmp_path / "fcn8s.keras"
    small_fcn.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(metrics.predict_labels(reloaded, images),
                                  metrics.predict_labels(small_fcn, images))
