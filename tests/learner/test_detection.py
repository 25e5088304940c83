import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import coco, config, detection, download, viz  # noqa: E402
from helpers.download import DataError  # noqa: E402


# --- Reframing box-relative masks -------------------------------------------------------

def test_a_full_box_mask_fills_exactly_its_box():
    # On a 9x9 image pixel i sits at i/8, so the box 0.25..0.75 covers pixels 2..6.
    out = detection.reframe_box_masks(np.ones((1, 33, 33)), [[0.25, 0.25, 0.75, 0.75]], 9, 9)
    expected = np.zeros((9, 9))
    expected[2:7, 2:7] = 1
    assert out.shape == (1, 9, 9) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], expected)


def test_a_mask_lands_inside_its_box_with_its_layout():
    mask = np.zeros((33, 33))
    mask[:16, :16] = 1  # top-left quadrant only
    out = detection.reframe_box_masks(mask[None], [[0.2, 0.4, 0.6, 0.8]], 101, 101)[0]
    inside = np.zeros((101, 101), bool)
    inside[20:61, 40:81] = True
    assert out[~inside].max() == 0
    assert out[20:35, 40:55].min() == 1  # the box's top-left quarter is the mask's
    assert out[45:61, 65:81].max() == 0  # its bottom-right quarter is empty


def test_mask_area_scales_with_the_box():
    ones = np.ones((2, 33, 33))
    out = detection.reframe_box_masks(ones, [[0.1, 0.1, 0.3, 0.3], [0.1, 0.1, 0.5, 0.5]], 101, 101)
    assert (out > 0.5).sum((1, 2)).tolist() == [21 * 21, 41 * 41]
    # A disc keeps its share of the box (pi / 4) at any box size.
    yy, xx = np.mgrid[:33, :33]
    disc = ((yy - 16) ** 2 + (xx - 16) ** 2 <= 16.5 ** 2).astype(np.float32)
    boxes = [[0.0, 0.0, 0.2, 0.2], [0.0, 0.0, 0.6, 0.8]]
    areas = (detection.reframe_box_masks(np.stack([disc, disc]), boxes, 201, 201) > 0.5).sum((1, 2))
    box_areas = np.array([41 * 41, 121 * 161])
    np.testing.assert_allclose(areas / box_areas, np.pi / 4, rtol=0.05)


def test_boxes_past_the_border_are_cut_there():
    mask = np.zeros((33, 33))
    mask[16:] = 1  # bottom half
    # Rows span -0.5..0.5: only the box's bottom half is in the image, on rows 0..5 of 11.
    out = detection.reframe_box_masks(mask[None], [[-0.5, 0.0, 0.5, 1.0]], 11, 7)[0]
    np.testing.assert_allclose(out[:6], 1)
    np.testing.assert_allclose(out[6:], 0)
    outside = detection.reframe_box_masks(np.ones((1, 33, 33)), [[1.2, 1.2, 1.5, 1.5]], 11, 7)
    assert outside.max() == 0


def test_degenerate_boxes_give_empty_masks_and_bad_boxes_are_refused():
    out = detection.reframe_box_masks(np.ones((3, 33, 33)), [[0.5, 0.2, 0.5, 0.8],
                                                             [0.2, 0.5, 0.8, 0.5],
                                                             [0, 0, 0, 0]], 10, 12)
    assert out.shape == (3, 10, 12) and np.isfinite(out).all() and out.max() == 0
    assert detection.reframe_box_masks(np.zeros((0, 33, 33)), np.zeros((0, 4)), 5, 6).shape == (0, 5, 6)
    with pytest.raises(ValueError, match="ymin <= ymax"):
        detection.reframe_box_masks(np.ones((1, 33, 33)), [[0.8, 0.1, 0.2, 0.9]], 10, 10)
    with pytest.raises(ValueError, match="finite"):
        detection.reframe_box_masks(np.ones((1, 33, 33)), [[np.nan, 0.1, 0.2, 0.9]], 10, 10)
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        detection.reframe_box_masks(np.ones((2, 33, 33)), [[0, 0, 1, 1]], 10, 10)
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        detection.reframe_box_masks(np.ones((33, 33)), [[0, 0, 1, 1]], 10, 10)


def _object_detection_api_reframe(box_masks, boxes, height, width):
    """The Object Detection API's reframe_box_masks_to_image_masks, as a reference."""
    import tensorflow as tf

    boxes = tf.constant(boxes, tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    h, w = tf.maximum(ymax - ymin, 1e-4), tf.maximum(xmax - xmin, 1e-4)
    corners = tf.stack([-ymin / h, -xmin / w, (1 - ymin) / h, (1 - xmin) / w], axis=1)
    crops = tf.image.crop_and_resize(tf.constant(box_masks, tf.float32)[..., None], corners,
                                     tf.range(len(box_masks)), [height, width],
                                     extrapolation_value=0)
    return crops[..., 0].numpy()


def test_reframing_matches_the_object_detection_api():
    rng = np.random.default_rng(0)
    masks = rng.uniform(0, 1, (6, 33, 33)).astype(np.float32)
    corner = rng.uniform(-0.3, 0.8, (6, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.05, 0.6, (6, 2))], 1)  # some past the border
    ours = detection.reframe_box_masks(masks, boxes, 48, 64)
    np.testing.assert_allclose(ours, _object_detection_api_reframe(masks, boxes, 48, 64), atol=1e-4)


# --- Label map ----------------------------------------------------------------------------

def test_the_coco_label_map_has_80_classes_with_ids_up_to_90():
    labels = coco.COCO_2017_LABELS
    assert len(labels) == 80 and len(set(labels.values())) == 80
    assert min(labels) == 1 and max(labels) == coco.MAX_ID == 90
    assert set(range(1, 91)) - set(labels) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    spot = {1: "person", 18: "dog", 38: "kite", 44: "bottle", 67: "dining table", 72: "tv",
            77: "cell phone", 90: "toothbrush"}
    assert {i: labels[i] for i in spot} == spot


def test_class_lookups_accept_model_floats_and_name_unknown_ids():
    assert coco.class_name(np.float32(18.0)) == "dog"
    assert coco.class_name(12) == "id 12 (unknown)"
    assert coco.class_name(2, {2: "pet"}) == "pet"
    with pytest.raises(ValueError, match="whole number"):
        coco.class_id(1.5)


# --- Filtering and drawing detections -----------------------------------------------------

def _outputs(height=20, width=30):
    """Model outputs for three detections and padding, as numpy arrays with a batch axis."""
    boxes = np.zeros((1, 5, 4), np.float32)
    boxes[0, :3] = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.25, 0.25, 0.75, 0.75]]
    masks = np.zeros((1, 5, 33, 33), np.float32)
    masks[0, :3] = 0.7
    return {
        "detection_boxes": boxes,
        "detection_classes": np.array([[18, 1, 38, 1, 1]], np.float32),
        "detection_scores": np.array([[0.6, 0.3, 0.9, 0.95, 0.95]], np.float32),  # padding scores too
        "detection_masks": masks,
        "num_detections": np.array([3], np.float32),
    }


def test_filter_detections_keeps_confident_ones_best_first_with_full_masks():
    found = detection.filter_detections(_outputs(), (21, 31), score_threshold=0.5)
    assert len(found) == 2
    assert found.class_ids.tolist() == [38, 18] and found.names() == ["kite", "dog"]
    np.testing.assert_allclose(found.scores, [0.9, 0.6])
    assert found.masks.shape == (2, 21, 31) and found.masks.dtype == bool
    expected = np.zeros((21, 31), bool)
    expected[5:16, 8:23] = True  # 0.25..0.75 of 20 and of 30 pixel steps
    np.testing.assert_array_equal(found.masks[0], expected)
    assert found.pixel_boxes().tolist() == [[5, 8, 15, 22], [0, 0, 10, 15]]
    assert len(detection.filter_detections(_outputs(), (21, 31), score_threshold=0.0)) == 3


def test_the_mask_threshold_decides_which_pixels_belong():
    assert detection.filter_detections(_outputs(), (21, 31), mask_threshold=0.6).masks.any()
    assert not detection.filter_detections(_outputs(), (21, 31), mask_threshold=0.8).masks.any()


def test_filter_detections_refuses_bad_outputs_and_thresholds():
    outputs = _outputs()
    del outputs["detection_masks"]
    with pytest.raises(ValueError, match="lack detection_masks"):
        detection.filter_detections(outputs, (21, 31))
    with pytest.raises(ValueError, match="score_threshold"):
        detection.filter_detections(_outputs(), (21, 31), score_threshold=1.5)


def test_the_table_lists_class_score_box_and_area():
    table = detection.filter_detections(_outputs(), (21, 31)).table()
    lines = table.splitlines()
    assert len(lines) == 3
    assert "kite" in lines[1] and "0.90" in lines[1] and "(5, 8, 15, 22)" in lines[1]
    assert "165 px" in lines[1]  # 11 x 15 pixels
    assert "no detection" in detection.filter_detections(_outputs(), (21, 31), 0.99).table()


def test_match_instances_pairs_best_overlaps_one_to_one():
    true = np.zeros((2, 10, 10), bool)
    true[0, :5, :5] = True
    true[1, 5:, 5:] = True
    predicted = np.zeros((3, 10, 10), bool)
    predicted[0, 5:, 5:] = True         # exactly instance 1
    predicted[1, :5, :4] = True         # most of instance 0 (IoU 0.8)
    predicted[2, :5, :5] = True         # exactly instance 0
    predicted[2, 9, 0] = True           # ...plus a stray pixel (IoU 25/26)
    pairs, ious = detection.match_instances(predicted, true)
    assert pairs.tolist() == [2, 0]
    np.testing.assert_allclose(ious, [25 / 26, 1.0])
    pairs, _ = detection.match_instances(predicted[:1], true)
    assert pairs.tolist() == [-1, 0]


# --- Choosing and loading the model ------------------------------------------------------

def test_notebook_3_reaches_image_loading_and_drawing_through_detection():
    assert detection.load_image is download.load_image and detection.TEST_IMAGES is download.TEST_IMAGES
    assert detection.show_detections is viz.show_detections and detection.annotate is viz.annotate


def test_the_tfhub_cache_goes_to_the_course_data_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
    assert detection.use_course_tfhub_cache() == config.data_dir() / "tfhub_modules"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    assert detection.use_course_tfhub_cache() == tmp_path


def test_load_failures_say_what_to_try(tmp_path):
    import tensorflow_hub as hub

    handle = str(tmp_path / "no-model-here")
    with pytest.raises(DataError, match="(?s)Could not load the model .*no-model-here.*"
                                        "COURSE_MASKRCNN_HANDLE.*COURSE_QUICK=1") as error:
        with detection.explain_load_errors(handle):
            hub.load(handle)
    assert download.offline_hint("the lab with the course's small Mask R-CNN") in str(error.value)


def test_detect_refuses_images_the_model_cannot_take():
    with pytest.raises(ValueError, match=r"\(1, H, W, 3\)"):
        detection.detect(lambda x: {}, np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="load_image"):
        detection.detect(lambda x: {}, np.zeros((8, 8, 3), np.uint8))


# --- Scoring a detector on scenes with known instances ----------------------------------

def test_evaluate_scores_a_detector_against_the_scenes_true_instances():
    import standin

    model = standin.standin_module()  # exact masks, faded shapes found with low scores
    seeds = (0, 1, 2)
    scores = detection.evaluate(model, (standin.make_scene(s) for s in seeds))
    n_true = sum(len(standin.make_scene(s).masks) for s in seeds)
    assert scores["scenes"] == 3 and scores["instances"] == n_true == 12
    # Measured: every instance matched, mean mask IoU 0.991, AP 1.0 (the faded shapes' low
    # scores rank below every true instance).
    assert scores["matched"] == 1.0 and scores["matched_mask_iou"] >= 0.98, scores
    assert scores["AP50"] == 1.0 and scores["AP"] >= 0.95, scores

    def wrong_class(images):  # the same masks under another COCO class
        outputs = dict(model(images))
        outputs["detection_classes"] = outputs["detection_classes"] * 0 + 1.0
        return outputs

    wrong = detection.evaluate(wrong_class, (standin.make_scene(s) for s in seeds))
    assert wrong["matched"] == 0.0 and wrong["AP50"] == 0.0 and wrong["matched_mask_iou"] == 0.0
