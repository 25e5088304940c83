"""Notebook 1's FCN family (``fcn``, pulled out of the notebook) and its bilinear upsampling start."""

import matplotlib

matplotlib.use("Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from helpers import models, viz  # noqa: E402
from maintainer import notebook_code

N_CLASSES = 11  # CamVid's classes; void (label 11) is not predicted
SIZE = (64, 96)
# variant -> (the pooling layers whose scores are added, the stride of the last upsampling)
FAMILY = {"32s": ([], 32), "16s": (["pool4"], 16), "8s": (["pool4", "pool3"], 8)}
VGG_POOL = {"pool3": "block3_pool", "pool4": "block4_pool", "pool5": "block5_pool"}


def sources(model, name):
    """Return the names of the layers whose outputs feed layer ``name``."""
    inputs = model.get_layer(name).input
    return [t._keras_history.operation.name for t in (inputs if isinstance(inputs, list) else [inputs])]


@pytest.fixture(scope="module")
def family():
    fcn = notebook_code.notebook_function("01_fcn8_camvid.ipynb", "fcn")
    keras.utils.set_random_seed(0)
    return {variant: fcn(models.vgg16_encoder((*SIZE, 3), weights=None), N_CLASSES, variant, 8)
            for variant in FAMILY}


def upsample(image, stride):
    """Upsample ``image`` by a transposed convolution that starts from ``bilinear_kernel``."""
    up = layers.Conv2DTranspose(image.shape[-1], 2 * stride, strides=stride, padding="same",
                                use_bias=False)
    up.build(image.shape)
    up.set_weights([models.bilinear_kernel(2 * stride, image.shape[-1])])
    return keras.ops.convert_to_numpy(up(image))


@pytest.mark.parametrize("stride", [2, 4, 8, 16, 32])
def test_bilinear_kernel_upsamples_exactly_as_bilinear_resizing_away_from_the_border(stride):
    image = np.random.default_rng(stride).normal(size=(2, 5, 7, 3)).astype("float32")
    got = upsample(image, stride)
    resized = tf.image.resize(image, (5 * stride, 7 * stride), method="bilinear").numpy()
    scaled = keras.ops.convert_to_numpy(layers.UpSampling2D(stride, interpolation="bilinear")(image))
    border = stride // 2
    inside = (slice(None), slice(border, -border), slice(border, -border))
    np.testing.assert_allclose(got[inside], resized[inside], atol=1e-5)
    np.testing.assert_allclose(got[inside], scaled[inside], atol=1e-5)
    # The border is exactly that wide: its innermost row and column already differ.
    gap = np.abs(got - resized)
    assert gap[:, border - 1].max() > 0.01 and gap[:, :, border - 1].max() > 0.01


def test_bilinear_kernel_is_the_papers_tent_on_each_channel_alone():
    tent = np.array([0.25, 0.75, 0.75, 0.25])
    kernel = models.bilinear_kernel(4, 3)
    assert kernel.shape == (4, 4, 3, 3) and kernel.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(kernel[:, :, c, c], np.outer(tent, tent))
    assert not kernel[:, :, 0, 1].any() and not kernel[:, :, 2, 0].any()  # no mixing of classes
    np.testing.assert_allclose(models.bilinear_kernel(3, 1)[1, :, 0, 0], [0.5, 1.0, 0.5])
    with pytest.raises(ValueError, match="at least 1"):
        models.bilinear_kernel(0, 3)


def test_init_bilinear_sets_every_upsampling_and_refuses_one_that_cannot_be_bilinear():
    inputs = keras.Input((4, 4, 2))
    x = layers.Conv2DTranspose(2, 4, strides=2, padding="same", use_bias=False, name="up2")(inputs)
    x = layers.Conv2DTranspose(2, 16, strides=8, padding="same", name="up8")(x)  # with a bias
    model = keras.Model(inputs, layers.Conv2D(2, 1, name="not_an_upsampling")(x))
    before = model.get_layer("not_an_upsampling").get_weights()
    assert models.init_bilinear(model) == ["up2", "up8"]
    np.testing.assert_array_equal(model.get_layer("up2").kernel, models.bilinear_kernel(4, 2))
    kernel, bias = model.get_layer("up8").get_weights()
    np.testing.assert_array_equal(kernel, models.bilinear_kernel(16, 2))
    assert not bias.any()
    for was, now in zip(before, model.get_layer("not_an_upsampling").get_weights()):
        np.testing.assert_array_equal(was, now)

    odd = keras.Sequential([keras.Input((4, 4, 1)),
                            layers.Conv2DTranspose(1, 3, strides=2, padding="same", name="odd")])
    with pytest.raises(ValueError, match="'odd'.*twice its stride.*3x3 kernel"):
        models.init_bilinear(odd)
    widening = keras.Sequential([keras.Input((4, 4, 1)), layers.Conv2DTranspose(3, 4, strides=2)])
    with pytest.raises(ValueError, match="1 -> 3 channels"):
        models.init_bilinear(widening)


@pytest.mark.parametrize("variant", FAMILY)
def test_each_fcn_maps_an_image_to_class_probabilities_of_its_size(family, variant):
    model = family[variant]
    assert model.name == f"fcn{variant}"
    assert model.output_shape == (None, *SIZE, N_CLASSES)
    assert model.get_layer("class_probabilities").dtype_policy.compute_dtype == "float32"
    images = np.random.default_rng(0).uniform(0, 255, (1, *SIZE, 3)).astype("float32")
    probabilities = model.predict(images, verbose=0)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("variant", FAMILY)
def test_each_fcn_adds_the_scores_of_its_own_pooling_layers(family, variant):
    model = family[variant]
    skips, stride = FAMILY[variant]
    names = {layer.name for layer in model.layers}
    assert [layer.name for layer in model.layers if isinstance(layer, layers.Add)] == \
        [f"skip_{p}" for p in skips]
    for pool in ("pool4", "pool3"):  # a variant without a skip has none of its layers
        assert ({f"score_{pool}", f"up_to_{pool}", f"skip_{pool}"} <= names) == (pool in skips)
        assert not ({f"score_{pool}", f"up_to_{pool}"} & names) == (pool not in skips)
    # conv6 reads pool-5; conv7's output is scored (not pool-5's); the scores go up 2x per skip.
    assert sources(model, "conv6") == ["block5_pool"]
    assert sources(model, "score_conv7") == ["drop7"] and sources(model, "drop7") == ["conv7"]
    previous = "score_conv7"
    for pool in skips:
        assert sources(model, f"score_{pool}") == [VGG_POOL[pool]]
        assert sources(model, f"up_to_{pool}") == [previous]
        assert sorted(sources(model, f"skip_{pool}")) == sorted([f"up_to_{pool}", f"score_{pool}"])
        up = model.get_layer(f"up_to_{pool}")
        assert tuple(up.strides) == (2, 2) and tuple(up.kernel_size) == (4, 4)
        previous = f"skip_{pool}"
    last = model.get_layer("up_to_input")
    assert sources(model, "up_to_input") == [previous]
    assert tuple(last.strides) == (stride, stride) and tuple(last.kernel_size) == (2 * stride,) * 2
    assert sources(model, "class_probabilities") == ["up_to_input"]


def test_fcn_refuses_an_unknown_variant(family):
    fcn = notebook_code.notebook_function("01_fcn8_camvid.ipynb", "fcn")
    with pytest.raises(ValueError, match="variant must be one of"):
        fcn(models.vgg16_encoder((32, 32, 3), weights=None), N_CLASSES, "4s", 8)


def test_init_bilinear_on_the_fcns_sets_their_upsamplings(family):
    expected = {"32s": ["up_to_input"], "16s": ["up_to_pool4", "up_to_input"],
                "8s": ["up_to_pool4", "up_to_pool3", "up_to_input"]}
    for variant, model in family.items():
        assert models.init_bilinear(model) == expected[variant]
        size = 2 * FAMILY[variant][1]
        np.testing.assert_array_equal(model.get_layer("up_to_input").kernel,
                                      models.bilinear_kernel(size, N_CLASSES))


def test_crops_figure_draws_the_frame_the_crops_and_a_legend():
    truth = np.zeros((8, 12), int)
    truth[:, 6:] = 2
    fig = viz.crops_figure(np.zeros((8, 12, 3)), truth, {"a": truth, "b": 1 - np.clip(truth, 0, 1)},
                           ["x", "y", "z"], (2, 4, 4, 6), title="t")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:4] == ["frame (box: the crop)", "ground truth", "a", "b"]
    crop = fig.axes[1].images[0].get_array()
    assert crop.shape == (4, 6, 3)  # the box, pixel for pixel
    np.testing.assert_array_equal(crop[0, 1], viz.palette(3)[0])
    np.testing.assert_array_equal(crop[0, 2], viz.palette(3)[2])
    assert [t.get_text() for t in fig.axes[-1].get_legend().get_texts()] == ["0 x", "1 y", "2 z"]
    plt.close(fig)
    with pytest.raises(ValueError, match="does not fit"):
        viz.crops_figure(np.zeros((8, 12, 3)), truth, {}, ["x", "y", "z"], (6, 0, 4, 4))
