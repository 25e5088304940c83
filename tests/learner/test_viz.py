import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import detection, metrics, viz  # noqa: E402


def test_palette_has_distinct_colours():
    for n in (3, 11, 12, 25):
        colours = viz.palette(n)
        assert colours.shape == (n, 3) and colours.dtype == np.uint8
        assert len({tuple(c) for c in colours}) == n


def test_colorize_maps_each_class_to_its_colour():
    label = np.array([[0, 1], [2, 1]])
    rgb = viz.colorize(label, 3)
    colours = viz.palette(3)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 1], colours[1])
    np.testing.assert_array_equal(rgb[1, 0], colours[2])
    assert viz.colorize(label[..., None], 3).shape == (2, 2, 3)


def test_palette_of_no_classes_is_empty_but_shaped():
    assert viz.palette(0).shape == (0, 3)


@pytest.mark.parametrize("label, message", [
    (np.array([[3]]), "outside 0..2"),
    (np.array([[-1]]), "outside 0..2"),
    (np.array([[1.7]]), "integer class ids"),  # would be truncated to class 1 silently
])
def test_colorize_rejects_labels_that_are_not_class_ids(label, message):
    with pytest.raises(ValueError, match=message):
        viz.colorize(label, 3)


def test_overlay_blends_by_alpha():
    image = np.full((4, 5, 3), 100, np.uint8)
    label = np.zeros((4, 5), int)
    np.testing.assert_array_equal(viz.overlay(image, label, 2, alpha=0.0), image)
    np.testing.assert_array_equal(viz.overlay(image, label, 2, alpha=1.0), viz.colorize(label, 2))
    half = viz.overlay(image.astype(np.float32), label, 2, alpha=0.5)
    expected = np.round(0.5 * 100 + 0.5 * viz.palette(2)[0].astype(float)).astype(np.uint8)
    np.testing.assert_array_equal(half[0, 0], expected)
    with pytest.raises(ValueError, match="differ in size"):
        viz.overlay(image, np.zeros((3, 5), int), 2)
    with pytest.raises(ValueError, match="alpha must be between 0"):
        viz.overlay(image, label, 2, alpha=1.5)  # would wrap around in uint8


def test_to_uint8_accepts_unit_and_byte_ranges():
    np.testing.assert_array_equal(viz.to_uint8(np.array([0.0, 0.5, 1.0])), [0, 128, 255])
    np.testing.assert_array_equal(viz.to_uint8(np.array([0.0, 127.6, 300.0])), [0, 128, 255])


def test_show_panels_draws_three_panels_and_reports_the_image_scores():
    truth = np.array([[0, 0], [1, 2]])
    pred = np.array([[0, 1], [1, 2]])
    scores = viz.show_panels(np.zeros((2, 2, 3)), truth, pred, ["a", "b", "c"], title="x")
    figure = plt.gcf()
    # The course's one order: the image, what is true, what the model said.
    assert [ax.get_title() for ax in figure.axes] == ["image", "ground truth", "prediction"]
    drawn = [ax.get_images()[0].get_array() for ax in figure.axes[1:]]
    np.testing.assert_array_equal(drawn[0], viz.colorize(truth, ["a", "b", "c"]))
    np.testing.assert_array_equal(drawn[1], viz.colorize(pred, ["a", "b", "c"]))
    assert scores.mean_iou == pytest.approx(metrics.segmentation_scores(truth, pred, 3).mean_iou)
    assert f"{scores.mean_iou:.3f}" in figure._suptitle.get_text()
    # The footer names the worst classes with their IoU (a: 1/2, b: 1/2, c: 1), even when a
    # class's name is a number.
    assert [t.get_text() for t in figure.texts][-1:] == ["lowest IoU: a: 0.50, b: 0.50, c: 1.00"]
    viz.show_panels(np.zeros((2, 2, 3)), truth, pred, ["0", "1", "2"])
    assert [t.get_text() for t in plt.gcf().texts][-1:] == ["lowest IoU: 0: 0.50, 1: 0.50, 2: 1.00"]
    plt.close("all")


def test_show_panels_without_a_prediction_shows_image_and_truth_only():
    truth = np.array([[0, 0], [1, 2]])[..., None]  # (H, W, 1), as tfds masks come
    assert viz.show_panels(np.zeros((2, 2, 3)), truth, None, ["a", "b", "c"], title="data") is None
    figure = plt.gcf()
    assert [ax.get_title() for ax in figure.axes] == ["image", "ground truth"]
    np.testing.assert_array_equal(figure.axes[1].images[0].get_array(), viz.colorize(truth[..., 0], 3))
    plt.close("all")


def test_show_panels_accepts_masks_with_a_channel_axis():
    truth = np.array([[0, 0], [1, 2]])
    scores = viz.show_panels(np.zeros((2, 2, 3)), truth[..., None], truth, ["a", "b", "c"])
    assert scores.mean_iou == 1.0
    plt.close("all")


def test_plot_history_draws_one_axis_per_metric_with_validation_curves():
    viz.plot_history({"loss": [2, 1], "val_loss": [3, 2], "accuracy": [0.1, 0.5]})
    axes = plt.gcf().axes
    assert [ax.get_title() for ax in axes] == ["loss", "pixel accuracy"]  # words, not code names
    assert len(axes[0].lines) == 2 and len(axes[1].lines) == 1
    # Epochs are whole numbers: the ticks of a 2-epoch run are 1 and 2, not 1.2, 1.4, ...
    ticks = [t for t in axes[0].get_xticks() if 1 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plt.close("all")
    with pytest.raises(ValueError, match=r"the history has \['loss'\]"):
        viz.plot_history({"loss": [1]}, ("mean_iou",))


def test_prediction_browser_is_a_slider_over_the_images():
    plt.close("all")
    images = np.zeros((4, 2, 2, 3))
    labels = np.zeros((4, 2, 2), int)
    labels[2, 0, 0] = 1  # image 2 differs, so its picture must too
    widget = viz.prediction_browser(images, labels, labels, ["a", "b"])
    slider, picture = widget.children
    assert (slider.min, slider.max, slider.value) == (0, 3, 0)
    first = bytes(picture.value)
    assert first.startswith(b"\x89PNG")
    slider.value = 2
    assert bytes(picture.value).startswith(b"\x89PNG") and bytes(picture.value) != first
    assert plt.get_fignums() == []  # rendered to PNG and closed, never shown


def test_prediction_browser_needs_matching_non_empty_inputs():
    labels = np.zeros((4, 2, 2), int)
    with pytest.raises(ValueError, match="4 images, 3 predictions, 4 truths"):
        viz.prediction_browser(np.zeros((4, 2, 2, 3)), labels, labels[:3], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        viz.prediction_browser(np.zeros((0, 2, 2, 3)), labels[:0], labels[:0], ["a", "b"])

# --- Detections (notebook 3) ----------------------------------------------------------------

def _kite_and_dog():
    """Two detections on a 21x31 image, as detection.filter_detections keeps them."""
    masks = np.zeros((2, 21, 31), bool)
    masks[0, 5:16, 8:23] = True
    masks[1, :11, :16] = True
    return detection.Detections(
        boxes=np.array([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.5, 0.5]], np.float32),
        class_ids=np.array([38, 18]), scores=np.array([0.9, 0.6], np.float32), masks=masks)


def test_annotate_changes_pixels_only_on_masks_and_box_outlines():
    image = np.full((21, 31, 3), 100, np.uint8)
    found = _kite_and_dog()
    drawn = viz.annotate(image[None], found, alpha=0.5, thickness=1)
    assert drawn.shape == (21, 31, 3) and drawn.dtype == np.uint8
    outline = np.zeros((21, 31), bool)
    for top, left, bottom, right in found.pixel_boxes():
        outline[top:bottom + 1, [left, right]] = True
        outline[[top, bottom], left:right + 1] = True
    changed = (drawn != image).any(-1)
    assert not (changed & ~(found.masks.any(0) | outline)).any()
    colours = viz.instance_colours(2)
    inner = found.masks[0] & ~found.masks[1] & ~outline  # blended once, with colour 0
    np.testing.assert_array_equal(drawn[inner][0], np.round(0.5 * 100 + 0.5 * colours[0].astype(float)))
    np.testing.assert_array_equal(drawn[5, 8], colours[0])  # a corner of the first box
    with pytest.raises(ValueError, match="differ in size"):
        viz.annotate(np.zeros((10, 10, 3), np.uint8), found)


def test_show_detections_labels_each_instance_with_class_and_score():
    found = _kite_and_dog()
    ax = viz.show_detections(np.zeros((21, 31, 3), np.uint8), found)
    assert sorted(t.get_text() for t in ax.texts) == ["dog 60%", "kite 90%"]
    assert ax.images[0].get_array().shape == (21, 31, 3)
    plt.close("all")


def test_show_legend_names_each_colour_once():
    # CamVid-like names carry their label value; M2NIST's digits are their own value, so
    # "0 0" would say the same thing twice.
    texts = [t.get_text() for t in viz.show_legend(("sky", "road")).get_legend().get_texts()]
    assert texts == ["0 sky", "1 road"]
    names = tuple(str(d) for d in range(10)) + ("background",)
    texts = [t.get_text() for t in viz.show_legend(names).get_legend().get_texts()]
    assert texts == [str(d) for d in range(10)] + ["10 background"]
    plt.close("all")


def test_camvid_classes_get_their_conventional_colours():
    from helpers import datasets

    names = datasets.CAMVID_CLASSES
    colours = viz.palette(names).astype(int)
    assert colours.shape == (12, 3) and len({tuple(c) for c in colours}) == 12
    red, green, blue = colours[names.index("vegetation")]
    assert green > red and green > blue  # vegetation green, not brown
    red, green, blue = colours[names.index("sky")]
    assert blue > red and blue > green
    red, green, blue = colours[names.index("road")]
    assert red > green and blue > green  # purple-grey
    assert not colours[names.index("void")].any()  # black
    # Names without a conventional colour keep the distinct colours of palette(n).
    np.testing.assert_array_equal(viz.palette(["a", "sky"]), viz.palette(2))
    label = np.array([[0, 5], [11, 3]])
    np.testing.assert_array_equal(viz.colorize(label, names)[0, 1], colours[5])
    np.testing.assert_array_equal(viz.overlay(np.zeros((2, 2, 3)), label, names, alpha=1.0),
                                  viz.colorize(label, names))


def test_show_panels_leaves_ignored_pixels_out_and_names_the_colours_below():
    truth = np.zeros((6, 8), int)
    truth[3:] = 1
    truth[5] = 2  # "void"
    prediction = np.zeros((6, 8), int)
    prediction[3:] = 1  # right everywhere but void, where nothing can be right
    scores = viz.show_panels(np.zeros((6, 8, 3)), truth, prediction, ["a", "b", "void"],
                             title="x", ignore_class=2, legend=True)
    assert scores.mean_iou == 1.0 and np.isnan(scores.iou[2])
    figure = plt.gcf()
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["0 a", "1 b", "2 void"]
    # The figure is sized to its pictures: their height takes most of it, no blank band.
    panel = figure.axes[0].get_window_extent()
    assert panel.height > 0.55 * figure.bbox.height
    plt.close("all")
