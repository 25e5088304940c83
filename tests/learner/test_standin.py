"""The rule-based stand-in for Mask R-CNN, the tests' oracle: its scenes, its call signature,
and the whole post-processing chain checked against the scenes' known instances."""

import numpy as np
import pytest

from helpers import detection
import standin


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import tensorflow_hub as hub

    # Through the same tensorflow_hub.load path as the real model.
    return hub.load(str(standin.standin_model_dir(tmp_path_factory.mktemp("models"))))


def test_scenes_are_reproducible_and_their_instances_separate():
    a, b = standin.make_scene(5), standin.make_scene(5)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, standin.make_scene(6).image)
    assert a.image.shape == (360, 480, 3) and a.image.dtype == np.uint8
    assert a.masks.shape == (4, 360, 480) and a.faded_masks.shape == (2, 360, 480)
    every = np.concatenate([a.masks, a.faded_masks])
    assert every.sum(0).max() == 1  # no two shapes overlap
    assert (every.sum((1, 2)) > 500).all()
    assert set(a.class_ids) <= {c for _, c, _ in standin.HUES}
    for mask, (ymin, xmin, ymax, xmax) in zip(a.masks, a.boxes):
        rows, cols = np.nonzero(mask)
        np.testing.assert_allclose([ymin * 359, xmin * 479, ymax * 359, xmax * 479],
                                   [rows.min(), cols.min(), rows.max(), cols.max()], atol=1e-3)
    with pytest.raises(ValueError, match="at most 8"):
        standin.make_scene(0, n_vivid=8, n_faded=1)


def test_the_stand_in_has_the_tf_hub_models_outputs(model):
    scene = standin.make_scene(0)
    outputs = model(scene.image[None])
    assert set(outputs) == set(detection.OUTPUT_KEYS)
    shapes = {k: (v.dtype.name, tuple(v.shape)) for k, v in outputs.items()}
    assert shapes == {
        "detection_boxes": ("float32", (1, 100, 4)),
        "detection_classes": ("float32", (1, 100)),
        "detection_scores": ("float32", (1, 100)),
        "detection_masks": ("float32", (1, 100, 33, 33)),
        "num_detections": ("float32", (1,)),
    }
    n = int(outputs["num_detections"][0])
    assert n == 6  # four vivid shapes and two faded ones
    scores = outputs["detection_scores"].numpy()[0]
    assert (np.diff(scores[:n]) <= 0).all() and (scores[n:] == 0).all()
    masks = outputs["detection_masks"].numpy()
    assert masks.min() >= 0 and masks.max() <= 1 and (masks[0, n:] == 0).all()
    boxes = outputs["detection_boxes"].numpy()[0, :n]
    assert (boxes[:, :2] < boxes[:, 2:]).all() and boxes.min() >= 0 and boxes.max() <= 1


@pytest.mark.parametrize("seed, size", [(0, (360, 480)), (7, (360, 480)), (11, (240, 200))])
def test_post_processing_recovers_the_scenes_instances(model, seed, size):
    scene = standin.make_scene(seed, *size)
    found = detection.filter_detections(detection.detect(model, scene.image[None]), size)
    assert len(found) == len(scene.masks)  # faded shapes score below the default 0.5
    pairs, ious = detection.match_instances(found.masks, scene.masks, min_iou=0.5)
    assert (pairs >= 0).all() and (ious > 0.9).all(), ious
    np.testing.assert_array_equal(found.class_ids[pairs], scene.class_ids)
    pixels = np.array([size[0] - 1, size[1] - 1] * 2)
    np.testing.assert_allclose(found.boxes[pairs] * pixels, scene.boxes * pixels, atol=1.5)


def test_faded_shapes_are_found_with_low_scores(model):
    scene = standin.make_scene(2)
    everything = detection.filter_detections(detection.detect(model, scene.image[None]),
                                             scene.image.shape[:2], score_threshold=0.0)
    pairs, ious = detection.match_instances(everything.masks, scene.faded_masks)
    assert (ious > 0.9).all()
    assert (everything.scores[pairs] < 0.5).all() and (everything.scores[pairs] > 0.25).all()


def test_a_grey_image_has_no_detections(model):
    grey = np.full((1, 64, 96, 3), 128, np.uint8)
    outputs = detection.detect(model, grey)
    assert outputs["num_detections"].tolist() == [0.0]
    assert not outputs["detection_masks"].any() and not outputs["detection_scores"].any()
    assert len(detection.filter_detections(outputs, (64, 96), score_threshold=0.0)) == 0


def test_the_stand_in_is_built_once(tmp_path):
    first = standin.standin_model_dir(tmp_path)
    stamp = (first / "saved_model.pb").stat().st_mtime_ns
    assert standin.standin_model_dir(tmp_path) == first
    assert (first / "saved_model.pb").stat().st_mtime_ns == stamp
    assert "standin" in first.name and not list(tmp_path.glob(".*"))


def test_the_browser_runs_the_model_once_per_image(model):
    import matplotlib

    matplotlib.use("Agg")
    calls = []

    def counting(images):
        calls.append(images.shape)
        return model(images)

    images = {"a": standin.make_scene(1, 120, 160).image[None],
              "b": standin.make_scene(2, 120, 160).image[None]}
    browser = detection.detection_browser(counting, images)
    dropdown, score, mask = browser.children[0].children
    picture = browser.children[1]
    assert list(dropdown.options) == ["a", "b"] and score.value == 0.5 and mask.value == 0.6
    assert bytes(picture.value).startswith(b"\x89PNG")
    first = bytes(picture.value)
    score.value = 0.9
    assert bytes(picture.value) != first  # fewer detections drawn
    mask.value = 0.3
    dropdown.value = "b"
    score.value = 0.2
    assert len(calls) == 2


def test_a_stand_in_finished_by_another_process_meanwhile_is_kept(tmp_path, monkeypatch):
    import threading

    from helpers import download

    target = tmp_path / standin.STANDIN_NAME
    found = []
    waiting = threading.Event()
    lock_file = download._lock_file

    def lock_file_after_saying_so(path):
        waiting.set()  # the waiter found no stand-in and now waits for the lock
        return lock_file(path)

    monkeypatch.setattr(download, "_lock_file", lock_file_after_saying_so)
    # Hold the install lock as another process building the stand-in would.
    with download.install_lock(target):
        waiting.clear()  # set by this thread's own lock just above
        waiter = threading.Thread(target=lambda: found.append(standin.standin_model_dir(tmp_path)))
        waiter.start()
        assert waiting.wait(timeout=120), "the waiter never reached the lock"
        target.mkdir()
        (target / "saved_model.pb").write_bytes(b"built by the other process")
        (target / ".complete").write_text("done\n")
    waiter.join(timeout=120)
    assert found == [target]
    # Neither rebuilt nor deleted under a reader: the finished copy is the one kept.
    assert (target / "saved_model.pb").read_bytes() == b"built by the other process"
    assert sorted(p.name for p in tmp_path.iterdir()) == [standin.STANDIN_NAME]
