"""Benchmark 1: CamVid input pipeline throughput, the original course's versus ours.

    python -m benchmarks.pipeline                 # 367 generated 360x480 frames (CamVid train), 224x224, 4 epochs
    python -m benchmarks.pipeline --frames 32 --epochs 2

Both pipelines read the same generated CamVid-format PNG files and produce batches of 64
224x224 frames with their labels; the script prints images/s for the first epoch (everything
decoded from disk), for the later epochs (what the rest of a training run sees), and over the
whole run, and the ratios ours / course's. The two pipelines take their epochs in turns.

- The course's: per element read, decode, bilinear-resize the frame *and the label map*,
  build a 12-channel one-hot label by stacking twelve ``tf.equal`` masks, scale to -1..1;
  ``map`` without parallel calls, shuffle 100, batch 64, prefetch. Every epoch redoes it all.
- Ours (``helpers.datasets.make_dataset``): parallel ``map`` (AUTOTUNE), nearest-neighbour
  label resize, sparse int32 labels, decoded elements cached in memory after the first
  epoch, shuffle, random flip of frame and label together, batch 64, AUTOTUNE prefetch.
"""

import argparse
import sys
import time

N_CLASSES = 12


def course_pipeline(pairs, size=(224, 224), batch_size=64):
    """Build the original course's CamVid pipeline (one-hot labels, serial map)."""
    import tensorflow as tf

    height, width = size

    def map_filename_to_image_and_mask(t_filename, a_filename):
        image = tf.io.decode_png(tf.io.read_file(t_filename), channels=3)
        annotation = tf.io.decode_png(tf.io.read_file(a_filename), channels=1)
        image = tf.image.resize(image, (height, width))
        annotation = tf.image.resize(annotation, (height, width))  # bilinear, as the course did
        image = tf.reshape(image, (height, width, 3))
        annotation = tf.cast(annotation, dtype=tf.int32)
        annotation = tf.reshape(annotation, (height, width, 1))
        stack_list = []
        for c in range(N_CLASSES):
            mask = tf.equal(annotation[:, :, 0], tf.constant(c))
            stack_list.append(tf.cast(mask, dtype=tf.int32))
        annotation = tf.stack(stack_list, axis=2)
        image = image / 127.5
        image -= 1
        return image, annotation

    images = [str(p) for p, _ in pairs]
    labels = [str(q) for _, q in pairs]
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.map(map_filename_to_image_and_mask)
    ds = ds.shuffle(100, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(-1)


def our_pipeline(pairs, size=(224, 224), batch_size=64):
    """Build our CamVid training pipeline, exactly as notebook 1 does."""
    from helpers import datasets

    return datasets.make_dataset(pairs, size, batch_size, shuffle=True, augment=True, seed=0)


def epoch_seconds(dataset):
    """Iterate over ``dataset`` once; return (seconds, images)."""
    start, count = time.perf_counter(), 0
    for images, labels in dataset:
        count += int(images.shape[0])
        _ = labels.shape
    return time.perf_counter() - start, count


def measure(pairs, size, batch_size, epochs):
    """Time both pipelines over the same files; return {name: {first, later, overall}} images/s.

    The two pipelines take their epochs in turns (course, ours, course, ours, ...), so
    background load on a shared machine hits them alike.
    """
    pipelines = {"course": course_pipeline(pairs, size, batch_size),
                 "ours": our_pipeline(pairs, size, batch_size)}
    times = {name: [] for name in pipelines}
    for _ in range(epochs):
        for name, dataset in pipelines.items():
            seconds, count = epoch_seconds(dataset)
            times[name].append(seconds)
    results = {}
    for name, t in times.items():
        later = t[1:] or t
        results[name] = {"first": count / t[0], "later": count * len(later) / sum(later),
                         "overall": count * len(t) / sum(t)}
    return results


def report(results, n_frames, size, batch_size, epochs):
    """Return the benchmark's printed report."""
    from benchmarks import common

    course, ours = results["course"], results["ours"]
    rows = [[label, f"{course[key]:.0f}", f"{ours[key]:.0f}", f"{ours[key] / course[key]:.1f}x"]
            for key, label in (("first", "epoch 1 (from disk)"),
                               ("later", f"epochs 2-{epochs} (steady state)"),
                               ("overall", f"all {epochs} epochs"))]
    verdict = lambda key: "met" if ours[key] >= 3 * course[key] else "NOT met"  # noqa: E731
    return "\n".join([
        f"CamVid input pipeline: {n_frames} generated frames 360x480 -> {size[0]}x{size[1]}, "
        f"batch {batch_size}, {epochs} epochs",
        f"Machine: {common.machine()}",
        common.table(rows, ["images/s", "course", "ours", "ratio"]),
        f"Target ours >= 3x the course: steady state {verdict('later')}; first epoch "
        f"{verdict('first')}; whole {epochs}-epoch run {verdict('overall')}",
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=367, help="generated 360x480 frames (367: the size of CamVid train)")
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)

    from benchmarks import common

    with common.scratch_dir() as folder:
        pairs = common.camvid_frames(folder, args.frames)
        results = measure(pairs, tuple(args.size), args.batch, args.epochs)
    print(report(results, args.frames, tuple(args.size), args.batch, args.epochs))
    return results


if __name__ == "__main__":
    if not __package__:  # run as a file: make `benchmarks` and `helpers` importable
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    main()
