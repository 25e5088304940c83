"""Notebook 1's FCN-8 encoder, kept out of the notebook because the benchmarks build it too.

``vgg16_encoder``: keras.applications' VGG-16 with ImageNet weights when they can be had,
random weights (and a printed note) otherwise.
"""

import keras
from keras import layers

# ImageNet mean of the Caffe-trained VGG weights, in RGB order.
VGG_MEAN_RGB = (123.68, 116.779, 103.939)
VGG_FEATURES = ("block3_pool", "block4_pool", "block5_pool")


def vgg16_encoder(input_shape=(224, 224, 3), weights="imagenet"):
    """Return a VGG-16 model from RGB images (0..255) to its pool-3, pool-4 and pool-5 features.

    ``weights`` is "imagenet", None (random) or the path of a VGG-16 weights file.
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
        if weights is None:
            raise
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
