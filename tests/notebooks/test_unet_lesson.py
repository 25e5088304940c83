"""Notebook 2's additions: the Dice loss, the per-epoch prediction callback, the static prediction
grid, and the benchmark that compares the losses across seeds."""

import matplotlib

matplotlib.use("Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import keras_metrics, metrics, viz# noqa: E402

# A 2x2 image, 3 classes: truth and softmax-like probabilities, worked by hand below.
TRUTH = np.array([[[0, 1], [2, 2]]])
PROBS = np.array([[[[0.8, 0.1, 0.1], [0.2, 0.6, 0.2]],
                   [[0.1, 0.2, 0.7], [0.5, 0.0, 0.5]]]], np.float32)


def test_dice_loss_matches_a_hand_computed_value():
    # class 0: overlap .8, sum p 1.6, 1 pixel -> 2(.8)/(1.6+1) = 1.6/2.6
    # class 1: overlap .6, sum p 0.9, 1 pixel -> 1.2/1.9
    # class 2: overlap 1.2, sum p 1.5, 2 pixels -> 2.4/3.5
    dice = np.array([1.6 / 2.6, 1.2 / 1.9, 2.4 / 3.5])
    assert float(keras_metrics.dice_loss(TRUTH, PROBS, smooth=0.0)) == pytest.approx(1 - dice.mean(), abs=1e-6)
    smoothed = np.array([2.6 / 3.6, 2.2 / 2.9, 3.4 / 4.5])  # smooth=1 on top and bottom
    assert float(keras_metrics.dice_loss(TRUTH, PROBS)) == pytest.approx(1 - smoothed.mean(), abs=1e-6)
    # Labels with a trailing channel axis, as masks often come, give the same loss.
    assert float(keras_metrics.dice_loss(TRUTH[..., None], PROBS)) == pytest.approx(1 - smoothed.mean(), abs=1e-6)


def test_dice_loss_of_hard_predictions_is_one_minus_the_course_mean_dice():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (3, 5, 6))
    predicted = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, truth.shape))
    one_hot = np.eye(4, dtype=np.float32)[predicted]
    expected = 1 - metrics.segmentation_scores(truth, predicted, 4).mean_dice
    assert float(keras_metrics.dice_loss(truth, one_hot, smooth=0.0)) == pytest.approx(expected, abs=1e-6)
    assert float(keras_metrics.dice_loss(truth, np.eye(4, dtype=np.float32)[truth])) == pytest.approx(0.0, abs=1e-6)
    # A class absent from the batch and never predicted does not count against the model.
    assert float(keras_metrics.dice_loss(np.zeros((1, 2, 2), int), np.eye(3, dtype=np.float32)[np.zeros((1, 2, 2), int)])) \
        == pytest.approx(0.0, abs=1e-6)


def test_dice_loss_rejects_scores_without_a_class_axis():
    with pytest.raises(ValueError, match="class ids .* and probabilities"):
        keras_metrics.dice_loss(TRUTH, PROBS[..., 0])


def tiny_model(size=8, n_classes=3):
    inputs = keras.Input((size, size, 3))
    outputs = keras.layers.Conv2D(n_classes, 1, activation="softmax")(inputs)
    return keras.Model(inputs, outputs)


def tiny_data(n=4, size=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, size, size, 3)).astype(np.float32)
    return images, np.argmax(images, axis=-1)  # the brightest channel is the class: learnable


def test_a_model_trained_with_the_dice_loss_saves_and_loads_in_safe_mode(tmp_path):
    keras.utils.set_random_seed(0)
    images, labels = tiny_data()
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=keras_metrics.dice_loss)
    before = model.evaluate(images, labels, verbose=0)
    model.fit(images, labels, epochs=5, verbose=0)
    after = model.evaluate(images, labels, verbose=0)
    assert after < before  # its gradients train the model
    path = tmp_path / "dice.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, custom_objects={"dice_loss": keras_metrics.dice_loss},
                                     safe_mode=True)
    assert loaded.evaluate(images, labels, verbose=0) == pytest.approx(after, abs=1e-6)


def test_epoch_predictions_draws_one_image_per_epoch(tmp_path, monkeypatch):
    shown = []  # the figures' titles as the notebook would show them, one per epoch
    monkeypatch.setattr(plt, "show", lambda: shown.append(plt.gcf().texts[0].get_text()))
    keras.utils.set_random_seed(0)
    images, labels = tiny_data()
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    callback = viz.epoch_predictions(images[0], labels[0], ("a", "b", "c"), folder=tmp_path / "epochs")
    model.fit(images, labels, epochs=2, batch_size=2, verbose=0, callbacks=[callback])
    assert len(shown) == 2 and shown[0].startswith("after epoch 1: mean IoU")
    assert shown[1].startswith("after epoch 2: mean IoU")
    assert [p.name for p in callback.paths] == ["epoch_01.png", "epoch_02.png"]
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["epoch_01.png", "epoch_02.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in callback.paths)
    assert len(callback.predictions) == len(callback.scores) == 2
    # The last picture is what the trained model predicts for that image.
    np.testing.assert_array_equal(callback.predictions[-1], metrics.predict_labels(model, images[:1])[0])
    assert callback.scores[-1].mean_iou == metrics.segmentation_scores(
        labels[0], callback.predictions[-1], 3).mean_iou
    assert plt.get_fignums() == []  # every epoch's figure was closed


@pytest.mark.parametrize("image, truth, message", [
    (np.zeros((1, 8, 8, 3)), np.zeros((8, 8), int), "one image"),  # a batch, not an image
    (np.zeros((8, 8, 3)), np.zeros((8, 6), int), "one image"),
    (np.zeros((8, 8, 3)), np.full((8, 8), 3), "outside 0..2"),
])
def test_epoch_predictions_rejects_bad_input_before_training(image, truth, message):
    with pytest.raises(ValueError, match=message):
        viz.epoch_predictions(image, truth, ("a", "b", "c"))


def test_prediction_grid_draws_a_row_per_image_and_a_column_per_model():
    images, labels = tiny_data(n=2)
    wrong = (labels + 1) % 3
    fig = viz.prediction_grid(images, labels, {"right": labels, "wrong": wrong}, ("a", "b", "c"),
                              row_titles=["first", "second"])
    axes = np.array(fig.axes).reshape(2, 4)
    assert [ax.get_title() for ax in axes[0]] == ["image", "ground truth", "right\nmean IoU 1.00",
                                                  "wrong\nmean IoU 0.00"]
    np.testing.assert_array_equal(axes[1, 3].images[0].get_array(), viz.colorize(wrong[1], 3))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b", "c"]
    plt.close(fig)
    with pytest.raises(ValueError, match="a truth and a prediction of every model"):
        viz.prediction_grid(images, labels, {"short": labels[:1]}, ("a", "b", "c"))


@pytest.mark.filterwarnings("ignore:`shuffle=True` was passed")  # Keras, on any tf.data fit
def test_unet_losses_benchmark_gives_every_loss_the_same_batches_and_trains():
    import tensorflow as tf

    from benchmarks import unet_losses
    from helpers import synthetic

    def split(seed, n):
        examples = [{k: e[k] for k in ("image", "segmentation_mask")}
                    for e in synthetic.pet_examples(seed, n)]
        signature = {"image": tf.TensorSpec((None, None, 3), tf.uint8),
                     "segmentation_mask": tf.TensorSpec((None, None, 1), tf.uint8)}
        ds = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)
        return ds.apply(tf.data.experimental.assert_cardinality(n))  # as tfds' splits know theirs

    splits = {"train": split(1, 6), "val": split(2, 2), "test": split(3, 2)}
    params = {"IMAGE_SIZE": (16, 16), "BATCH_SIZE": 2, "EPOCHS": 1, "LEARNING_RATE": 1e-3,
              "PATIENCE": 1, "AUGMENT": True, "BASE_FILTERS": 2, "DEPTH": 1, "DROPOUT": 0.0}

    def first_epoch(seed):
        keras.utils.set_random_seed(99)  # whatever ran before: the run sets its own seeds
        return [b.numpy() for batch in unet_losses.pipelines(splits, params, seed)[0] for b in batch]

    once, again, other = first_epoch(1), first_epoch(1), first_epoch(2)
    assert all(np.array_equal(a, b) for a, b in zip(once, again))
    assert not all(np.array_equal(a, b) for a, b in zip(once, other))  # the seed does matter
    results = unet_losses.measure(splits, ["dice"], [1], params)
    assert [(r["loss"], r["seed"], r["epochs_run"], len(r["iou"])) for r in results] == [("dice", 1, 1, 3)]
    assert results[0]["cpu_s"] > 0 and len(results[0]["val_mean_iou"]) == 1
    text = unet_losses.report(results, params)
    assert "IoU over the seeds" in text and "border ignored" in text
