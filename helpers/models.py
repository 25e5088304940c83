"""Notebook 1's FCN encoder and its upsampling initialisation, kept out of the notebook
because the benchmarks and the figures build the FCNs too.

- ``vgg16_encoder``: keras.applications' VGG-16 with ImageNet weights when they can be had,
  random weights (and a printed note) otherwise.
- ``bilinear_kernel`` and ``init_bilinear``: the FCN paper's initialisation of the
  ``Conv2DTranspose`` upsampling layers, as bilinear interpolation.
"""

import keras
import numpy as np
from keras import layers

# ImageNet mean of the Caffe-trained VGG weights, in RGB order.
VGG_MEAN_RGB = (123.68, 116.779, 103.939)
VGG_FEATURES = ("block3_pool", "block4_pool", "block5_pool")


def vgg16_encoder(input_shape=(224, 224, 3), weights="imagenet"):
    """Return a VGG-16 model from RGB images (0..255) to its pool-3, pool-4 and pool-5 features.

    ``weights`` is "imagenet", None (random) or the path of a VGG-16 weights file. When the
    ImageNet weights cannot be had (offline, no cache) it prints a note and starts from random
    weights; a weights file that cannot be loaded raises ValueError naming it.
    """
    height, width = input_shape[:2]
    if height % 32 or width % 32:
        raise ValueError(f"FCN input sides must be multiples of 32 (five 2x2 poolings); got "
                         f"{height}x{width}. Try {max(32, round(height / 32) * 32)}x"
                         f"{max(32, round(width / 32) * 32)}.")
    inputs = keras.Input(input_shape, name="image")
    # The ImageNet weights expect BGR images minus the ImageNet mean. Subtracting the
    # mean here, and reversing the first kernel's channel axis below, puts that
    # preprocessing inside the model, so it takes plain RGB and saves without code.
    centred = layers.Normalization(mean=VGG_MEAN_RGB, variance=(1.0, 1.0, 1.0),
                                   name="imagenet_centring")(inputs)
    try:
        base = keras.applications.VGG16(include_top=False, weights=weights, input_tensor=centred)
    except Exception as e:  # no network, no cache, or a broken download
        if weights != "imagenet":  # random weights, or a file the learner named: say what failed
            if weights is None:
                raise
            raise ValueError(f"Could not load VGG-16 weights from {weights}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
        print("Note: could not load the ImageNet weights for VGG-16 "
              f"({type(e).__name__}: {str(e).splitlines()[0][:160]}).\n"
              "The encoder starts from random weights: training takes far longer and scores "
              "are lower. To use the weights offline, put "
              "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 in ~/.keras/models/.")
        weights = None
        base = keras.applications.VGG16(include_top=False, weights=None, input_tensor=centred)
    if weights is not None:
        first = base.get_layer("block1_conv1")
        kernel, bias = first.get_weights()
        first.set_weights([kernel[:, :, ::-1, :], bias])
    return keras.Model(inputs, [base.get_layer(name).output for name in VGG_FEATURES],
                       name="vgg16_encoder")


def bilinear_kernel(size, channels):
    """Return a (size, size, channels, channels) ``Conv2DTranspose`` kernel that upsamples bilinearly.

    With ``strides = size // 2`` and ``padding="same"`` it reproduces
    ``tf.image.resize(..., "bilinear")`` (and ``UpSampling2D(interpolation="bilinear")``) except
    in the outer ``size // 4`` pixels, where the transposed convolution sees zeros beyond the
    border. Each channel is spread into its own output channel only. The filter is the FCN
    paper's (Long, Shelhamer and Darrell 2015, ``upsample_filt`` in their code): a tent
    ``1 - |i - centre| / factor`` along each axis. Taught in notebook 1.
    """
    if size < 1 or channels < 1:
        raise ValueError(f"A kernel needs a size and channels of at least 1, not {size} and {channels}.")
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 else factor - 0.5
    tent = 1 - np.abs(np.arange(size) - centre) / factor
    kernel = np.zeros((size, size, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(tent, tent)[..., None]
    return kernel


def init_bilinear(model):
    """Set every ``Conv2DTranspose`` of ``model`` to bilinear upsampling; return the layers' names.

    Each must map n channels to n with a square kernel of twice its stride (notebook 1's FCN
    upsamplings do); its bias, if any, is set to zero. Setting the weights after building
    (rather than a custom initializer) keeps the saved ``.keras`` file plain Keras, loadable
    with ``safe_mode=True``. Taught in notebook 1.
    """
    names = []
    for layer in model.layers:
        if not isinstance(layer, layers.Conv2DTranspose):
            continue
        size, width, out_channels, in_channels = layer.kernel.shape
        if size != width or out_channels != in_channels or tuple(layer.strides) != (size // 2,) * 2 \
                or size % 2:
            raise ValueError(
                f"Layer {layer.name!r} cannot start as bilinear upsampling: it needs n -> n channels "
                f"and a square kernel twice its stride, but has a {size}x{width} kernel, strides "
                f"{tuple(layer.strides)}, {in_channels} -> {out_channels} channels.")
        weights = [bilinear_kernel(size, in_channels)]
        if layer.use_bias:
            weights.append(np.zeros(out_channels, np.float32))
        layer.set_weights(weights)
        names.append(layer.name)
    return names
