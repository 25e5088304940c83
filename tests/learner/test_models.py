import socket

import keras
import numpy as np
import pytest

from helpers import models


def test_encoder_returns_pool3_pool4_pool5_for_sizes_divisible_by_32():
    encoder = models.vgg16_encoder((64, 96, 3), weights=None)
    assert [tuple(o.shape) for o in encoder.outputs] == [
        (None, 8, 12, 256), (None, 4, 6, 512), (None, 2, 3, 512)]


def test_sizes_not_divisible_by_32_are_refused_with_a_suggestion():
    with pytest.raises(ValueError, match="multiples of 32.*352x480"):
        models.vgg16_encoder((360, 470, 3), weights=None)


def test_folded_preprocessing_matches_keras_vgg16_preprocessing(tmp_path):
    # Give VGG-16 some weights in a file, load them through the encoder, and check that
    # RGB 0..255 in gives what keras' own BGR, mean-subtracted preprocessing gives.
    keras.utils.set_random_seed(0)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    weights_file = tmp_path / "vgg16.weights.h5"
    base.save_weights(weights_file)
    encoder = models.vgg16_encoder((32, 32, 3), weights=str(weights_file))
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = keras.Model(base.input, base.get_layer("block3_pool").output)(
        keras.applications.vgg16.preprocess_input(images.copy()))
    got = encoder(images)[0]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected),
                               rtol=1e-4, atol=1e-3)


def test_unavailable_imagenet_weights_fall_back_to_random_with_a_note(monkeypatch, tmp_path, capsys):
    import keras.src.applications.vgg16 as vgg16_module
    import keras.src.backend.config as keras_config

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(vgg16_module, "WEIGHTS_PATH_NO_TOP", f"http://127.0.0.1:{port}/vgg16.h5")
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras-home"))
    encoder = models.vgg16_encoder((32, 32, 3), weights="imagenet")
    assert "could not load the ImageNet weights" in capsys.readouterr().out
    assert len(encoder.outputs) == 3


@pytest.mark.parametrize("content", [None, b"not an HDF5 file"])
def test_a_weights_file_that_cannot_be_loaded_raises_naming_it(tmp_path, capsys, content):
    path = tmp_path / "vgg16_notop.h5"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="Could not load VGG-16 weights from .*vgg16_notop.h5"):
        models.vgg16_encoder((32, 32, 3), weights=str(path))
    assert "random weights" not in capsys.readouterr().out  # no silent fallback
