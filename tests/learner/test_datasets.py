import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import datasets, download, synthetic


def write_png(path, array, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)


def test_list_pairs_sorts_by_name_and_pairs_same_names(tmp_path):
    for name in ["b.png", "c.png", "a.png"]:
        write_png(tmp_path / "img" / name, np.zeros((2, 2, 3)), "RGB")
        write_png(tmp_path / "lab" / name, np.zeros((2, 2)), "L")
    pairs = datasets.list_pairs(tmp_path / "img", tmp_path / "lab")
    assert [p.name for p, _ in pairs] == ["a.png", "b.png", "c.png"]
    assert all(p.name == q.name and q.parent.name == "lab" for p, q in pairs)


def test_list_pairs_raises_when_names_differ(tmp_path):
    write_png(tmp_path / "img" / "a.png", np.zeros((2, 2, 3)), "RGB")
    write_png(tmp_path / "img" / "b.png", np.zeros((2, 2, 3)), "RGB")
    write_png(tmp_path / "lab" / "a.png", np.zeros((2, 2)), "L")
    write_png(tmp_path / "lab" / "c.png", np.zeros((2, 2)), "L")
    with pytest.raises(ValueError, match=r"1 frame\(s\) without a label \['b.png'\].*\['c.png'\]"):
        datasets.list_pairs(tmp_path / "img", tmp_path / "lab")


def extract(archive, folder):
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(folder)
    return folder


def test_check_camvid_tree_rejects_out_of_range_labels_and_size_mismatch(small_camvid_zip, tmp_path):
    root = extract(small_camvid_zip, tmp_path / "tree")
    datasets.check_camvid_tree(root)  # valid as generated
    label_path = datasets.camvid_pairs(root, "test")[0][1]
    write_png(label_path, np.full((32, 48), 12), "L")
    with pytest.raises(download.DataError, match="label value 12 is outside 0..11"):
        datasets.check_camvid_tree(root)
    write_png(label_path, np.zeros((16, 48)), "L")
    with pytest.raises(download.DataError, match="differ in size"):
        datasets.check_camvid_tree(root)
    write_png(label_path, np.zeros((32, 48, 3)), "RGB")
    with pytest.raises(download.DataError, match="single-channel"):
        datasets.check_camvid_tree(root)
    # Palette PNGs hold class ids as indices that decode_png would turn into colours.
    palette = Image.fromarray(np.zeros((32, 48), np.uint8), mode="P")
    palette.putpalette([200, 10, 10] * 256)
    palette.save(label_path)
    with pytest.raises(download.DataError, match="mode L.*got PNG P"):
        datasets.check_camvid_tree(root)


def test_generated_archive_is_deterministic_and_in_the_real_format(tmp_path):
    a = synthetic.write_camvid_archive(tmp_path / "a.zip", seed=3, n_train=4, n_test=4)
    b = synthetic.write_camvid_archive(tmp_path / "b.zip", seed=3, n_train=4, n_test=4)
    assert a.read_bytes() == b.read_bytes()
    root = extract(a, tmp_path / "tree")
    seen = set()
    for image_path, label_path in datasets.camvid_pairs(root, "train"):
        with Image.open(image_path) as image, Image.open(label_path) as label:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (480, 360))
            assert (label.format, label.mode, label.size) == ("PNG", "L", (480, 360))
            seen |= set(np.unique(np.asarray(label)).tolist())
    assert seen == set(range(12))


def nearest_reference(label, size):
    """Nearest-neighbour resize by hand: output pixel i samples input floor((i + 0.5) * in / out)."""
    rows = np.floor((np.arange(size[0]) + 0.5) * label.shape[0] / size[0]).astype(int)
    cols = np.floor((np.arange(size[1]) + 0.5) * label.shape[1] / size[1]).astype(int)
    return label[rows][:, cols]


def test_resize_label_is_exact_nearest_neighbour_where_bilinear_invents_classes():
    label = np.zeros((60, 80), np.uint8)
    label[:, 40:] = 5
    label[20:40, 10:30] = 9
    # 24x33 does not line up with the 60x80 grid, so any other interpolation differs.
    small = datasets.resize_label(tf.constant(label), (24, 33)).numpy()
    assert small.dtype == np.uint8 and small.shape == (24, 33)
    np.testing.assert_array_equal(small, nearest_reference(label, (24, 33)))
    bilinear = tf.image.resize(label[..., None], (24, 33), method="bilinear").numpy()
    assert set(np.unique(np.round(bilinear))) - {0, 5, 9}  # the reason for nearest neighbour
    assert datasets.resize_label(tf.constant(label[..., None]), (24, 32)).shape == (24, 32, 1)


def test_pipeline_yields_resized_images_and_sparse_labels(small_camvid_zip, tmp_path):
    root = extract(small_camvid_zip, tmp_path / "tree")
    pairs = datasets.camvid_pairs(root, "train")
    ds = datasets.make_dataset(pairs, (24, 33), batch_size=2)
    batches = list(ds)
    assert [tuple(x.shape) for x, _ in batches] == [(2, 24, 33, 3), (1, 24, 33, 3)]
    images, labels = batches[0]
    assert images.dtype == tf.float32 and labels.dtype == tf.int32
    assert labels.shape == (2, 24, 33)
    with Image.open(pairs[0][0]) as frame, Image.open(pairs[0][1]) as label:
        frame, label = np.asarray(frame), np.asarray(label)
    np.testing.assert_array_equal(labels[0].numpy(), nearest_reference(label, (24, 33)))
    expected = tf.image.resize(frame, (24, 33), method="bilinear").numpy()
    np.testing.assert_allclose(images[0].numpy(), expected, atol=0.5)  # stored as rounded uint8
    # TF 2.21 often deletes an autotuned iterator only at its autotuner's next wake-up: an epoch
    # of a fit could wait (helpers.datasets.without_autotune).
    assert ds.options().autotune.enabled is False


def test_without_autotune_turns_off_only_the_autotuner_and_keeps_the_elements():
    def pipeline():
        return (tf.data.Dataset.range(20).shuffle(20, seed=3)
                .map(lambda x: x * 2, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))

    assert pipeline().options().autotune.enabled is None  # TensorFlow's default: on
    untuned = datasets.without_autotune(pipeline())
    assert untuned.options().autotune.enabled is False
    assert [int(x) for x in untuned] == [int(x) for x in pipeline()]  # same elements, same order


def pairs_of(tmp_path, names, value=0):
    pairs = []
    for i, name in enumerate(names):
        image, label = tmp_path / "img" / name, tmp_path / "lab" / name
        write_png(image, np.full((12, 16, 3), value + i), "RGB")
        write_png(label, np.full((12, 16), i % 12), "L")
        pairs.append((image, label))
    return pairs


def test_load_frames_saves_decoded_frames_and_reads_them_back(tmp_path):
    pairs = pairs_of(tmp_path, [f"{i}.png" for i in range(5)], value=10)
    images, labels = datasets.load_frames(pairs, (6, 8), tmp_path / "cache")
    assert images.dtype == labels.dtype == np.uint8
    assert images.shape == (5, 6, 8, 3) and labels.shape == (5, 6, 8)
    np.testing.assert_array_equal(images[:, 0, 0, 0], [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(labels[:, 0, 0], [0, 1, 2, 3, 4])
    (saved,) = (tmp_path / "cache").glob("frames-6x8-*.npz")
    # A later run reads the saved copy: change it and see the change come back.
    with np.load(saved) as arrays:
        altered = {"images": arrays["images"] + 100, "labels": arrays["labels"]}
    np.savez(saved, **altered)
    np.testing.assert_array_equal(datasets.load_frames(pairs, (6, 8), tmp_path / "cache")[0],
                                  images + 100)
    # Without a cache folder nothing is read or written.
    np.testing.assert_array_equal(datasets.load_frames(pairs, (6, 8))[0], images)


def test_load_frames_rebuilds_when_a_file_changes_or_the_copy_is_damaged(tmp_path):
    pairs = pairs_of(tmp_path, ["a.png", "b.png"])
    cache = tmp_path / "cache"
    datasets.load_frames(pairs, (6, 8), cache)
    (first,) = cache.glob("*.npz")
    write_png(pairs[1][0], np.full((12, 16, 3), 200), "RGB")  # a learner replaces a frame
    images, _ = datasets.load_frames(pairs, (6, 8), cache)
    assert images[1, 0, 0, 0] == 200
    assert len(list(cache.glob("*.npz"))) == 2
    second = datasets.frames_cache_path(pairs, (6, 8), cache)
    second.write_bytes(second.read_bytes()[:100])  # truncated, as by a full disk
    images, labels = datasets.load_frames(pairs, (6, 8), cache)
    assert images[1, 0, 0, 0] == 200 and labels[1, 0, 0] == 1
    assert datasets._read_frames(second, 2, (6, 8)) is not None  # repaired
    assert first != second
    assert datasets.load_frames(pairs, (6, 4), cache)[0].shape == (2, 6, 4, 3)  # size is in the key
    assert not list(cache.glob(".*"))  # no temporary files left behind


def test_load_frames_still_works_when_the_copy_cannot_be_saved(tmp_path):
    pairs = pairs_of(tmp_path, ["a.png"])
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="Could not save decoded frames"):
        images, _ = datasets.load_frames(pairs, (6, 8), blocker)
    assert images.shape == (1, 6, 8, 3)


def test_flip_keeps_image_and_label_aligned(tmp_path):
    # An asymmetric frame whose pixel values encode the label: alignment is checkable.
    label = np.zeros((32, 32), np.uint8)
    label[:, :5] = 3
    label[4:10, 20:30] = 7
    image = np.repeat(label[..., None] * 20, 3, axis=2)
    pairs = []
    for i in range(8):
        write_png(tmp_path / "img" / f"{i}.png", image, "RGB")
        write_png(tmp_path / "lab" / f"{i}.png", label, "L")
        pairs.append((tmp_path / "img" / f"{i}.png", tmp_path / "lab" / f"{i}.png"))
    ds = datasets.make_dataset(pairs, (32, 32), batch_size=8, augment=True, seed=1)
    images, labels = next(iter(ds))
    flipped = [bool(labels[i, 0, -1] == 3) for i in range(8)]
    assert any(flipped) and not all(flipped)
    np.testing.assert_array_equal(np.round(images[..., 0].numpy() / 20).astype(int), labels.numpy())


def test_split_pairs_holds_out_a_contiguous_block_of_every_sequence():
    names = [f"{seq}_{frame:06d}.png" for seq in ("0001TP", "0006R0", "Seq05VD")
             for frame in range(0, 600, 30)]
    pairs = [(Path("img") / n, Path("lab") / n) for n in reversed(names)]  # order must not matter
    train, val = datasets.split_pairs(pairs, 0.25, seed=7)
    assert sorted(train + val) == sorted(pairs) and not set(train) & set(val)
    assert len(val) == 15  # 5 of each sequence's 20 frames
    for seq in ("0001TP", "0006R0", "Seq05VD"):
        held = sorted(names.index(p.name) for p, _ in val if p.name.startswith(seq))
        assert len(held) == 5 and held == list(range(held[0], held[0] + 5))  # one block
    assert datasets.split_pairs(pairs, 0.25, seed=7) == (train, val)
    assert datasets.split_pairs(pairs, 0.25, seed=8) != (train, val)


def test_split_pairs_treats_names_without_a_sequence_as_one_sequence():
    names = [f"frame{i:03d}.png" for i in range(10)]  # a mirror that renamed the frames
    pairs = [(Path("img") / n, Path("lab") / n) for n in names]
    train, val = datasets.split_pairs(pairs, 0.2, seed=3)
    held = sorted(names.index(p.name) for p, _ in val)
    assert len(held) == 2 and held[1] == held[0] + 1 and len(train) == 8


def test_split_pairs_refuses_when_nothing_can_be_held_out():
    pairs = [(Path("a_000030.png"), Path("a_000030.png"))]
    with pytest.raises(ValueError, match="at least two are needed"):
        datasets.split_pairs(pairs, 0.2)


@pytest.mark.slow
def test_quick_mode_generates_and_loads_offline_without_a_url(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_CAMVID_URL", raising=False)
    root = datasets.download_camvid(quick=True, root=tmp_path)
    assert root == tmp_path / "camvid-quick"
    assert len(datasets.camvid_pairs(root, "train")) == datasets.CAMVID_QUICK_SPLITS["train"]
    assert len(datasets.camvid_pairs(root, "test")) == datasets.CAMVID_QUICK_SPLITS["test"]


def test_full_mode_rejects_an_archive_with_the_wrong_counts(small_camvid_zip, tmp_path):
    with pytest.raises(download.DataError, match="expected 367"):
        datasets.download_camvid(url=small_camvid_zip.as_uri(), quick=False, root=tmp_path)
    assert not (tmp_path / "camvid").exists()


# Oxford-IIIT Pets (notebook 2)

def pet_element(mask):
    mask = np.asarray(mask, np.uint8)
    image = np.repeat((mask * 60)[..., None], 3, axis=2).astype(np.uint8)
    return {"image": tf.constant(image), "segmentation_mask": tf.constant(mask[..., None])}


def test_pet_label_shift_is_exact():
    mask = np.array([[1, 2, 3, 2], [3, 1, 1, 2]])
    _, shifted = datasets.preprocess_pet(pet_element(mask), (2, 4))
    np.testing.assert_array_equal(shifted.numpy(), mask - 1)
    assert shifted.dtype == tf.int32


def test_pet_masks_stay_in_0_1_2_after_resizing():
    rng = np.random.default_rng(0)
    mask = rng.integers(1, 4, (37, 53))
    image, resized = datasets.preprocess_pet(pet_element(mask), (64, 64))
    assert set(np.unique(resized.numpy())) == {0, 1, 2}
    assert image.shape == (64, 64, 3) and float(tf.reduce_max(image)) <= 1.0


def test_the_pets_pipelines_course_and_notebook_turn_the_autotuner_off():
    import ast

    from maintainer import notebook_code

    elements = tf.data.Dataset.from_tensors(pet_element(np.ones((6, 6)))).repeat(2)
    assert datasets.make_pets_dataset(elements, (4, 4), 2).options().autotune.enabled is False
    # Notebook 2 builds its own pipeline (the lesson), so it must say the same.
    source = notebook_code.function_cells(notebook_code.read_notebook("02_unet_pets.ipynb"))["make_pipeline"]
    function = next(node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef))
    returned = function.body[-1]
    assert isinstance(returned, ast.Return) and ast.unparse(returned.value).startswith(
        "datasets.without_autotune(")


def test_pets_pipeline_flips_image_and_mask_together():
    mask = np.full((16, 16), 2)
    mask[2:6, 1:4] = 1  # an asymmetric pet near the left edge
    mask[2:6, 4] = 3
    elements = tf.data.Dataset.from_tensors(pet_element(mask)).repeat(12)
    images, masks = next(iter(datasets.make_pets_dataset(elements, (16, 16), 12, augment=True, seed=3)))
    flipped = [bool(masks[i, 3, -2] == 0) for i in range(12)]
    assert any(flipped) and not all(flipped)
    # The image encodes the original mask value (x60, then /255): it must match the mask.
    np.testing.assert_array_equal(np.round(images[..., 0].numpy() * 255 / 60).astype(int) - 1,
                                  masks.numpy())


def block_means(image, block=8):
    """Average 8x8 blocks: what JPEG keeps of a noisy picture."""
    h, w = (image.shape[0] // block) * block, (image.shape[1] // block) * block
    return image[:h, :w].reshape(h // block, block, w // block, block, 3).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def quick_pets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfds")
    return folder, datasets.load_pets(quick=True, data_dir=folder)


def test_quick_pets_are_prepared_by_tfds_and_loaded_with_tfds_load(quick_pets):
    folder, splits = quick_pets
    prepared = folder / datasets.QUICK_PETS_FOLDER / "oxford_iiit_pet" / "4.0.0"
    assert (prepared / "dataset_info.json").is_file()
    # Never in the folder itself, where a full run would take it for the real dataset.
    assert not (folder / "oxford_iiit_pet").exists()
    assert set(splits) == {"train", "test"}
    generated = {e["file_name"]: e for e in synthetic.pet_examples(2, datasets.PETS_QUICK_SPLITS["test"])}
    shapes, names = set(), set()
    for element in splits["test"]:
        assert set(element) == {"image", "segmentation_mask", "label", "species", "file_name",
                                "head_bbox"}
        image, mask = element["image"], element["segmentation_mask"]
        assert image.dtype == tf.uint8 and mask.dtype == tf.uint8
        assert image.shape[:2] == mask.shape[:2] and mask.shape[2] == 1 and image.shape[2] == 3
        assert set(np.unique(mask.numpy())) == {1, 2, 3}
        assert 0 <= int(element["label"]) < 37 and int(element["species"]) in (0, 1)
        # What tfds stored is the generated example: masks exactly (PNG), images up to JPEG loss.
        source = generated[element["file_name"].numpy().decode()]
        np.testing.assert_array_equal(mask.numpy(), source["segmentation_mask"])
        assert np.abs(block_means(image.numpy()) - block_means(source["image"])).mean() < 2
        assert int(element["label"]) == source["label"]
        shapes.add(tuple(image.shape))
        names.add(element["file_name"].numpy())
    assert len(names) == datasets.PETS_QUICK_SPLITS["test"]
    assert len(shapes) > 1  # sizes vary, as in the real dataset
    assert sum(1 for _ in splits["train"]) == datasets.PETS_QUICK_SPLITS["train"]


def test_quick_pets_are_prepared_once(quick_pets, monkeypatch):
    folder, _ = quick_pets
    monkeypatch.setattr(datasets.synthetic, "pet_examples", lambda *a: pytest.fail("regenerated"))
    again = datasets.load_pets(quick=True, data_dir=folder)
    assert sum(1 for _ in again["test"]) == datasets.PETS_QUICK_SPLITS["test"]


def test_load_pets_failure_says_where_and_how_to_run_offline(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(download.DataError, match=r"(?s)tfds data folder: .*not-a-folder.*COURSE_QUICK=1"):
        datasets.load_pets(quick=True, data_dir=blocker)


def test_pets_data_dir_uses_a_course_data_dir_that_holds_the_dataset(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert datasets.pets_data_dir(quick=False) == tmp_path.resolve() / "tensorflow_datasets"
    quick = datasets.pets_data_dir(quick=True)
    assert quick.parent == tmp_path.resolve() and quick.name.startswith("tensorflow_datasets-quick")
    (tmp_path / "oxford_iiit_pet" / "4.0.0").mkdir(parents=True)
    assert datasets.pets_data_dir(quick=False) == tmp_path.resolve()
    assert datasets.pets_data_dir(quick=True) == quick  # generated data never mixes with real
    assert datasets.pets_data_dir(quick=False, data_dir=tmp_path / "x") == tmp_path / "x"
    assert datasets.pets_data_dir(quick=True, data_dir=tmp_path / "x") == \
        tmp_path / "x" / datasets.QUICK_PETS_FOLDER


def test_quick_pets_element_spec_equals_the_tfds_builders(quick_pets, tmp_path):
    import tensorflow_datasets as tfds

    builder = tfds.builder_cls("oxford_iiit_pet")(data_dir=str(tmp_path))
    expected = {k: (tuple(v.shape), tf.as_dtype(v.dtype))
                for k, v in builder.info.features.get_tensor_info().items()}
    spec = quick_pets[1]["train"].element_spec
    assert {k: (tuple(v.shape), v.dtype) for k, v in spec.items()} == expected
