import http.server
import json
import os
import socket
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image
from zip_tools import rewrite_zip

from helpers import config, datasets, download, synthetic


def fetch_test_archive(url, root, **kwargs):
    """Fetch a CamVid-format archive into root/camvid-test through download.fetch_archive."""
    kwargs.setdefault("check_tree", datasets.check_camvid_tree)
    return download.fetch_archive(url, "camvid-test", what="the test archive",
                                  mirror_var="COURSE_CAMVID_URL", root=root, **kwargs)


def assert_cache_clean(root):
    """Nothing but empty folders may be left behind by a failed fetch."""
    leftovers = [p for p in root.rglob("*") if p.is_file()]
    assert leftovers == []
    assert not (root / "camvid-test").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".camvid-test")]


def test_fetch_downloads_validates_extracts_and_records_the_hash(http_dir, small_camvid_zip, tmp_path):
    folder, base = http_dir
    (folder / "fcnn-dataset.zip").write_bytes(small_camvid_zip.read_bytes())
    root = tmp_path / "cache"
    target = fetch_test_archive(f"{base}/fcnn-dataset.zip", root)
    assert target == root / "camvid-test"
    assert len(datasets.camvid_pairs(target, "train")) == 3
    record = json.loads((root / "downloads/camvid-test/fcnn-dataset.zip.json").read_text())
    assert record["sha256"] == download.sha256_file(small_camvid_zip)
    assert record["url"] == f"{base}/fcnn-dataset.zip"
    # Cached: a second call must not need the server.
    (folder / "fcnn-dataset.zip").unlink()
    assert fetch_test_archive(f"{base}/fcnn-dataset.zip", root) == target


def test_pinned_checksum_is_enforced(http_dir, small_camvid_zip, tmp_path):
    folder, base = http_dir
    (folder / "a.zip").write_bytes(small_camvid_zip.read_bytes())
    root = tmp_path / "cache"
    with pytest.raises(download.DataError, match="SHA-256"):
        fetch_test_archive(f"{base}/a.zip", root, sha256="0" * 64)
    assert_cache_clean(root)
    # The right pin passes.
    fetch_test_archive(f"{base}/a.zip", root, sha256=download.sha256_file(small_camvid_zip))


def test_truncated_archive_is_rejected_and_not_cached(http_dir, small_camvid_zip, tmp_path):
    folder, base = http_dir
    data = small_camvid_zip.read_bytes()
    (folder / "cut.zip").write_bytes(data[: len(data) // 2])
    root = tmp_path / "cache"
    with pytest.raises(download.DataError, match="truncated"):
        fetch_test_archive(f"{base}/cut.zip", root)
    assert_cache_clean(root)


def test_corrupt_member_is_rejected(http_dir, small_camvid_zip, tmp_path):
    folder, base = http_dir
    data = bytearray(small_camvid_zip.read_bytes())
    with zipfile.ZipFile(small_camvid_zip) as zf:
        info = zf.infolist()[0]
    data[info.header_offset + 30 + len(info.filename) + 40] ^= 0xFF  # flip a byte of member 0
    (folder / "bad.zip").write_bytes(bytes(data))
    root = tmp_path / "cache"
    with pytest.raises(download.DataError, match="CRC|corrupt"):
        fetch_test_archive(f"{base}/bad.zip", root)
    assert_cache_clean(root)


@pytest.mark.parametrize("evil_name", ["../escaped.png", "/tmp/absolute-escape.png",
                                       "dataset1/../../escaped.png"])
def test_unsafe_member_paths_are_rejected(http_dir, small_camvid_zip, tmp_path, evil_name):
    folder, base = http_dir
    rewrite_zip(small_camvid_zip, folder / "evil.zip", lambda n, d: (n, d))
    with zipfile.ZipFile(folder / "evil.zip", "a") as zf:
        zf.writestr(evil_name, b"x")
    root = tmp_path / "cache"
    with pytest.raises(download.DataError, match="unsafe"):
        fetch_test_archive(f"{base}/evil.zip", root)
    assert_cache_clean(root)
    assert not (tmp_path / "escaped.png").exists()
    assert not os.path.exists("/tmp/absolute-escape.png")


def test_symlink_member_is_rejected(http_dir, small_camvid_zip, tmp_path):
    folder, base = http_dir
    rewrite_zip(small_camvid_zip, folder / "link.zip", lambda n, d: (n, d))
    with zipfile.ZipFile(folder / "link.zip", "a") as zf:
        info = zipfile.ZipInfo("dataset1/link.png")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    root = tmp_path / "cache"
    with pytest.raises(download.DataError, match="symbolic link"):
        fetch_test_archive(f"{base}/link.zip", root)
    assert_cache_clean(root)


@pytest.mark.parametrize("edit, message", [
    (lambda n, d: None if n.endswith("annotations_prepped_test/0006R0_000060.png") else (n, d),
     "do not pair up"),
    (lambda n, d: (n.replace("images_prepped", "frames"), d), "missing folder.*images_prepped_train"),
])
def test_structure_mismatch_is_rejected(http_dir, small_camvid_zip, tmp_path, edit, message):
    folder, base = http_dir
    rewrite_zip(small_camvid_zip, folder / "odd.zip", edit)
    root = tmp_path / "cache"
    with pytest.raises(download.DataError, match=message):
        fetch_test_archive(f"{base}/odd.zip", root)
    assert_cache_clean(root)


def test_wrong_counts_are_rejected(http_dir, small_camvid_zip, tmp_path):
    folder, base = http_dir
    (folder / "a.zip").write_bytes(small_camvid_zip.read_bytes())
    root = tmp_path / "cache"
    with pytest.raises(download.DataError, match="expected 367"):
        fetch_test_archive(f"{base}/a.zip", root,
              check_tree=lambda t: datasets.check_camvid_tree(t, datasets.CAMVID_SPLITS))
    assert_cache_clean(root)


def test_offline_download_names_url_cache_mirror_and_quick_mode(tmp_path):
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/fcnn-dataset.zip"
    root = tmp_path / "cache"
    with pytest.raises(download.DataError) as error:
        fetch_test_archive(url, root)
    message = str(error.value)
    assert url in message
    assert str(root / "downloads" / "camvid-test" / "fcnn-dataset.zip") in message
    assert "COURSE_CAMVID_URL" in message and download.offline_hint() in message
    assert_cache_clean(root)


def test_http_error_is_reported(http_dir, tmp_path):
    _, base = http_dir
    root = tmp_path / "cache"
    with pytest.raises(download.DataError, match="HTTP 404"):
        fetch_test_archive(f"{base}/missing.zip", root)
    assert_cache_clean(root)


def test_connection_dropped_mid_transfer_is_reported(small_camvid_zip, tmp_path):
    data = small_camvid_zip.read_bytes()

    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:1000])  # then close: the body is short

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Short)
    threading.Thread(target=server.handle_request, daemon=True).start()
    root = tmp_path / "cache"
    try:
        with pytest.raises(download.DataError, match="Could not download"):
            fetch_test_archive(f"http://127.0.0.1:{server.server_address[1]}/a.zip", root)
    finally:
        server.server_close()
    assert_cache_clean(root)


def cached_then_extraction_lost(http_dir, archive, tmp_path):
    """Fetch a.zip into a cache and lose the extraction: the next fetch starts from the cached archive."""
    folder, base = http_dir
    (folder / "a.zip").write_bytes(archive.read_bytes())
    root = tmp_path / "cache"
    target = fetch_test_archive(f"{base}/a.zip", root)
    (target / ".complete").unlink()
    return base, root, target


def test_changed_cached_archive_is_detected(http_dir, small_camvid_zip, tmp_path):
    base, root, _ = cached_then_extraction_lost(http_dir, small_camvid_zip, tmp_path)
    # Damage the cached archive: the recorded hash catches it.
    cached = root / "downloads/camvid-test/a.zip"
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(download.DataError, match="recorded SHA-256"):
        fetch_test_archive(f"{base}/a.zip", root)


def test_a_cached_archive_without_its_record_is_fetched_again(http_dir, small_camvid_zip, tmp_path):
    base, root, target = cached_then_extraction_lost(http_dir, small_camvid_zip, tmp_path)
    # A crash between saving the archive and its record: the archive's source is unknown.
    (root / "downloads/camvid-test/a.zip.json").unlink()
    cached = root / "downloads/camvid-test/a.zip"
    cached.write_bytes(b"not the archive the server has")
    assert fetch_test_archive(f"{base}/a.zip", root) == target
    assert cached.read_bytes() == small_camvid_zip.read_bytes()


def test_a_cached_archive_that_cannot_be_unpacked_is_reported_as_kept(http_dir, small_camvid_zip,
                                                                       tmp_path):
    base, root, _ = cached_then_extraction_lost(http_dir, small_camvid_zip, tmp_path)
    # The archive checks out, but the tree check has become stricter since it was cached.
    with pytest.raises(download.DataError, match=r"(?s)cached archive .*a\.zip was left as it was"):
        download.fetch_archive(f"{base}/a.zip", "camvid-test", root=root,
                               check_tree=lambda tree: datasets.check_camvid_tree(tree, {"train": 9, "test": 9}))
    assert (root / "downloads/camvid-test/a.zip").is_file()


def test_incomplete_extraction_is_redone(http_dir, small_camvid_zip, tmp_path):
    folder, base = http_dir
    (folder / "a.zip").write_bytes(small_camvid_zip.read_bytes())
    root = tmp_path / "cache"
    (root / "camvid-test").mkdir(parents=True)
    (root / "camvid-test" / "half-written.png").write_bytes(b"junk")
    target = fetch_test_archive(f"{base}/a.zip", root)
    assert not (target / "half-written.png").exists()
    assert (target / ".complete").is_file()


def test_file_urls_work_like_downloads(small_camvid_zip, tmp_path):
    target = fetch_test_archive(small_camvid_zip.as_uri(), tmp_path / "cache")
    assert len(datasets.camvid_pairs(target, "test")) == 2


def test_a_different_url_replaces_the_cache_only_after_it_validates(http_dir, small_camvid_zip, tmp_path):
    folder, base = http_dir
    (folder / "one").mkdir()
    (folder / "two").mkdir()
    (folder / "one" / "a.zip").write_bytes(small_camvid_zip.read_bytes())
    other = synthetic.write_camvid_archive(tmp_path / "other.zip", seed=9, n_train=4, n_test=2,
                                           height=32, width=48)
    (folder / "two" / "a.zip").write_bytes(other.read_bytes())
    root = tmp_path / "cache"
    fetch_test_archive(f"{base}/one/a.zip", root)
    assert len(datasets.camvid_pairs(root / "camvid-test", "train")) == 3
    # Another mirror: fetched, validated, and only then swapped in (same file name, new data).
    target = fetch_test_archive(f"{base}/two/a.zip", root)
    assert len(datasets.camvid_pairs(target, "train")) == 4
    assert json.loads((target / ".complete").read_text())["url"] == f"{base}/two/a.zip"
    # A broken mirror leaves the good cache alone.
    (folder / "one" / "a.zip").write_bytes(b"not a zip")
    (root / "downloads/camvid-test/a.zip").unlink()
    with pytest.raises(download.DataError):
        fetch_test_archive(f"{base}/one/a.zip", root)
    assert len(datasets.camvid_pairs(target, "train")) == 4


def test_write_atomically_keeps_the_suffix_a_writer_needs_and_sets_the_mode(tmp_path):
    names = []

    def write(part):
        names.append(part.name)
        part.write_text("weights")

    path = download.write_atomically(tmp_path / "a.weights.h5", write, suffix=".weights.h5",
                                     mode=0o644)
    assert names[0].endswith(".weights.h5") and names[0] != "a.weights.h5"  # a temporary name
    assert path.read_text() == "weights" and path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.weights.h5"]


def test_generated_archives_leave_nothing_when_the_writer_fails(tmp_path):
    def broken_writer(path):
        path.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        download.generated_archive(tmp_path, "x.zip", broken_writer)
    assert list((tmp_path / "generated").iterdir()) == []
    path = download.generated_archive(tmp_path, "x.zip", lambda p: p.write_bytes(b"ok"))
    assert path.read_bytes() == b"ok" and list((tmp_path / "generated").iterdir()) == [path]


def test_an_image_pillow_cannot_read_is_reported_like_other_bad_archives(http_dir, small_camvid_zip,
                                                                         tmp_path):
    folder, base = http_dir
    rewrite_zip(small_camvid_zip, folder / "html.zip",
                lambda n, d: (n, b"<html>Not found</html>" if n.endswith("train/0001TP_000030.png")
                              else d))
    root = tmp_path / "cache"
    with pytest.raises(download.DataError) as error:
        fetch_test_archive(f"{base}/html.zip", root)
    message = str(error.value)
    assert f"{base}/html.zip" in message and "Nothing was cached" in message
    assert "COURSE_CAMVID_URL" in message
    # It names the member in the archive, not a staging folder that no longer exists.
    assert "dataset1/images_prepped_train/0001TP_000030.png" in message
    assert str(root) not in message
    assert_cache_clean(root)


@pytest.mark.parametrize("first", ["file", "folder"])
def test_a_member_that_is_both_file_and_folder_is_reported(http_dir, small_camvid_zip, tmp_path,
                                                           first):
    folder, base = http_dir
    with zipfile.ZipFile(folder / "clash.zip", "w") as zf:
        if first == "file":
            zf.writestr("dataset1", b"a file where a folder should be")
        zf.writestr("dataset1/a.png", b"x")
        if first == "folder":
            zf.writestr("dataset1", b"a file where a folder already is")
    root = tmp_path / "cache"
    with pytest.raises(download.DataError, match="(?s)clash.zip.*Nothing was cached.*"
                                                 "COURSE_CAMVID_URL"):
        fetch_test_archive(f"{base}/clash.zip", root)
    assert_cache_clean(root)


def _patch_header(data, local, central):
    """Apply ``edit(bytearray, offset)`` to every local and central header of a zip."""
    data = bytearray(data)
    for signature, edit in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        start = data.find(signature)
        while start >= 0:
            edit(data, start)
            start = data.find(signature, start + 4)
    return bytes(data)


def _set_u16(data, offset, value):
    data[offset:offset + 2] = value.to_bytes(2, "little")


@pytest.mark.parametrize("kind, local, central", [
    ("encrypted", lambda d, o: _set_u16(d, o + 6, 1), lambda d, o: _set_u16(d, o + 8, 1)),
    ("deflate64", lambda d, o: _set_u16(d, o + 8, 9), lambda d, o: _set_u16(d, o + 10, 9)),
])
def test_zips_python_cannot_unpack_are_reported(http_dir, tmp_path, kind, local, central):
    folder, base = http_dir
    with zipfile.ZipFile(folder / "plain.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("dataset1/a.png", b"x" * 100)
    (folder / "odd.zip").write_bytes(_patch_header((folder / "plain.zip").read_bytes(),
                                                   local, central))
    root = tmp_path / "cache"
    with pytest.raises(download.DataError, match="(?s)cannot unpack.*Nothing was cached"):
        fetch_test_archive(f"{base}/odd.zip", root)
    assert_cache_clean(root)


# --- Images (notebook 3) -------------------------------------------------------------------

def _photo(height=30, width=40):
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_load_image_reads_a_path_as_one_uint8_batch(tmp_path):
    pixels = _photo()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    for source in (tmp_path / "a.png", str(tmp_path / "a.png"), (tmp_path / "a.png").as_uri()):
        image = download.load_image(source)
        assert image.shape == (1, 30, 40, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image[0], pixels)


def test_file_urls_name_local_image_files(tmp_path):
    folder = tmp_path / "a folder%20with spaces"
    folder.mkdir()
    Image.fromarray(_photo()).save(folder / "a b.png")
    assert download.load_image((folder / "a b.png").as_uri()).shape == (1, 30, 40, 3)
    assert download.load_image(f"file://localhost{folder.as_uri()[7:]}/a%20b.png").shape[0] == 1
    # A file URL naming another computer is refused, not read from this one's disk.
    with pytest.raises(ValueError, match="fileserver"):
        download.load_image(f"file://fileserver{folder.as_uri()[7:]}/a%20b.png")


def test_load_image_refuses_urls_it_cannot_fetch_and_says_what_to_do():
    with pytest.raises(download.DataError, match="(?s)not gs:// ones.*gsutil cp"):
        download.load_image("gs://bucket/photo.jpg")


def test_load_image_converts_grey_and_transparent_images_with_a_warning(tmp_path):
    grey = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    with pytest.warns(UserWarning, match="greyscale"):
        image = download.load_image(tmp_path / "grey.png")
    assert image.shape == (1, 30, 40, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[0, ..., channel], grey)

    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., :3] = (200, 10, 10)
    rgba[:, 20:, 3] = 255  # left half transparent, right half opaque red
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    with pytest.warns(UserWarning, match="transparency"):
        image = download.load_image(tmp_path / "rgba.png")
    assert (image[0, :, :20] == 255).all()
    assert (image[0, :, 20:] == (200, 10, 10)).all()


def test_load_image_refuses_what_is_not_an_8_bit_image(tmp_path):
    (tmp_path / "page.jpg").write_text("<!DOCTYPE html><html>Not found</html>")
    with pytest.raises(download.DataError, match="not an image.*DOCTYPE"):
        download.load_image(tmp_path / "page.jpg")
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(download.DataError, match="16-bit"):
        download.load_image(tmp_path / "deep.png")
    with pytest.raises(download.DataError, match="No image file"):
        download.load_image(tmp_path / "missing.jpg")
    # An iPhone photo: an ISO box "ftyp" of brand heic, which Pillow cannot decode.
    (tmp_path / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    with pytest.raises(download.DataError, match="HEIC/HEIF photo.*convert it as JPEG"):
        download.load_image(tmp_path / "IMG_0001.HEIC")


def test_load_image_refuses_an_image_that_declares_too_many_pixels(tmp_path):
    # A 1-bit PNG of 20,000 x 20,000 pixels is 50 kB on disk and would be 1.2 GB as RGB.
    Image.new("1", (20_000, 20_000)).save(tmp_path / "bomb.png", optimize=True)
    assert (tmp_path / "bomb.png").stat().st_size < 1 << 20
    with pytest.raises(download.DataError, match="too large to open safely.*400000000 pixels.*Resize it"):
        download.load_image(tmp_path / "bomb.png", max_side=512)


def test_load_image_shrinks_large_images_keeping_their_shape(tmp_path):
    Image.fromarray(_photo(300, 400)).save(tmp_path / "big.png")
    assert download.load_image(tmp_path / "big.png", max_side=100).shape == (1, 75, 100, 3)
    assert download.load_image(tmp_path / "big.png", max_side=1000).shape == (1, 300, 400, 3)


def test_load_image_downloads_a_url_once_into_the_cache(http_dir):
    folder, base_url = http_dir
    pixels = _photo()
    Image.fromarray(pixels).save(folder / "photo.png")
    url = f"{base_url}/photo.png"
    np.testing.assert_array_equal(download.load_image(url)[0], pixels)
    cached = list((config.data_dir() / "downloads" / "images").glob("*-photo.png"))
    assert any(p.read_bytes() == (folder / "photo.png").read_bytes() for p in cached)
    (folder / "photo.png").unlink()  # the second load must come from the cache
    np.testing.assert_array_equal(download.load_image(url)[0], pixels)


def test_an_encoded_slash_in_a_url_cannot_move_the_cached_image():
    images = config.data_dir() / "downloads" / "images"
    for url in ("https://example.org/..%2F..%2Fescape.png", "https://example.org/a%5C..%5Cb.png",
                "https://example.org/"):
        path = download._cached_image_path(url)
        assert path.parent == images and path.resolve().parent == images.resolve(), path


def test_load_image_explains_urls_that_fail_and_caches_nothing(http_dir):
    folder, base_url = http_dir
    with pytest.raises(download.DataError, match="(?s)Could not download.*missing.jpg.*HTTP 404"):
        download.load_image(f"{base_url}/missing.jpg")
    (folder / "page.jpg").write_text("<html>a login page</html>")
    with pytest.raises(download.DataError, match="not an image"):
        download.load_image(f"{base_url}/page.jpg")
    with pytest.raises(download.DataError, match="Could not download"):
        download.load_image("http://127.0.0.1:9/nothing-listens-here.jpg", timeout=5)
    cached = [p.name for p in (config.data_dir() / "downloads" / "images").iterdir()]
    assert not [n for n in cached if "missing" in n or "page" in n or n.startswith(".")]  # no temp file left


def test_every_registered_dataset_is_fetched_through_its_own_modules_check():
    import inspect

    from helpers import m2nist

    for source in download.DATASETS.values():
        assert source.url.startswith("https://") and source.quick_counts
    # download imports no dataset module, not even by name at run time: each passes its check.
    assert "importlib" not in inspect.getsource(download)
    assert "check_camvid_tree, url" in inspect.getsource(datasets.download_camvid)
    assert "read_m2nist, url" in inspect.getsource(m2nist.download_m2nist)


