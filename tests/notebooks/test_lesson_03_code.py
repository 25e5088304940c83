"""Notebook 3's own code against the course's helpers, and what its text says of the small model.

The lesson pastes a box mask by hand and filters detections by hand before it calls
``detection.reframe_box_masks`` and ``detection.filter_detections``; these tests hold the two
to what the lesson says of them. They also hold the small Mask R-CNN to what the lesson shows
of it: it finds every instance of the scenes the lesson draws, and the anchors drawn are the
ones the text describes. (That the SavedModel ``hub.load`` returns gives the Keras model's
detections is tests/learner/test_mask_rcnn.py's, where the export is made anyway.)
"""

import ast

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from helpers import detection, mask_rcnn, mask_rcnn_export, scenes
from maintainer import notebook_code

NOTEBOOK = "03_mask_rcnn_tfhub.ipynb"


def notebook_cell(cell_id):
    return next(c.source for c in notebook_code.read_notebook(NOTEBOOK).cells if c.get("id") == cell_id)


@pytest.fixture(scope="module")
def paste_box_mask():
    """The lesson's own ``paste_box_mask`` (its ``def`` only), with the notebook's imports."""
    source = notebook_code.function_cells(notebook_code.read_notebook(NOTEBOOK))["paste_box_mask"]
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef))
    namespace = {"np": np, "tf": tf}
    exec(compile(ast.Module([node], type_ignores=[]), f"{NOTEBOOK}:paste_box_mask", "exec"), namespace)
    return namespace["paste_box_mask"]


@pytest.fixture(scope="module")
def parameters():
    return notebook_code.notebook_parameters(NOTEBOOK, quick=True)


@pytest.fixture(scope="module")
def small():
    return mask_rcnn.load_model()


def test_the_paste_sketch_agrees_with_the_helper_on_the_lessons_box(paste_box_mask):
    box_mask = np.zeros((33, 33), np.float32)
    box_mask[:, :17] = 1.0  # as the lesson: the left half of the box belongs to the object
    box = [0.2, 0.3, 0.8, 0.9]  # edges on pixel centres of an 11x11 image
    by_hand = paste_box_mask(box_mask, box, 11, 11) > 0.6
    helper = detection.reframe_box_masks(box_mask[None], [box], 11, 11)[0] > 0.6
    np.testing.assert_array_equal(by_hand, helper)
    assert by_hand[2:9, 3:7].all() and by_hand.sum() == 7 * 4


def test_elsewhere_the_sketch_differs_from_the_helper_only_along_the_masks_edge(paste_box_mask):
    # Box edges between pixels: the helper samples them as the Object Detection API does, the
    # sketch rounds them. Over 200 random boxes inside a 60x80 image, every pixel where the two
    # disagree lies within 2 pixels of the sketch's outline (measured: 18 such pixels a box,
    # at most 58).
    yy, xx = np.mgrid[0:33, 0:33]
    disc = (((yy - 16) ** 2 + (xx - 16) ** 2) <= 14 ** 2).astype(np.float32)
    rng = np.random.default_rng(0)
    differ = 0
    for _ in range(200):
        y0, x0 = rng.uniform(0, 0.6, 2)
        box = [y0, x0, min(y0 + rng.uniform(0.1, 1 - y0), 1), min(x0 + rng.uniform(0.1, 1 - x0), 1)]
        by_hand = paste_box_mask(disc, box, 60, 80) > 0.5
        helper = detection.reframe_box_masks(disc[None], [box], 60, 80)[0] > 0.5
        band = ndimage.binary_dilation(by_hand, iterations=2) & ~ndimage.binary_erosion(by_hand, iterations=2)
        assert not ((by_hand != helper) & ~band).any(), box
        differ += (by_hand != helper).sum()
    assert differ > 0  # they are not the same function


def test_the_filter_by_hand_keeps_what_filter_detections_keeps(capsys):
    # The lesson's cell, run on outputs in the TF Hub format: 6 real rows, scores best first.
    rng = np.random.default_rng(3)
    corner = rng.uniform(0, 0.6, (100, 2))
    scores = np.zeros(100, np.float32)
    scores[:6] = [0.99, 0.9, 0.7, 0.5, 0.3, 0.06]
    outputs = {"num_detections": np.array([6.0], np.float32),
               "detection_boxes": np.concatenate([corner, corner + 0.3], 1)[None].astype(np.float32),
               "detection_classes": np.full((1, 100), 18.0, np.float32),
               "detection_scores": scores[None],
               "detection_masks": rng.uniform(0, 1, (1, 100, 33, 33)).astype(np.float32)}
    image = np.zeros((1, 48, 64, 3), np.uint8)
    namespace = {"np": np, "detection": detection, "outputs": outputs, "count": 6, "image": image,
                 "SCORE_THRESHOLD": 0.5, "MASK_THRESHOLD": 0.6}
    exec(notebook_cell("cell-filter-by-hand"), namespace)
    assert "kept 4 of 6 detections" in capsys.readouterr().out
    found = detection.filter_detections(outputs, image.shape[1:3], 0.5, 0.6)
    np.testing.assert_array_equal(found.scores, namespace["scores"][namespace["keep"]])
    np.testing.assert_array_equal(found.masks, namespace["masks"])


def test_the_small_model_finds_every_instance_of_the_scenes_the_lesson_shows(small, parameters):
    # Measured: the default scenes' 5, 2 and 5 instances, mask IoU 0.902 to 0.966.
    module = mask_rcnn_export.hub_module(small)
    seeds, size = parameters["SCENE_SEEDS"], parameters["SCENE_SIZE"]
    files = scenes.scene_files(seeds, size)
    for seed in seeds:
        truth = scenes.make_scene(seed, size)
        np.testing.assert_array_equal(detection.load_image(files[f"scene {seed}"])[0], truth.image)
        found = detection.filter_detections(detection.detect(module, truth.image[None]), truth.image.shape[:2],
                                            parameters["SCORE_THRESHOLD"], parameters["MASK_THRESHOLD"])
        pairs, ious = detection.match_instances(found.masks, truth.masks)
        assert (pairs >= 0).all() and (ious >= 0.8).all(), (seed, pairs, ious)
        assert (found.class_ids[pairs] == truth.class_ids).all(), seed


def test_the_anchors_the_lesson_draws_reach_past_the_image(parameters):
    # The lesson's anchor figure: the cell under the largest object of its first scene, whose
    # tall 64-pixel anchor crosses the image's lower edge (the figure shows a margin for it).
    scene = scenes.make_scene(parameters["SCENE_SEEDS"][0])
    anchors = mask_rcnn.make_anchors().reshape(16, 16, 3, 3, 4)
    biggest = scene.boxes[np.argmax(scene.masks.sum(axis=(1, 2)))]
    row, col = (int((biggest[0] + biggest[2]) / 2 * 16), int((biggest[1] + biggest[3]) / 2 * 16))
    tall = anchors[row, col, mask_rcnn.ANCHOR_SIZES.index(64), mask_rcnn.ANCHOR_RATIOS.index(2.0)]
    assert tall[2] > 1.0 and 0 <= tall[0] and 0 <= tall[1] and tall[3] <= 1.0
    assert (row, col) == (10, 7)
    margin = 16 / mask_rcnn.IMAGE_SIZE  # the figure's margin, in the same units
    assert anchors[row, col].min() >= -margin and anchors[row, col].max() <= 1 + margin
