"""Fixtures for the helpers' unit tests (the loopback server lives in the root conftest)."""

import pytest

from helpers import synthetic


@pytest.fixture
def small_camvid_zip(tmp_path):
    """A tiny, valid CamVid-format archive (3 train and 2 test pairs of 32x48)."""
    path = tmp_path / "small-camvid.zip"
    synthetic.write_camvid_archive(path, seed=1, n_train=3, n_test=2, height=32, width=48)
    return path
