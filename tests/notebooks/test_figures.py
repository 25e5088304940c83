"""The architecture figures (maintainer.figures): what they describe, and that the committed PNGs match.

The models are built without weights (a StatelessScope), so FCN-8s with its 4096-wide conv6
costs no memory; the whole file takes a few seconds.
"""

import pytest
from PIL import Image

from helpers import mask_rcnn
from maintainer import figures


@pytest.fixture(scope="module")
def described():
    """Each figure's description from today's models (notebook 1's own fcn), built once."""
    return {name: figures.describe_figure(name) for name in figures.FIGURES}


@pytest.fixture(scope="module")
def fcn(described):
    return {v["variant"]: v for v in described["fcn"]["variants"]}


@pytest.fixture(scope="module")
def unet(described):
    return described["unet"]


@pytest.fixture(scope="module")
def small_rcnn(described):
    return described["mask_rcnn"]


def test_fcn_encoder_and_head_at_full_mode_size(fcn):
    sides = [(192 // 2**k, 256 // 2**k) for k in range(1, 6)]
    for v in fcn.values():
        assert v["input"] == [192, 256, 3]
        assert [p["name"] for p in v["encoder"]] == ["pool1", "pool2", "pool3", "pool4", "pool5"]
        assert [p["shape"] for p in v["encoder"]] == [[h, w, c] for (h, w), c in zip(sides, [64, 128, 256, 512, 512])]
        assert [p["convs"] for p in v["encoder"]] == [2, 2, 3, 3, 3]  # VGG-16: 13 convolutions
        assert [(c["layer"], c["kernel"], c["shape"]) for c in v["head"]] == [
            ("conv6", 7, [6, 8, 4096]), ("conv7", 1, [6, 8, 4096])]
        assert (v["score"]["layer"], v["score"]["kernel"], v["score"]["shape"]) == ("score_conv7", 1, [6, 8, 11])  # 11 classes: void is not predicted
        assert v["output"] == {"op": "activation", "layer": "class_probabilities", "activation": "softmax",
                               "shape": [192, 256, 11]}


def test_fcn_variants_differ_by_their_skips(fcn):
    def path(v):
        return [(s["op"], s.get("factor"), s["skip"]["from"] if s["op"] == "add" else None) for s in v["decoder"]]

    assert path(fcn["32s"]) == [("up", 32, None)]
    assert path(fcn["16s"]) == [("up", 2, None), ("add", None, "pool4"), ("up", 16, None)]
    assert path(fcn["8s"]) == [("up", 2, None), ("add", None, "pool4"), ("up", 2, None),
                               ("add", None, "pool3"), ("up", 8, None)]
    adds = [s for s in fcn["8s"]["decoder"] if s["op"] == "add"]
    assert [(a["layer"], a["skip"]["layer"], a["skip"]["kernel"], a["shape"]) for a in adds] == [
        ("skip_pool4", "score_pool4", 1, [12, 16, 11]), ("skip_pool3", "score_pool3", 1, [24, 32, 11])]
    ups = [s for v in fcn.values() for s in v["decoder"] if s["op"] == "up"]
    assert all(u["kernel"] == 2 * u["stride"] == 2 * u["factor"] for u in ups)  # kernel = 2 x stride


def test_unet_levels_skips_and_bottleneck(unet):
    assert unet["input"] == [128, 128, 3] and unet["base_filters"] == 64 and unet["classes"] == 3
    assert [lv["shape"] for lv in unet["levels"]] == [[128, 128, 64], [64, 64, 128], [32, 32, 256], [16, 16, 512]]
    assert [lv["pooled"] for lv in unet["levels"]] == [[64, 64, 64], [32, 32, 128], [16, 16, 256], [8, 8, 512]]
    assert unet["bottleneck"] == {"convs": 2, "kernel": 3, "shape": [8, 8, 1024]}
    # The decoder climbs back: one concatenation per level, at 16, 32, 64 and 128 pixels.
    assert [(d["level"], d["up"], d["joined"], d["shape"]) for d in unet["decoder"]] == [
        (3, [16, 16, 512], [16, 16, 1024], [16, 16, 512]), (2, [32, 32, 256], [32, 32, 512], [32, 32, 256]),
        (1, [64, 64, 128], [64, 64, 256], [64, 64, 128]), (0, [128, 128, 64], [128, 128, 128], [128, 128, 64])]
    assert {(d["convs"], d["kernel"], d["up_kernel"], d["up_stride"]) for d in unet["decoder"]} == {(2, 3, 3, 2)}
    assert unet["output"] == {"kernel": 1, "shape": [128, 128, 3], "activation": "softmax"}
    assert unet["conv_unit"] == ["Conv2D", "BatchNormalization", "relu"] and unet["dropout"]


def test_mask_rcnn_stages_follow_its_constants(small_rcnn):
    d, size = small_rcnn, mask_rcnn.IMAGE_SIZE
    assert d["image"] == [size, size, 3]
    # build_backbone's four stages (strides 2 to 16) and its pyramid P1-P3, each fed by its stage.
    assert [(c["stride"], c["shape"]) for c in d["bottom_up"]] == [
        (2, [64, 64, 24]), (4, [32, 32, 48]), (8, [16, 16, 64]), (16, [8, 8, 96])]
    assert [(p["name"], p["stride"], p["shape"][:2], p["lateral"], p["top_down"]) for p in d["pyramid"]] == [
        ("P1", 2, [64, 64], "C1", True), ("P2", 4, [32, 32], "C2", True), ("P3", 8, [16, 16], "C3", True)]
    side, per_cell = size // mask_rcnn.ANCHOR_STRIDE, len(mask_rcnn.ANCHOR_SIZES) * len(mask_rcnn.ANCHOR_RATIOS)
    rpn = d["rpn"]
    assert rpn["level"] == "P3" and rpn["anchors"] == side * side * per_cell == 2304
    assert rpn["outputs"] == {"logits": [side, side, per_cell], "deltas": [side, side, 4 * per_cell]}
    # What detect() keeps of them: the best 1,000 decoded, up to 100 after NMS at IoU 0.7; it
    # calls proposals() with its defaults, which is what the figure reads.
    assert (rpn["pre_nms"], rpn["post_nms"], rpn["iou_threshold"]) == (1000, 100, 0.7)
    import inspect

    assert "self.proposals(*self.rpn(features))" in inspect.getsource(mask_rcnn.SmallMaskRCNN.detect)
    channels = {p["shape"][-1] for p in d["pyramid"]}
    assert d["box_head"]["input"][:2] == [mask_rcnn.BOX_ROI_SIZE] * 2 and d["box_head"]["input"][2] in channels
    assert d["mask_head"]["input"][:2] == [mask_rcnn.MASK_ROI_SIZE] * 2 and d["mask_head"]["input"][2] in channels
    # Fixed RoI levels: the box head crops P2 (48 channels), the mask head P1 (24).
    assert (d["box_head"]["level"], d["mask_head"]["level"]) == ("P2", "P1")
    levels = {p["name"]: p["shape"] for p in d["pyramid"]}
    assert (levels["P2"][-1], levels["P1"][-1]) == (d["box_head"]["input"][2], d["mask_head"]["input"][2])
    k = mask_rcnn.NUM_CLASSES
    assert d["box_head"]["outputs"] == {"logits": [k + 1], "deltas": [k + 1, 4]}
    assert list(d["mask_head"]["outputs"].values()) == [[mask_rcnn.MASK_SIZE, mask_rcnn.MASK_SIZE, k]]
    assert [(r["op"], r["count"]) for r in d["mask_head"]["layers"]] == [("conv", 4), ("transposed conv", 1), ("conv", 1)]
    assert d["mask_head"]["layers"][1]["shape"][:2] == [mask_rcnn.MASK_SIZE] * 2
    # As detect() runs: the box head's per-class NMS, with detect()'s defaults, gives the final
    # detections, and the mask head reads their boxes (not the proposals).
    assert d["detections"] == {"iou_threshold": 0.5, "score_threshold": 0.05}
    assert d["mask_head"]["boxes"] == "detections"
    source = inspect.getsource(mask_rcnn.SmallMaskRCNN.detect)
    assert source.index("combined_non_max_suppression") < source.index("self.mask_logits(features, boxes)")


def test_the_mask_rcnn_figure_refuses_to_draw_a_mask_head_fed_by_the_proposals(small_rcnn):
    described = {**small_rcnn, "mask_head": {**small_rcnn["mask_head"], "boxes": "proposals"}}
    with pytest.raises(ValueError, match="detect\\(\\) now gives it the proposals"):
        figures.draw_figure("mask_rcnn", described)


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_committed_figures_match_their_models(described, name):
    stored = figures.stored_description(figures.FIGURES_DIR / f"{name}.png")
    assert figures.canonical(stored) == figures.canonical(described[name]), \
        f"{name}.png is stale: redraw it with python -m maintainer.figures"


def _fcn_without_pool3_skip(encoder, n_classes, variant="8s", fc_filters=4096):
    fcn = figures.notebook_code.notebook_function("01_fcn8_camvid.ipynb", "fcn")
    return fcn(encoder, n_classes, "16s" if variant == "8s" else variant, fc_filters)


def _unet_half_as_wide(input_shape, n_classes, base_filters=64, depth=4, dropout=0.3):
    return figures.notebook_code.notebook_function("02_unet_pets.ipynb", "unet")(
        input_shape, n_classes, base_filters // 2, depth, dropout)


class _MaskHeadOnProposals(mask_rcnn.SmallMaskRCNN):
    def detect(self, images, score_threshold=0.05, iou_threshold=0.5):  # read, never run
        features = self.features(images)
        proposals, _, valid = self.proposals(*self.rpn(features))
        return self.mask_logits(features, proposals)


class _WiderMaskHead(mask_rcnn.SmallMaskRCNN):
    def __init__(self):
        super().__init__()
        import keras
        from keras import layers

        crops = keras.Input((mask_rcnn.MASK_ROI_SIZE, mask_rcnn.MASK_ROI_SIZE, 24))
        x = layers.Conv2D(64, 3, padding="same", activation="relu")(crops)
        x = layers.Conv2DTranspose(64, 2, 2, activation="relu")(x)
        self.mask_head = keras.Model(crops, layers.Conv2D(mask_rcnn.NUM_CLASSES, 1)(x))


@pytest.mark.parametrize("name, builder, replacement, where", [
    ("fcn", "fcn_function", lambda: _fcn_without_pool3_skip, "variants[2].decoder"),
    ("unet", "unet_function", lambda: _unet_half_as_wide, "bottleneck.shape[2] was 1024, the model now gives 512"),
    ("mask_rcnn", "mask_rcnn_model", _WiderMaskHead, "mask_head.layers"),
    ("mask_rcnn", "mask_rcnn_model", _MaskHeadOnProposals,
     'mask_head.boxes was "detections", the model now gives "proposals"'),
])
def test_a_changed_model_makes_its_figure_stale(monkeypatch, capsys, name, builder, replacement, where):
    monkeypatch.setattr(figures, builder, replacement)
    assert figures.main(["--check", name]) == 1
    problem, advice = capsys.readouterr().err.splitlines()
    assert problem.startswith(f"{figures.FIGURES_DIR / name}.png no longer matches its model: {where}")
    assert advice == "Redraw them with: python -m maintainer.figures"


def test_a_model_that_cannot_be_described_is_named_with_the_reason(monkeypatch, capsys):
    monkeypatch.setattr(figures, "unet_function",
                        lambda: figures.notebook_code.notebook_function("02_unet_pets.ipynb", "no_such_unet"))
    assert figures.main(["--check", "unet"]) == 2
    assert capsys.readouterr().err == "cannot describe unet: 02_unet_pets.ipynb defines no function no_such_unet\n"


def test_check_names_a_missing_figure_and_a_foreign_png(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "unet.png")
    assert figures.check(["fcn", "unet"], folder=tmp_path) == [
        f"{tmp_path / 'fcn.png'} is missing",
        f"{tmp_path / 'unet.png'} carries no 'architecture' description: not drawn by this module"]


def test_saved_png_carries_only_its_description_and_is_reproducible(tmp_path, unet):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for path in (first, second):
        figures.save_figure(figures.draw_figure("unet", unet), path, unet)
    assert first.read_bytes() == second.read_bytes()
    with Image.open(first) as image:
        assert set(image.text) == {"architecture"}  # no date, no software version
    assert figures.stored_description(first) == unet


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_committed_figures_are_small_and_wide_enough(name):
    path = figures.FIGURES_DIR / f"{name}.png"
    assert path.stat().st_size < 200_000
    with Image.open(path) as image:
        assert image.width >= 1400  # sharp when GitHub shows it about 900 pixels wide


def test_a_model_of_another_shape_is_refused_with_the_reason():
    import keras
    from keras import layers

    def not_a_unet():
        image = keras.Input((32, 32, 3))
        x = layers.MaxPooling2D(2)(layers.Conv2D(8, 3, padding="same")(image))
        return figures._describe_unet_model(keras.Model(image, layers.Conv2D(2, 1)(x)))

    with pytest.raises(ValueError, match="as many poolings, upsamplings and concatenations; got 1, 0 and 0"):
        figures.without_weights(not_a_unet)

