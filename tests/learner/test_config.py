import pytest

from helpers import config


@pytest.mark.parametrize("value, quick", [("1", True), ("true", True), ("0", False), ("", False)])
def test_quick_mode_reads_course_quick(monkeypatch, value, quick):
    monkeypatch.setenv("COURSE_QUICK", value)
    assert config.quick_mode() is quick


def test_unclear_course_quick_is_an_error(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "maybe")
    with pytest.raises(ValueError, match="COURSE_QUICK"):
        config.quick_mode()


def test_data_dir_follows_course_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    assert config.data_dir() == (tmp_path / "cache").resolve()
    assert (tmp_path / "cache").is_dir()
    monkeypatch.delenv("COURSE_DATA_DIR")
    assert config.data_dir() == config.REPO_DIR / "data"


def test_mirror_url_variable(monkeypatch):
    monkeypatch.setenv("COURSE_CAMVID_URL", " file:///x.zip ")
    assert config.url_variable("camvid") == "COURSE_CAMVID_URL"
    assert config.mirror_url("camvid") == "file:///x.zip"
    monkeypatch.delenv("COURSE_CAMVID_URL")
    assert config.mirror_url("camvid") is None


def test_quick_and_full_runs_keep_their_models_apart(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    full, quick = config.models_dir(quick=False), config.models_dir(quick=True)
    assert full == tmp_path.resolve() / "models" and full.is_dir()
    assert quick == tmp_path.resolve() / "models-quick" and quick.is_dir()
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert config.models_dir() == quick
