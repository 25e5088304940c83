"""Download, verify and safely extract dataset archives and images into the course cache.

Every step works on temporary paths and renames only after validation, so a failed,
partial or corrupt download never leaves anything in the cache that a later run would
trust. Used by every notebook that downloads data (first taught in notebook 1).

Why not ``pooch`` (or ``keras.utils.get_file``) with ``filelock``: they fetch, cache and check
a known hash, but the course needs more than that, and each is tested here: an archive whose
hash cannot be pinned (a mirror's copy) is validated by its structure (folders, frame/label
pairs, label values) before it is trusted; hostile archives are refused before extraction
(absolute paths, ``..``, links, too many bytes unpacked); nothing is half-installed (staging
folders renamed into place under a lock that another process's reader never sees removed);
a cached archive changed since it was validated is noticed by its recorded hash; and the cache
remembers which mirror it came from, so pointing a dataset at another one fetches that one.
"""

import contextlib
import errno
import hashlib
import http.client
import json
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from helpers import config, synthetic

try:
    import fcntl
except ImportError:  # Windows: installs are not locked (see install_folder)
    fcntl = None

CHUNK = 1 << 20
MAX_UNPACKED_BYTES = 8 << 30  # refuse zip bombs; the course's largest archive unpacks to < 1 GB


class DataError(RuntimeError):
    """A download, archive or dataset that cannot be used, with a message saying why."""


def sha256_file(path):
    """Return the SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def offline_hint(runs="the course on small generated data"):
    """Return the report line that says how to run ``runs`` offline, in quick mode."""
    return f"  Offline: set COURSE_QUICK=1 to run {runs}"


def _mirror_hint(mirror_var):
    return f"  Mirror:  set {mirror_var} to another URL or to file:///path/to/the/archive"


def _failure(what, url, reason, cache_path, mirror_var):
    lines = [
        f"Could not download {what}.",
        f"  URL:     {url}",
        f"  Reason:  {reason}",
        f"  Cache:   {cache_path} (nothing was written there)",
    ]
    if mirror_var:
        lines.append(_mirror_hint(mirror_var))
    lines.append(offline_hint())
    return DataError("\n".join(lines))


def _download_to(url, out_file, what, timeout):
    """Stream ``url`` into the open binary file ``out_file`` with a progress bar."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "segmentation-course"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {what}") as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out_file.write(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received != total:
        raise DataError(f"the transfer stopped after {received} of {total} bytes")


def download_to(url, out_file, what, cache_path, mirror_var=None, timeout=60):
    """Stream ``url`` into ``out_file``; raise a DataError saying what to do if the transfer fails."""
    try:
        _download_to(url, out_file, what, timeout)
    except (urllib.error.URLError, http.client.HTTPException, OSError, DataError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP {e.code} {e.reason}"
        raise _failure(what, url, reason, cache_path, mirror_var) from e


def _check_member(info):
    """Reject archive members that could write outside the target folder."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"unsafe archive member {info.filename!r}: absolute path")
    if ".." in path.parts:
        raise DataError(f"unsafe archive member {info.filename!r}: '..' in the path")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DataError(f"unsafe archive member {info.filename!r}: symbolic link")


def check_zip(archive):
    """Check that ``archive`` is a complete zip with only safe members; return its names."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member(info)
            if sum(info.file_size for info in infos) > MAX_UNPACKED_BYTES:
                raise DataError("archive unpacks to more than the allowed size")
            broken = zf.testzip()
            if broken is not None:
                raise DataError(f"archive member {broken!r} is corrupt (CRC mismatch)")
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(f"not a complete zip archive ({e}); it may be truncated") from e
    except (NotImplementedError, RuntimeError) as e:  # encrypted, or an unsupported compression
        raise DataError(f"a zip archive that Python cannot unpack ({e})") from e
    return [info.filename for info in infos]


def extract_zip(archive, target):
    """Extract a checked zip ``archive`` into the existing folder ``target``."""
    target = Path(target).resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _check_member(info)
            dest = (target / info.filename.replace("\\", "/")).resolve()
            if not dest.is_relative_to(target):
                raise DataError(f"unsafe archive member {info.filename!r}")
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)


def _record_path(archive):
    return archive.with_name(archive.name + ".json")


def fetch_archive(url, name, *, sha256=None, check_tree=None, what=None, mirror_var=None,
                  root=None, timeout=60):
    """Download ``url`` once, verify it, extract it to ``root/name``; return that folder.

    ``sha256`` pins the archive's hash when it is known. Without it the archive is
    validated by ``check_tree(extracted_folder)`` (folders, counts, shapes, label
    ranges), and its hash is recorded beside the cached archive so that later runs
    detect a changed file. The cache remembers which URL it came from: asking for ``name``
    from another URL (a different mirror) fetches that one, and replaces the cached copy
    only once the new one has passed every check.
    """
    what = what or name
    root = Path(root) if root is not None else config.data_dir()
    target = root / name

    def complete(folder):
        marker = folder / ".complete"
        return marker.is_file() and _recorded(marker, "url") in (None, url)

    if complete(target):
        return target
    if (target / ".complete").is_file():
        print(f"The cached {what} came from {_recorded(target / '.complete', 'url')}; "
              f"fetching it from {url}.")
    archive = root / "downloads" / name / (
        PurePosixPath(urllib.parse.urlsplit(url).path).name or f"{name}.zip")
    record = _record_path(archive)

    def build(tree):
        digest = None
        # A cached archive counts only with its record (written right after it) naming this URL.
        if archive.is_file() and _recorded(record, "url") == url:
            digest = sha256_file(archive)
            expected = sha256 or _recorded(record, "sha256")
            if expected and digest != expected:
                raise DataError(
                    f"The cached archive {archive} does not match its recorded SHA-256 "
                    f"({digest} != {expected}); it was changed or damaged. "
                    "Delete it and run again to download it afresh.")
            try:
                _unpack(archive, tree, check_tree, what, url, mirror_var)
            except DataError as e:
                raise DataError(str(e).replace(
                    "Nothing was cached.", f"The cached archive {archive} was left as it was; "
                    "delete it to download it again.")) from e
        else:
            def download_and_check(partial):
                nonlocal digest
                with open(partial, "wb") as out:
                    download_to(url, out, what, archive, mirror_var, timeout)
                digest = sha256_file(partial)
                if sha256 and digest != sha256:
                    raise DataError(
                        f"The download of {what} from {url} has SHA-256 {digest}, expected "
                        f"{sha256}. Nothing was cached. If {url} is a mirror with a different "
                        f"packing, set {mirror_var or 'the mirror variable'} so it is validated "
                        "by structure.")
                _unpack(partial, tree, check_tree, what, url, mirror_var)

            # Only a download that passed every check becomes the cached archive.
            write_atomically(archive, download_and_check)
            _write_json(record, {"url": url, "sha256": digest})
        _write_json(tree / ".complete", {"url": url, "sha256": digest})  # the marker goes last

    return install_folder(target, build, complete)


# The datasets the course downloads, one record each; ``fetch`` is the one recipe for all.

@dataclass(frozen=True)
class Source:
    """Where a dataset's archive comes from and what it holds (see ``fetch``).

    How a tree is checked belongs to the dataset's module (``datasets.check_camvid_tree``,
    ``m2nist.read_m2nist``), which passes its check to ``fetch``: those modules import this
    one, so it names none of them.
    """

    title: str              # in messages: "the <title> archive"
    url: str                # the official archive; COURSE_<NAME>_URL names a mirror
    counts: object          # what the official archive holds, in the form the check takes
    quick_counts: object    # what quick mode generates
    generate: Callable      # generate(path, quick_counts) writes quick mode's archive
    sha256: str | None = None        # the official archive's hash, where it is published
    check_mirror_counts: bool = True  # whether a mirror (full mode) must hold ``counts`` too


DATASETS = {
    "camvid": Source(
        title="CamVid",
        url="https://storage.googleapis.com/learning-datasets/fcnn-dataset.zip",
        # No SHA-256 has been published with it; until one is pinned here the archive is
        # validated by structure (datasets.check_camvid_tree) and its hash is recorded on
        # first download.
        counts={"train": 367, "test": 101},
        quick_counts={"train": 48, "test": 16},
        generate=lambda path, counts: synthetic.write_camvid_archive(
            path, seed=0, **{f"n_{split}": n for split, n in counts.items()})),
    "m2nist": Source(
        title="M2NIST",
        url="https://storage.googleapis.com/tensorflow-1-public/tensorflow-3-temp/m2nist.zip",
        # No published hash either: checked by m2nist.read_m2nist.
        counts=5000,
        quick_counts=1200,  # 960 / 192 / 48 in the fixed split
        generate=lambda path, count: synthetic.write_m2nist_archive(path, seed=0, count=count),
        # A mirror may hold another number of images: an M2NIST-style set built from MNIST.
        check_mirror_counts=False),
}


def fetch(name, check, url=None, quick=None, root=None):
    """Download (or in quick mode generate) the dataset ``name`` once; return its checked folder.

    The archive comes from ``url`` if given, else the dataset's mirror variable, else its
    official URL (in quick mode: an archive generated in the same format). Quick and full
    data are cached apart, in ``<name>-quick`` and ``<name>``. ``check(folder, counts)``
    raises ``DataError`` for an extracted tree that is not the dataset (``counts``: the
    registry's, or None for a mirror that may hold another number).
    """
    if name not in DATASETS:
        raise ValueError(f"No dataset {name!r} in the registry; it has {', '.join(sorted(DATASETS))}.")
    source = DATASETS[name]
    quick = config.quick_mode() if quick is None else quick
    root = Path(root) if root is not None else config.data_dir()
    url = url or config.mirror_url(name)
    if url is None and quick:
        url = generated_archive(root, f"{name}-quick-v{synthetic.VERSION}.zip",
                                lambda path: source.generate(path, source.quick_counts)).as_uri()
    url = url or source.url
    official = url == source.url
    counts = source.counts if official or (source.check_mirror_counts and not quick) else None
    return fetch_archive(
        url, f"{name}-quick" if quick else name, sha256=source.sha256 if official else None,
        check_tree=lambda tree: check(tree, counts), what=f"the {source.title} archive",
        mirror_var=config.url_variable(name), root=root)


def generated_archive(root, name, write):
    """Return ``root/generated/name``, writing it once with ``write(path)`` (quick-mode data)."""
    path = Path(root) / "generated" / name
    if not path.is_file():
        write_atomically(path, write)
    return path


def write_atomically(path, write, suffix="", mode=None):
    """Create ``path`` through a temporary file beside it: ``write(temp_path)``, then rename.

    If ``write`` raises (a failed download, a failed check), nothing is left behind, so a
    cache never holds a partial file under its real name. The temporary name ends with
    ``suffix`` (for writers that insist on one, as Keras' ``save_weights`` does); ``mode``
    sets the file's permissions (a temporary file is readable by its owner only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(partial))
        if mode is not None:
            os.chmod(partial, mode)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
    return path


def _write_json(path, record):
    """Write ``record`` as JSON to ``path`` through a temporary file."""
    write_atomically(path, lambda part: part.write_text(json.dumps(record, indent=1) + "\n"))


def install_folder(target, build, complete=None):
    """Build ``target`` with ``build(folder)`` unless ``complete(target)``; return ``target``.

    ``build`` fills an empty staging folder and marks it complete last (by default
    ``complete`` looks for a ``.complete`` file); only then is it renamed to ``target``, and
    an old ``target`` is renamed aside before it is deleted. Installers take turns
    under a lock file (where ``fcntl`` exists) and check ``complete`` again once they hold it,
    so a finished folder is built once and never deleted under a process reading it.
    """
    target = Path(target)
    complete = complete or (lambda folder: (folder / ".complete").is_file())
    if complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with install_lock(target) as locked:
        if complete(target):  # another process finished it while this one waited
            return target
        prefix = f".{target.name}.staging-"
        if locked:  # under the lock, other staging folders are from killed runs
            for stale in target.parent.iterdir():
                if stale.name.startswith(prefix):
                    shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        try:
            (staging / "new").mkdir()
            build(staging / "new")
            if not complete(staging / "new"):
                raise RuntimeError(f"building {target} did not mark it complete")
            if target.exists() or target.is_symlink():
                os.replace(target, staging / "old")  # incomplete, or from another source
            try:
                os.replace(staging / "new", target)
            except OSError:
                if not complete(target):  # unlocked, another installer may just have finished
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


@contextlib.contextmanager
def install_lock(target):
    """Lock the installing of ``target``; yield False where the file system cannot lock."""
    target = Path(target)
    fd = _lock_file(target) if fcntl is not None else None
    try:
        yield fd is not None
    finally:
        if fd is not None:
            # Still locked, so no one else can be holding this file.
            target.with_name(f".{target.name}.lock").unlink(missing_ok=True)
            os.close(fd)


def _lock_file(target):
    """Return a descriptor holding the lock file of ``target``, or None if it cannot be locked."""
    path = target.with_name(f".{target.name}.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder before this one removed the file: lock the new one instead.
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        except OSError as e:
            os.close(fd)
            if e.errno in _NO_LOCKS:
                # Some network and FUSE file systems (a mounted Drive) cannot lock: go on
                # unlocked, as on Windows, rather than refuse to install anything.
                path.unlink(missing_ok=True)
                return None
            raise
        except BaseException:
            os.close(fd)
            raise
        if current:
            return fd
        os.close(fd)


def _recorded(path, key):
    """Return ``key`` from a JSON record (a cached archive's, or a ``.complete`` marker), or None."""
    try:
        return json.loads(path.read_text())[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _unpack(source, tree, check_tree, what, url, mirror_var=None):
    """Extract ``source`` into the empty folder ``tree`` and check it; explain any failure."""
    try:
        check_zip(source)
        extract_zip(source, tree)
        if check_tree is not None:
            check_tree(tree)
    except (DataError, OSError, ValueError) as e:  # OSError includes PIL's UnidentifiedImageError
        # Name files by their place in the archive: the staging folder is deleted after this.
        reason = str(e).replace(f"{tree}{os.sep}", "").replace(str(tree), "the archive").rstrip(".")
        if not isinstance(e, DataError):
            reason = f"{type(e).__name__}: {reason}"
        lines = [f"The archive of {what} from {url} cannot be used: {reason}. Nothing was cached."]
        if mirror_var:
            lines.append(_mirror_hint(mirror_var))
        raise DataError("\n".join(lines)) from e


# Images (notebook 3): fetched once by URL into downloads/images/, or read from disk.

# The course's test images. The first two are the Object Detection API's test images; the
# Wikimedia photos are those of TensorFlow Hub's object detection tutorial. These URLs cannot
# be checked offline: if one stops working, notebook 3 reports that image and goes on.
TEST_IMAGES = {
    "dogs": "https://raw.githubusercontent.com/tensorflow/models/master/research/"
            "object_detection/test_images/image1.jpg",
    "beach": "https://raw.githubusercontent.com/tensorflow/models/master/research/"
             "object_detection/test_images/image2.jpg",
    # By Heiko Gorski, https://commons.wikimedia.org/wiki/File:Naxos_Taverna.jpg
    "taverna": "https://upload.wikimedia.org/wikipedia/commons/6/60/Naxos_Taverna.jpg",
    # By Américo Toledano, https://commons.wikimedia.org/wiki/File:Biblioteca_Maim%C3%B3nides,
    # _Campus_Universitario_de_Rabanales_007.jpg (Wikimedia's 1024-pixel rendering)
    "library": "https://upload.wikimedia.org/wikipedia/commons/thumb/0/0d/"
               "Biblioteca_Maim%C3%B3nides%2C_Campus_Universitario_de_Rabanales_007.jpg/"
               "1024px-Biblioteca_Maim%C3%B3nides%2C_Campus_Universitario_de_Rabanales_007.jpg",
}


def _is_url(text):
    """Return True for what ``load_image`` downloads: an http or https URL."""
    return urllib.parse.urlsplit(str(text)).scheme in ("http", "https")


def local_path(text):
    """Return the path that a ``file://`` URL or a plain path (``~`` expanded) names."""
    if not text.startswith("file://"):
        return Path(text).expanduser()
    parts = urllib.parse.urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{text} names a file on the computer {parts.netloc!r}; give a "
                         "file:///... URL or a path on this computer.")
    return Path(urllib.request.url2pathname(parts.path))


def _cached_image_path(url):
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url).path).name or "image")
    # An encoded "/" (%2F) must not lead the file out of the cache folder.
    name = name.replace("/", "_").replace("\\", "_").lstrip(".") or "image"
    return config.data_dir() / "downloads" / "images" / f"{digest}-{name}"


def _fetch_image(url, timeout):
    """Download an image URL once into the data cache (validated before it is kept)."""
    target = _cached_image_path(url)
    if target.is_file():
        return target

    def download_and_check(part):
        with open(part, "wb") as out:
            download_to(url, out, f"the image {url}", target, timeout=timeout)
        _decode(part, url)  # a web page or a truncated file is never cached

    return write_atomically(target, download_and_check)


def _decode(path, source):
    """Open an image file as an RGB PIL image; convert grey and transparent images."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)  # photos from phones are often rotated
            image.load()
    except Image.DecompressionBombError as e:  # declares more pixels than Pillow opens safely
        raise DataError(f"{source} is too large to open safely: {e} Resize it (a few "
                        "megapixels are plenty: the models see a few hundred pixels a side) "
                        "and load the smaller copy.") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        with open(path, "rb") as f:
            start = f.read(16)
        if start[4:8] == b"ftyp" and start[8:12] in (b"heic", b"heix", b"heim", b"heis", b"hevc",
                                                     b"hevx", b"mif1", b"msf1"):
            raise DataError(f"{source} is a HEIC/HEIF photo (an iPhone's default format), which "
                            "Pillow cannot read: export or convert it as JPEG first (on an "
                            "iPhone, Photos > Share > Options; for future photos, Settings > "
                            "Camera > Formats > Most Compatible).") from e
        raise DataError(
            f"{source} is not an image that Pillow can read (its first bytes are {start!r}); "
            "a web page or an error message instead of the image file?") from e
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        raise DataError(f"{source} has {image.mode} pixels (16-bit or floating point); "
                        "save it as an 8-bit RGB JPEG or PNG first.")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        warnings.warn(f"{source} has transparency; composited over white for the model.",
                      stacklevel=3)
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image.alpha_composite(rgba)
    elif image.mode in ("L", "1"):
        warnings.warn(f"{source} is greyscale; its channel is repeated into R, G and B.",
                      stacklevel=3)
    return image.convert("RGB")


def load_image(source, max_side=None, timeout=60):
    """Load an image from a path, a ``file://`` or an http(s) URL as a uint8 array (1, H, W, 3)."""
    source = str(source)
    scheme = urllib.parse.urlsplit(source).scheme
    if _is_url(source):
        path = _fetch_image(source, timeout)
    elif "://" in source and scheme != "file":
        raise DataError(
            f"{source}: load_image reads paths, file:// and http(s) URLs, not {scheme}:// ones. "
            "Copy the image to this computer first (for gs://: gsutil cp, or tf.io.gfile.copy).")
    else:
        path = local_path(source)
    if not path.is_file():
        raise DataError(f"No image file at {path}.")
    image = _decode(path, source)
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.LANCZOS)
    return np.asarray(image, dtype=np.uint8)[None]
