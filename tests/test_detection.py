import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import coco, config, detection, download  # noqa: E402
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
    assert coco.class_ids_by_name()["teddy bear"] == 88
    with pytest.raises(ValueError, match="whole number"):
        coco.class_id(1.5)


# --- Loading images -----------------------------------------------------------------------

def _photo(height=30, width=40):
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_load_image_reads_a_path_as_one_uint8_batch(tmp_path):
    pixels = _photo()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    for source in (tmp_path / "a.png", str(tmp_path / "a.png"), (tmp_path / "a.png").as_uri()):
        image = detection.load_image(source)
        assert image.shape == (1, 30, 40, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image[0], pixels)


def test_file_urls_name_local_files_for_images_and_models(tmp_path, monkeypatch):
    folder = tmp_path / "a folder%20with spaces"
    folder.mkdir()
    Image.fromarray(_photo()).save(folder / "a b.png")
    (folder / "saved_model.pb").write_bytes(b"")
    assert detection.load_image((folder / "a b.png").as_uri()).shape == (1, 30, 40, 3)
    assert detection.load_image(f"file://localhost{folder.as_uri()[7:]}/a%20b.png").shape[0] == 1
    assert detection.model_handle(folder.as_uri()) == str(folder.resolve())
    # A file URL naming another computer is refused, not read from this one's disk.
    remote = f"file://fileserver{folder.as_uri()[7:]}"
    with pytest.raises(ValueError, match="fileserver"):
        detection.load_image(remote + "/a%20b.png")
    monkeypatch.delenv(detection.HANDLE_VARIABLE, raising=False)
    with pytest.raises(ValueError, match="fileserver"):
        detection.model_handle(remote)


def test_load_image_converts_grey_and_transparent_images_with_a_warning(tmp_path):
    grey = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    with pytest.warns(UserWarning, match="greyscale"):
        image = detection.load_image(tmp_path / "grey.png")
    assert image.shape == (1, 30, 40, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[0, ..., channel], grey)

    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., :3] = (200, 10, 10)
    rgba[:, 20:, 3] = 255  # left half transparent, right half opaque red
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    with pytest.warns(UserWarning, match="transparency"):
        image = detection.load_image(tmp_path / "rgba.png")
    assert (image[0, :, :20] == 255).all()
    assert (image[0, :, 20:] == (200, 10, 10)).all()


def test_load_image_refuses_what_is_not_an_8_bit_image(tmp_path):
    (tmp_path / "page.jpg").write_text("<!DOCTYPE html><html>Not found</html>")
    with pytest.raises(DataError, match="not an image.*DOCTYPE"):
        detection.load_image(tmp_path / "page.jpg")
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(DataError, match="16-bit"):
        detection.load_image(tmp_path / "deep.png")
    with pytest.raises(DataError, match="No image file"):
        detection.load_image(tmp_path / "missing.jpg")


def test_load_image_shrinks_large_images_keeping_their_shape(tmp_path):
    Image.fromarray(_photo(300, 400)).save(tmp_path / "big.png")
    assert detection.load_image(tmp_path / "big.png", max_side=100).shape == (1, 75, 100, 3)
    assert detection.load_image(tmp_path / "big.png", max_side=1000).shape == (1, 300, 400, 3)


def test_load_image_downloads_a_url_once_into_the_cache(http_dir):
    folder, base_url = http_dir
    pixels = _photo()
    Image.fromarray(pixels).save(folder / "photo.png")
    url = f"{base_url}/photo.png"
    np.testing.assert_array_equal(detection.load_image(url)[0], pixels)
    cached = list((config.data_dir() / "downloads" / "images").glob("*-photo.png"))
    assert any(p.read_bytes() == (folder / "photo.png").read_bytes() for p in cached)
    (folder / "photo.png").unlink()  # the second load must come from the cache
    np.testing.assert_array_equal(detection.load_image(url)[0], pixels)


def test_an_encoded_slash_in_a_url_cannot_move_the_cached_image():
    images = config.data_dir() / "downloads" / "images"
    for url in ("https://example.org/..%2F..%2Fescape.png", "https://example.org/a%5C..%5Cb.png",
                "https://example.org/"):
        path = detection._cached_image_path(url)
        assert path.parent == images and path.resolve().parent == images.resolve(), path


def test_load_image_explains_urls_that_fail_and_caches_nothing(http_dir):
    folder, base_url = http_dir
    with pytest.raises(DataError, match="(?s)Could not download.*missing.jpg.*HTTP 404"):
        detection.load_image(f"{base_url}/missing.jpg")
    (folder / "page.jpg").write_text("<html>a login page</html>")
    with pytest.raises(DataError, match="not an image"):
        detection.load_image(f"{base_url}/page.jpg")
    with pytest.raises(DataError, match="Could not download"):
        detection.load_image("http://127.0.0.1:9/nothing-listens-here.jpg", timeout=5)
    cached = [p.name for p in (config.data_dir() / "downloads" / "images").iterdir()]
    assert not [n for n in cached if "missing" in n or "page" in n or n.startswith(".")]  # no temp file left


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


def test_annotate_changes_pixels_only_on_masks_and_box_outlines():
    image = np.full((21, 31, 3), 100, np.uint8)
    found = detection.filter_detections(_outputs(), (21, 31))
    drawn = detection.annotate(image[None], found, alpha=0.5, thickness=1)
    assert drawn.shape == (21, 31, 3) and drawn.dtype == np.uint8
    outline = np.zeros((21, 31), bool)
    for top, left, bottom, right in found.pixel_boxes():
        outline[top:bottom + 1, [left, right]] = True
        outline[[top, bottom], left:right + 1] = True
    changed = (drawn != image).any(-1)
    assert not (changed & ~(found.masks.any(0) | outline)).any()
    colours = detection.instance_colours(2)
    inner = found.masks[0] & ~found.masks[1] & ~outline  # blended once, with colour 0
    np.testing.assert_array_equal(drawn[inner][0], np.round(0.5 * 100 + 0.5 * colours[0].astype(float)))
    np.testing.assert_array_equal(drawn[5, 8], colours[0])  # a corner of the first box
    with pytest.raises(ValueError, match="differ in size"):
        detection.annotate(np.zeros((10, 10, 3), np.uint8), found)


def test_show_detections_labels_each_instance_with_class_and_score():
    found = detection.filter_detections(_outputs(), (21, 31))
    ax = detection.show_detections(np.zeros((21, 31, 3), np.uint8), found)
    assert sorted(t.get_text() for t in ax.texts) == ["dog 60%", "kite 90%"]
    assert ax.images[0].get_array().shape == (21, 31, 3)
    plt.close("all")


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

def test_the_model_handle_follows_argument_variable_and_mode(monkeypatch, tmp_path):
    monkeypatch.delenv(detection.HANDLE_VARIABLE, raising=False)
    assert detection.model_handle(quick=False) == detection.MASK_RCNN_HANDLE
    monkeypatch.setenv(detection.HANDLE_VARIABLE, "https://mirror.example/mask_rcnn/1")
    assert detection.model_handle(quick=True) == "https://mirror.example/mask_rcnn/1"
    (tmp_path / "saved_model.pb").write_bytes(b"")
    monkeypatch.setenv(detection.HANDLE_VARIABLE, str(tmp_path))
    assert detection.model_handle() == str(tmp_path.resolve())
    assert detection.model_handle(tmp_path.as_uri()) == str(tmp_path.resolve())
    assert detection.model_handle("https://tfhub.dev/x/1") == "https://tfhub.dev/x/1"
    monkeypatch.setenv(detection.HANDLE_VARIABLE, str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="not a SavedModel folder.*COURSE_MASKRCNN_HANDLE"):
        detection.model_handle()


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
    assert download.offline_hint("the lab with its stand-in model") in str(error.value)


def test_detect_refuses_images_the_model_cannot_take():
    with pytest.raises(ValueError, match=r"\(1, H, W, 3\)"):
        detection.detect(lambda x: {}, np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="load_image"):
        detection.detect(lambda x: {}, np.zeros((8, 8, 3), np.uint8))
