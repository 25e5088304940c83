"""Find, validate and load the course datasets as ``tf.data`` pipelines.

CamVid (notebook 1): frames and label maps paired by sorted file name, labels decoded
as PNG, resized with nearest neighbour and kept sparse (one integer class per pixel).
Oxford-IIIT Pets (notebook 2): tensorflow-datasets' ``oxford_iiit_pet``, or in quick mode
generated elements of the same structure, through the same preprocessing.
"""

import warnings
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from helpers import config, download, environment, m2nist, synthetic

CAMVID_CLASSES = (
    "sky", "building", "column/pole", "road", "side walk", "vegetation",
    "traffic light", "fence", "vehicle", "pedestrian", "bicyclist", "void",
)
# Void (label 11) marks unlabelled pixels: a model predicts the 11 other classes, and the loss
# and every score leave void pixels out, as the FCN and SegNet papers' CamVid tables do.
CAMVID_VOID = CAMVID_CLASSES.index("void")
# Where CamVid comes from and how many frames it has: its record in the download registry.
CAMVID_URL = download.DATASETS["camvid"].url
CAMVID_SPLITS = download.DATASETS["camvid"].counts
CAMVID_QUICK_SPLITS = download.DATASETS["camvid"].quick_counts


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
                # Not palette ("P") PNGs: decode_png would turn their indices into grey levels.
                if label.format != "PNG" or label.mode != "L":
                    raise download.DataError(f"{label_path.name}: expected a single-channel "
                                             f"(greyscale, mode L) PNG label map, got "
                                             f"{label.format} {label.mode}")
                if image.size != label.size:
                    raise download.DataError(f"{image_path.name}: frame {image.size} and label "
                                             f"{label.size} differ in size")
                top = int(np.asarray(label).max())
            if top >= n_classes:
                raise download.DataError(f"{label_path.name}: label value {top} is outside 0..{n_classes - 1}")


def download_camvid(url=None, quick=None, root=None):
    """Download (or in quick mode generate) CamVid; return the folder holding ``dataset1``.

    The source is ``url`` if given, else ``COURSE_CAMVID_URL``, else the official archive
    (in quick mode: a generated archive in the same layout); see ``download.fetch``.
    """
    return download.fetch("camvid", check_camvid_tree, url, quick, root)


def sequence_name(path):
    """Return the video sequence a CamVid frame comes from: its name up to the first ``_``."""
    return Path(path).name.split("_")[0]


def split_pairs(pairs, validation_fraction, seed=0):
    """Hold out a seeded, contiguous block of each video sequence's frames for validation.

    Neighbouring video frames are near-duplicates, so frames drawn at random would put a
    twin of almost every validation frame in the training set and flatter the score.
    """
    sequences = {}
    for pair in pairs:
        sequences.setdefault(sequence_name(pair[0]), []).append(pair)
    if all(len(frames) < 2 for frames in sequences.values()):
        sequences = {"": list(pairs)}  # names with no sequence prefix, e.g. "frame001.png"
    rng = np.random.default_rng(seed)
    train, val = [], []
    for name in sorted(sequences):
        frames = sorted(sequences[name], key=lambda pair: Path(pair[0]).name)  # in time order
        n_val = min(len(frames) - 1, max(1, round(len(frames) * validation_fraction)))
        start = int(rng.integers(0, len(frames) - n_val + 1))
        val += frames[start:start + n_val]
        train += frames[:start] + frames[start + n_val:]
    if not val:
        raise ValueError("Too few frames to hold any out for validation: at least two are needed.")
    return train, val


def resize_label(label, size):
    """Resize an integer label map (H, W) or (H, W, 1) with nearest neighbour."""
    squeeze = label.shape.rank == 2
    if squeeze:
        label = label[..., None]
    label = tf.image.resize(label, size, method="nearest")
    return label[..., 0] if squeeze else label


def load_pair(image_path, label_path, size):
    """Read a PNG frame and its PNG label map; return both resized, as uint8 (H, W, 3) and (H, W)."""
    image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
    label = tf.io.decode_png(tf.io.read_file(label_path), channels=1)
    image = tf.image.resize(image, size, method="bilinear")
    image = tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8)
    label = resize_label(label, size)[..., 0]
    image.set_shape((*size, 3))
    label.set_shape(size)
    return image, label


FRAMES_FORMAT = 1  # bump when load_pair changes, so saved frames are rebuilt


def frames_cache_path(pairs, size, cache_dir):
    """Return the file that holds ``pairs`` decoded at ``size``; its name changes with any file."""
    import hashlib
    import json

    files = [(str(Path(p).resolve()), info.st_size, info.st_mtime_ns)
             for pair in pairs for p in pair for info in [Path(p).stat()]]
    key = json.dumps([FRAMES_FORMAT, list(size), files]).encode()
    return Path(cache_dir) / f"frames-{size[0]}x{size[1]}-{hashlib.sha256(key).hexdigest()[:16]}.npz"


def _read_frames(path, count, size):
    """Return (images, labels) saved at ``path`` if they are complete and well formed, else None."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            images, labels = saved["images"], saved["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if (images.shape, labels.shape) != ((count, *size, 3), (count, *size)) or \
            images.dtype != np.uint8 or labels.dtype != np.uint8:
        return None
    return images, labels


def load_frames(pairs, size, cache_dir=None):
    """Decode and resize (frame, label) pairs into uint8 arrays; keep them in ``cache_dir`` for later runs.

    Decoding PNGs is most of the cost of an epoch read from disk (about 2 ms a frame on one
    CPU core), so each run after the first reads one ``.npz`` file instead. A copy that is
    missing, stale (a file changed) or damaged is rebuilt from the PNGs.
    """
    cache = frames_cache_path(pairs, size, cache_dir) if cache_dir is not None else None
    if cache is not None and cache.is_file():
        saved = _read_frames(cache, len(pairs), size)
        if saved is not None:
            return saved
    ds = tf.data.Dataset.from_tensor_slices(([str(p) for p, _ in pairs], [str(q) for _, q in pairs]))
    ds = ds.map(lambda i, l: load_pair(i, l, size), num_parallel_calls=tf.data.AUTOTUNE).batch(64)
    ds = without_autotune(ds)
    images = np.zeros((len(pairs), *size, 3), np.uint8)
    labels = np.zeros((len(pairs), *size), np.uint8)
    start = 0
    for image_batch, label_batch in ds:
        end = start + len(image_batch)
        images[start:end], labels[start:end] = image_batch.numpy(), label_batch.numpy()
        start = end
    if cache is not None:
        def write(path):
            with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez(f, images=images, labels=labels)
        try:
            download.write_atomically(cache, write)
        except OSError as e:  # a read-only or full disk costs speed, not the run
            warnings.warn(f"Could not save decoded frames to {cache} ({e}); the next run decodes again.")
    return images, labels


def without_autotune(ds):
    """Return ``ds`` with tf.data's autotuning off, so that deleting an iterator is instant.

    In TensorFlow 2.21 (and 2.19, Colab's), deleting an iterator of an autotuned pipeline often
    waits for the autotuner's next wake-up, whose period doubles up to a minute. Keras makes a
    new iterator for every training epoch, every validation pass and every ``predict``, so each
    of them could wait about as long again as it had run (measured by ``python -m
    benchmarks.iterators``; its figures are in ``benchmarks/README.md``). Without the autotuner,
    ``AUTOTUNE`` map parallelism starts, and stays, at the number of CPU cores (at most 16) and
    ``prefetch`` keeps its own buffer tuner; the elements and their order are the same.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def random_flip(image, label, seed):
    """Flip an image and its label map left-right together, half of the time."""
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    # tf.reverse is one kernel; a [:, ::-1] slice is a strided copy about 4x slower on CPUs.
    return (tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image),
            tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label))


def batch_pipeline(ds, batch_size, shuffle=False, augment=False, seed=0, cache=True):
    """Cache (image, label) elements, then shuffle, augment, batch, cast and prefetch.

    Batches come out as float32 images and int32 labels, whatever the stored dtypes.
    """
    if cache:
        ds = ds.cache()  # preprocess once; later epochs read from memory
    if shuffle:
        ds = ds.shuffle(1000, seed=seed, reshuffle_each_iteration=True)
    if augment:
        # A seed per element and epoch keeps runs reproducible without a global seed.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda pair, s: random_flip(*pair, seed=s), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int32)),
                                  num_parallel_calls=tf.data.AUTOTUNE)
    return without_autotune(ds.prefetch(tf.data.AUTOTUNE))


def make_dataset(pairs, size, batch_size, shuffle=False, augment=False, seed=0, cache_dir=None):
    """Build a batched pipeline of (float32 0..255 image, int32 label) from (image, label) path pairs.

    Frames are decoded once (see ``load_frames``; with ``cache_dir``, once per machine) and
    held in memory as uint8; flips and batches are cut from there every epoch.
    """
    images, labels = load_frames(pairs, size, cache_dir)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return batch_pipeline(ds, batch_size, shuffle, augment, seed, cache=False)


# Oxford-IIIT Pets (notebook 2), through tensorflow-datasets.
# The trimap's classes 1, 2, 3, less 1. The third is the annotators' "not classified" band along
# every edge: their uncertainty, not an object (notebook 2 scores pet and background without it).
PETS_CLASSES = ("pet", "background", "border (not classified)")
PETS_QUICK_SPLITS = {"train": 192, "test": 48}


QUICK_PETS_FOLDER = f"tensorflow_datasets-quick-v{synthetic.VERSION}"


def pets_data_dir(quick=None, data_dir=None):
    """Return the tfds data folder: ``data_dir``, else COURSE_DATA_DIR or its tensorflow_datasets/.

    Quick mode's generated dataset always lives in a subfolder of its own, so that it can
    never pass for the real dataset in a folder a full run (or another project) reads.
    """
    quick = config.quick_mode() if quick is None else quick
    if data_dir is not None:
        root = Path(data_dir)
        return root / QUICK_PETS_FOLDER if quick else root
    root = config.data_dir()
    if quick:
        return root / QUICK_PETS_FOLDER
    return root if (root / "oxford_iiit_pet").is_dir() else root / "tensorflow_datasets"


def prepare_quick_pets(data_dir):
    """Prepare tfds' ``oxford_iiit_pet`` in ``data_dir`` from generated pets, unless it is there."""
    seeds = {"train": 1, "test": 2}

    def examples(split):
        for i, example in enumerate(synthetic.pet_examples(seeds[split], PETS_QUICK_SPLITS[split])):
            yield i, {**example, "head_bbox": tfds.features.BBox(*example["head_bbox"])}

    # tfds' own builder encodes, shards and describes the dataset exactly as for the real
    # download; a subclass (tfds' way to write a dataset: its splits' generators) takes its
    # examples from the generator instead of the Oxford archives, under the same name.
    class GeneratedPets(tfds.builder_cls("oxford_iiit_pet"), skip_registration=True):
        name = "oxford_iiit_pet"

        def _split_generators(self, dl_manager):
            return {split: examples(split) for split in seeds}

    builder = GeneratedPets(data_dir=str(data_dir))
    # Two kernels preparing at once would race on tfds' final rename: take turns.
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with download.install_lock(Path(data_dir) / "oxford_iiit_pet"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def load_pets(quick=None, data_dir=None):
    """Load ``oxford_iiit_pet`` with ``tfds.load``; return {"train", "test"} datasets of its elements.

    In quick mode the dataset is first prepared once, offline, from generated pets (see
    ``prepare_quick_pets``), in its own subfolder of ``data_dir``; loading is the same.
    """
    quick = config.quick_mode() if quick is None else quick
    # A broken install (tfds only logs an error of its own imports) is named with its real cause.
    problem = environment.import_problem("tensorflow_datasets", ("builder", "load"))
    if problem:
        raise download.DataError(f"Could not load oxford_iiit_pet: {problem}")
    data_dir = pets_data_dir(quick, data_dir)
    try:
        if quick:
            prepare_quick_pets(data_dir)
        # No auto-cache: a learner's peek at one example (next(iter(...))) would otherwise
        # make TensorFlow warn that the dataset being cached was not fully read.
        train, test = tfds.load("oxford_iiit_pet", split=["train", "test"], data_dir=str(data_dir),
                                read_config=tfds.ReadConfig(try_autocache=False))
    except Exception as e:
        raise download.DataError(
            "Could not load oxford_iiit_pet with tensorflow-datasets "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}).\n"
            f"  tfds data folder: {data_dir} (set COURSE_DATA_DIR to a folder that holds a "
            "prepared oxford_iiit_pet)\n"
            + download.offline_hint()) from e
    return {"train": train, "test": test}


def preprocess_pet(element, size):
    """Resize a pets element (image bilinear, mask nearest), scale to 0..1, shift mask to 0..2."""
    image = tf.image.resize(element["image"], size, method="bilinear") / 255.0
    mask = resize_label(element["segmentation_mask"], size)[..., 0]
    image.set_shape((*size, 3))
    mask.set_shape(size)
    return image, tf.cast(mask, tf.int32) - 1


def make_pets_dataset(ds, size, batch_size, shuffle=False, augment=False, seed=0):
    """Build a batched pipeline of (image, mask 0..2) from oxford_iiit_pet elements."""
    ds = ds.map(lambda e: preprocess_pet(e, size), num_parallel_calls=tf.data.AUTOTUNE)
    return batch_pipeline(ds, batch_size, shuffle, augment, seed)


def make_m2nist_dataset(images, labels, batch_size, shuffle=False, weights=None, seed=0):
    """Return a batched tf.data pipeline of (scaled image, label[, per-pixel weight]).

    ``weights``, one loss weight per pixel shaped like ``labels``, is what notebook 4's
    learner computes from the labels (its first exercise); Keras multiplies each pixel's
    loss by it. Without it the batches are (image, label).
    """
    arrays = (m2nist.scale_images(images), np.asarray(labels, np.int32))
    if weights is not None:
        arrays += (m2nist.check_weights(weights, labels),)
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return without_autotune(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))
