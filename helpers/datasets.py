"""Find, validate and load the course datasets as ``tf.data`` pipelines.

CamVid (notebook 1): frames and label maps paired by sorted file name, labels decoded
as PNG, resized with nearest neighbour and kept sparse (one integer class per pixel).
Oxford-IIIT Pets (notebook 2): tensorflow-datasets' ``oxford_iiit_pet``, or in quick mode
generated elements of the same structure, through the same preprocessing.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from helpers import config, download, synthetic

CAMVID_URL = "https://storage.googleapis.com/learning-datasets/fcnn-dataset.zip"
# The archive's SHA-256 has not been published with it; until it is pinned here the
# archive is validated by structure and its hash is recorded on first download.
CAMVID_SHA256 = None
CAMVID_CLASSES = (
    "sky", "building", "column/pole", "road", "side walk", "vegetation",
    "traffic light", "fence", "vehicle", "pedestrian", "bicyclist", "void",
)
CAMVID_SPLITS = {"train": 367, "test": 101}
CAMVID_QUICK_SPLITS = {"train": 48, "test": 16}
CAMVID_FRAME_SIZE = (360, 480)


def list_pairs(image_dir, label_dir):
    """Return sorted (image, label) path pairs; raise if the two folders' names differ."""
    images = {p.name: p for p in Path(image_dir).glob("*.png")}
    labels = {p.name: p for p in Path(label_dir).glob("*.png")}
    if images.keys() != labels.keys():
        only_images = sorted(images.keys() - labels.keys())
        only_labels = sorted(labels.keys() - images.keys())
        raise ValueError(
            f"Frames in {image_dir} and labels in {label_dir} do not pair up by file name: "
            f"{len(only_images)} frame(s) without a label {only_images[:3]}, "
            f"{len(only_labels)} label(s) without a frame {only_labels[:3]}.")
    if not images:
        raise ValueError(f"No PNG files in {image_dir}.")
    return [(images[name], labels[name]) for name in sorted(images)]


def camvid_pairs(root, split):
    """Return the sorted (frame, label) pairs of a CamVid split under ``root/dataset1``."""
    base = Path(root) / "dataset1"
    return list_pairs(base / f"images_prepped_{split}", base / f"annotations_prepped_{split}")


def check_camvid_tree(root, expected_counts=None, n_classes=len(CAMVID_CLASSES)):
    """Raise ``DataError`` unless ``root`` holds a usable CamVid ``dataset1`` tree."""
    folders = [f"dataset1/{kind}_prepped_{split}" for split in ("train", "test")
               for kind in ("images", "annotations")]
    missing = [f for f in folders if not (Path(root) / f).is_dir()]
    if missing:
        raise download.DataError(f"missing folder(s) {', '.join(missing)}; expected {', '.join(folders)}")
    for split in ("train", "test"):
        try:
            pairs = camvid_pairs(root, split)
        except ValueError as e:
            raise download.DataError(f"{split} split: {e}") from e
        if expected_counts and len(pairs) != expected_counts[split]:
            raise download.DataError(
                f"{split} split has {len(pairs)} frame/label pairs, expected {expected_counts[split]}")
        for image_path, label_path in pairs:
            with Image.open(image_path) as image, Image.open(label_path) as label:
                if image.format != "PNG" or image.mode != "RGB":
                    raise download.DataError(f"{image_path.name}: expected an RGB PNG frame, "
                                             f"got {image.format} {image.mode}")
                if label.format != "PNG" or label.mode not in ("L", "P"):
                    raise download.DataError(f"{label_path.name}: expected a single-channel PNG "
                                             f"label map, got {label.format} {label.mode}")
                if image.size != label.size:
                    raise download.DataError(f"{image_path.name}: frame {image.size} and label "
                                             f"{label.size} differ in size")
                top = int(np.asarray(label).max())
            if top >= n_classes:
                raise download.DataError(f"{label_path.name}: label value {top} is outside 0..{n_classes - 1}")


def download_camvid(url=None, quick=None, root=None):
    """Download (or in quick mode generate) CamVid and return the folder holding ``dataset1``.

    The source is ``url`` if given, else ``COURSE_CAMVID_URL``, else the official archive
    (in quick mode: a generated archive in the same layout).
    """
    quick = config.quick_mode() if quick is None else quick
    root = Path(root) if root is not None else config.data_dir()
    url = download.source_url("camvid", CAMVID_URL, url, quick, lambda: _quick_camvid_archive(root))
    pinned = CAMVID_SHA256 if (url == CAMVID_URL) else None
    counts = CAMVID_SPLITS if not quick else None
    return download.fetch_archive(
        url, "camvid-quick" if quick else "camvid", sha256=pinned,
        check_tree=lambda tree: check_camvid_tree(tree, counts),
        what="the CamVid archive", mirror_var=config.url_variable("camvid"), root=root)


def _quick_camvid_archive(root):
    sizes = {f"n_{split}": count for split, count in CAMVID_QUICK_SPLITS.items()}
    return download.generated_archive(
        root, "camvid-quick.zip", lambda path: synthetic.write_camvid_archive(path, seed=0, **sizes))


def split_pairs(pairs, validation_fraction, seed=0):
    """Split pairs into (train, validation) lists with a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = max(1, round(len(pairs) * validation_fraction))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [pairs[i] for i in train], [pairs[i] for i in val]


def resize_label(label, size):
    """Resize an integer label map (H, W) or (H, W, 1) with nearest neighbour."""
    import tensorflow as tf

    squeeze = label.shape.rank == 2
    if squeeze:
        label = label[..., None]
    label = tf.image.resize(label, size, method="nearest")
    return label[..., 0] if squeeze else label


def load_pair(image_path, label_path, size):
    """Read a PNG frame and its PNG label map; return float32 0..255 RGB and int32 labels."""
    import tensorflow as tf

    image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
    label = tf.io.decode_png(tf.io.read_file(label_path), channels=1)
    image = tf.image.resize(image, size, method="bilinear")
    label = resize_label(label, size)[..., 0]
    image.set_shape((*size, 3))
    label.set_shape(size)
    return image, tf.cast(label, tf.int32)


def random_flip(image, label, seed):
    """Flip an image and its label map left-right together, half of the time."""
    import tensorflow as tf

    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    # tf.reverse is one kernel; a [:, ::-1] slice is a strided copy about 4x slower on CPUs.
    return (tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image),
            tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label))


def batch_pipeline(ds, batch_size, shuffle=False, augment=False, seed=0):
    """Cache decoded (image, label) elements, then shuffle, augment, batch and prefetch."""
    import tensorflow as tf

    ds = ds.cache()  # decode and resize once; later epochs read from memory
    if shuffle:
        ds = ds.shuffle(1000, seed=seed, reshuffle_each_iteration=True)
    if augment:
        # A seed per element and epoch keeps runs reproducible without a global seed.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda pair, s: random_flip(*pair, seed=s), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_dataset(pairs, size, batch_size, shuffle=False, augment=False, seed=0):
    """Build a batched pipeline of (image, sparse label) from (image, label) path pairs."""
    import tensorflow as tf

    images = [str(p) for p, _ in pairs]
    labels = [str(q) for _, q in pairs]
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.map(lambda i, l: load_pair(i, l, size), num_parallel_calls=tf.data.AUTOTUNE)
    return batch_pipeline(ds, batch_size, shuffle, augment, seed)


# Oxford-IIIT Pets (notebook 2), through tensorflow-datasets.
PETS_CLASSES = ("pet", "background", "outline")
PETS_QUICK_SPLITS = {"train": 192, "test": 48}


def pets_data_dir():
    """Return the tfds data folder: COURSE_DATA_DIR itself if it holds the dataset, else a subfolder."""
    root = config.data_dir()
    return root if (root / "oxford_iiit_pet").is_dir() else root / "tensorflow_datasets"


def load_pets(quick=None, data_dir=None):
    """Return {"train", "test"} datasets of ``oxford_iiit_pet`` elements (dicts, as tfds gives)."""
    quick = config.quick_mode() if quick is None else quick
    if quick:
        seeds = {"train": 1, "test": 2}
        return {split: _examples_dataset(synthetic.pet_examples(seeds[split], count))
                for split, count in PETS_QUICK_SPLITS.items()}
    import tensorflow_datasets as tfds

    data_dir = Path(data_dir) if data_dir is not None else pets_data_dir()
    try:
        train, test = tfds.load("oxford_iiit_pet", split=["train", "test"], data_dir=str(data_dir))
    except Exception as e:
        raise download.DataError(
            "Could not load oxford_iiit_pet with tensorflow-datasets "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}).\n"
            f"  tfds data folder: {data_dir} (set COURSE_DATA_DIR to a folder that holds a "
            "prepared oxford_iiit_pet)\n"
            "  Offline: set COURSE_QUICK=1 to run the course on small generated data") from e
    return {"train": train, "test": test}


def _examples_dataset(examples):
    import tensorflow as tf

    signature = {
        "image": tf.TensorSpec((None, None, 3), tf.uint8),
        "segmentation_mask": tf.TensorSpec((None, None, 1), tf.uint8),
        "label": tf.TensorSpec((), tf.int64),
        "species": tf.TensorSpec((), tf.int64),
        "file_name": tf.TensorSpec((), tf.string),
        "head_bbox": tf.TensorSpec((4,), tf.float32),
    }
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)


def preprocess_pet(element, size):
    """Resize a pets element (image bilinear, mask nearest), scale to 0..1, shift mask to 0..2."""
    import tensorflow as tf

    image = tf.image.resize(element["image"], size, method="bilinear") / 255.0
    mask = resize_label(element["segmentation_mask"], size)[..., 0]
    image.set_shape((*size, 3))
    mask.set_shape(size)
    return image, tf.cast(mask, tf.int32) - 1


def make_pets_dataset(ds, size, batch_size, shuffle=False, augment=False, seed=0):
    """Build a batched pipeline of (image, mask 0..2) from oxford_iiit_pet elements."""
    import tensorflow as tf

    ds = ds.map(lambda e: preprocess_pet(e, size), num_parallel_calls=tf.data.AUTOTUNE)
    return batch_pipeline(ds, batch_size, shuffle, augment, seed)
