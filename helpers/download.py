"""Download, verify and safely extract dataset archives into the course cache.

Every step works on temporary paths and renames only after validation, so a failed,
partial or corrupt download never leaves anything in the cache that a later run would
trust. Used by every notebook that downloads data (first taught in notebook 1).
"""

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
import zipfile
from pathlib import Path, PurePosixPath

from helpers import config

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


def _failure(what, url, reason, cache_path, mirror_var):
    lines = [
        f"Could not download {what}.",
        f"  URL:     {url}",
        f"  Reason:  {reason}",
        f"  Cache:   {cache_path} (nothing was written there)",
    ]
    if mirror_var:
        lines.append(f"  Mirror:  set {mirror_var} to another URL or to file:///path/to/the/archive")
    lines.append("  Offline: set COURSE_QUICK=1 to run the course on small generated data")
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
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(f"not a complete zip archive ({e}); it may be truncated") from e
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
    marker = target / ".complete"
    if marker.is_file():
        cached_from = _recorded(marker, "url")
        if cached_from in (None, url):
            return target
        print(f"The cached {what} came from {cached_from}; fetching it from {url}.")

    downloads = root / "downloads" / name
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / (PurePosixPath(urllib.parse.urlsplit(url).path).name or f"{name}.zip")
    record = _record_path(archive)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        if archive.is_file() and _recorded(record, "url") in (None, url):
            source = archive
            digest = sha256_file(archive)
            expected = sha256 or _recorded(record, "sha256")
            if expected and digest != expected:
                raise DataError(
                    f"The cached archive {archive} does not match its recorded SHA-256 "
                    f"({digest} != {expected}); it was changed or damaged. "
                    "Delete it and run again to download it afresh.")
        else:
            source = staging / archive.name
            with open(source, "wb") as out:
                download_to(url, out, what, archive, mirror_var, timeout)
            digest = sha256_file(source)
            if sha256 and digest != sha256:
                raise DataError(
                    f"The download of {what} from {url} has SHA-256 {digest}, expected {sha256}. "
                    f"Nothing was cached. If {url} is a mirror with a different packing, "
                    f"set {mirror_var or 'the mirror variable'} so it is validated by structure.")
        _unpack(source, staging / "tree", check_tree, what, url)
        # Everything checked: move the results into place, archive first, marker last.
        if source != archive:
            os.replace(source, archive)
            record.write_text(json.dumps({"url": url, "sha256": digest}, indent=1) + "\n")
        if target.exists():
            shutil.rmtree(target)  # an earlier extraction that never completed
        os.replace(staging / "tree", target)
        marker.write_text(json.dumps({"url": url, "sha256": digest}, indent=1) + "\n")
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def source_url(dataset, official, url=None, quick=False, generate=None):
    """Return where to fetch a dataset: ``url``, else its mirror variable, else ``official``
    (in quick mode: the ``file://`` URL of the archive ``generate()`` returns)."""
    url = url or config.mirror_url(dataset)
    if url is None:
        url = generate().as_uri() if quick else official
    return url


def generated_archive(root, name, write):
    """Return ``root/generated/name``, writing it once with ``write(path)`` (quick-mode data)."""
    path = Path(root) / "generated" / name
    if not path.is_file():
        write_atomically(path, write)
    return path


def write_atomically(path, write):
    """Create ``path`` through a temporary file beside it: ``write(temp_path)``, then rename.

    If ``write`` raises (a failed download, a failed check), nothing is left behind, so a
    cache never holds a partial file under its real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        write(Path(partial))
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
    return path


def _recorded(path, key):
    """Return ``key`` from a JSON record (a cached archive's, or a ``.complete`` marker), or None."""
    try:
        return json.loads(path.read_text())[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _unpack(source, tree, check_tree, what, url):
    try:
        check_zip(source)
        tree.mkdir()
        extract_zip(source, tree)
        if check_tree is not None:
            check_tree(tree)
    except DataError as e:
        raise DataError(f"The archive of {what} from {url} cannot be used: {str(e).rstrip('.')}. "
                        "Nothing was cached.") from e
