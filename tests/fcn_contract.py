"""A copy of notebook 1's ``fcn`` as its contract states it (issue 16), for tests/test_figures.py.

Notebook 1 gains ``fcn(encoder, n_classes, variant="8s", fc_filters=4096)`` in another branch;
until then the figure code is developed and tested against this copy. Once the notebook
defines ``fcn``, the figures test reads the notebook's own function (``helpers.figures``).
"""

import keras
from keras import layers


def fcn(encoder, n_classes, variant="8s", fc_filters=4096):
    """Build FCN-32s, FCN-16s or FCN-8s on an encoder that returns (pool3, pool4, pool5)."""
    if variant not in ("32s", "16s", "8s"):
        raise ValueError(f"variant must be '32s', '16s' or '8s', not {variant!r}")
    pool3, pool4, pool5 = encoder.outputs
    x = layers.Conv2D(fc_filters, 7, padding="same", activation="relu", name="conv6")(pool5)
    x = layers.Dropout(0.5)(x)
    x = layers.Conv2D(fc_filters, 1, activation="relu", name="conv7")(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Conv2D(n_classes, 1, name="score_conv7")(x)
    stride = 32
    if variant in ("16s", "8s"):
        up = layers.Conv2DTranspose(n_classes, 4, strides=2, padding="same", use_bias=False,
                                    name="up_to_pool4")(x)
        score4 = layers.Conv2D(n_classes, 1, name="score_pool4")(pool4)
        x = layers.Add(name="skip_pool4")([up, score4])
        stride = 16
    if variant == "8s":
        up = layers.Conv2DTranspose(n_classes, 4, strides=2, padding="same", use_bias=False,
                                    name="up_to_pool3")(x)
        score3 = layers.Conv2D(n_classes, 1, name="score_pool3")(pool3)
        x = layers.Add(name="skip_pool3")([up, score3])
        stride = 8
    x = layers.Conv2DTranspose(n_classes, 2 * stride, strides=stride, padding="same",
                               use_bias=False, name="up_to_input")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="class_probabilities")(x)
    return keras.Model(encoder.inputs, outputs, name=f"fcn{variant}")
