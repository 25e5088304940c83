"""The small Mask R-CNN's generated scenes (helpers.scenes): what makes instances worth segmenting."""

import numpy as np
import pytest

from helpers import scenes


@pytest.fixture(scope="module")
def many():
    return [scenes.make_scene(seed) for seed in scenes.TRAIN_SEEDS[:150]]


def test_a_scene_is_its_seed():
    a, b = scenes.make_scene(7), scenes.make_scene(7)
    assert all(np.array_equal(x, y) for x, y in zip((a.image, a.labels, a.boxes, a.masks),
                                                    (b.image, b.labels, b.boxes, b.masks)))
    assert not np.array_equal(a.image, scenes.make_scene(8).image)
    assert a.image.shape == (128, 128, 3) and a.image.dtype == np.uint8


def test_instances_are_visible_disjoint_masks_with_tight_boxes(many):
    for scene in many:
        assert 2 <= len(scene.labels) <= 6 and set(scene.labels) <= {1, 2, 3, 4}
        assert scene.masks.sum(0).max() == 1  # a pixel belongs to one instance at most
        assert (scene.masks.sum((1, 2)) >= scenes.MIN_PIXELS).all()
        for mask, (y0, x0, y1, x1) in zip(scene.masks, scene.boxes * 128):
            rows, cols = np.nonzero(mask)
            assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == (y0, x0, y1, x1)
        np.testing.assert_array_equal(scene.class_ids, np.array(scenes.COCO_IDS)[scene.labels - 1])


def test_scenes_are_crowded_touching_overlapping_and_varied(many):
    touching = sum(bool(scenes.touching_pairs(s)) for s in many)
    occluded = sum((s.hidden > 0.05).any() for s in many)
    assert touching >= 0.4 * len(many), touching  # same-class neighbours in many scenes
    assert occluded >= 0.3 * len(many), occluded  # one shape partly hiding another
    assert max(s.hidden.max() for s in many) <= 1 - scenes.MIN_VISIBLE + 1e-6
    counts = np.bincount(np.concatenate([s.labels for s in many]), minlength=5)[1:]
    assert counts.min() > 0.15 * counts.sum(), counts  # the four classes about equally often
    sizes = [np.ptp(np.argwhere(m), 0).max() + 1 for s in many for m in s.masks]
    assert min(sizes) < 20 and max(sizes) > 40


def test_touching_pairs_by_hand():
    scene = scenes.make_scene(0)
    masks = np.zeros((3, 128, 128), bool)
    masks[0, 10:20, 10:20] = masks[1, 10:20, 20:30] = masks[2, 10:20, 40:50] = True
    scene = scenes.Scene(scene.image, np.array([1, 1, 1]), scene.boxes[:3], masks, np.zeros(3))
    assert scenes.touching_pairs(scene) == [(0, 1)]
    scene.labels = np.array([1, 2, 1])
    assert scenes.touching_pairs(scene) == []


def test_seed_ranges_do_not_overlap():
    ranges = [scenes.TRAIN_SEEDS, scenes.VALIDATION_SEEDS, scenes.TEST_SEEDS, scenes.NOTEBOOK_SEEDS]
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            assert a.stop <= b.start or b.stop <= a.start


def test_make_batch_pads_to_max_instances():
    images, boxes, labels, masks = scenes.make_batch([3, 4])
    assert images.shape == (2, 128, 128, 3) and masks.shape == (2, scenes.MAX_INSTANCES, 128, 128)
    for k, seed in enumerate([3, 4]):
        scene = scenes.make_scene(seed)
        n = len(scene.labels)
        assert (labels[k, :n] == scene.labels).all() and (labels[k, n:] == 0).all()
        assert (masks[k, :n] == scene.masks).all() and not masks[k, n:].any()
