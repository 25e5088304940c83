"""Benchmark 10: what deleting a tf.data iterator costs, with tf.data's autotuner on and off.

    python -m benchmarks.iterators                  # notebook 4's FCN-8, quick mode, 3 epochs each way
    python -m benchmarks.iterators --epochs 5 --train-count 480

In TensorFlow 2.21, deleting an iterator of an autotuned pipeline often waits (not every
time) until the autotuner next wakes, at 10 ms, 30 ms, 70 ms ... 20.47 s, 40.95 s, 81.91 s
after the iterator was made (the period doubles from 10 ms up to a minute). Keras makes an
iterator for every training epoch, every validation pass and every ``predict``, and deletes it
at the end. A bare pipeline iterated in a loop and deleted rarely waits; during training it
waited most times (seen with ``py-spy dump --native``: the main thread inside
``RootDataset::Iterator::~Iterator``, waiting on the autotuner's thread). TensorFlow 2.19
(Colab's) waits the same way. Measured figures: benchmarks/README.md, benchmark 10.

The benchmark trains notebook 4's FCN-8 (the solution's own functions, quick-mode recipe and
data, its ``make_m2nist_dataset`` pipelines) for a few epochs from the same seed, with the
autotuner on (TensorFlow's default) and then off (``helpers.datasets.without_autotune``, as
the course's pipelines are): the wall time of each epoch and of the whole run (building the
model and grading each epoch included), and whether the losses are identical (they must be:
only when iterators are freed changes).
"""

import argparse
import sys
import time
from pathlib import Path


def with_autotune(ds):
    """Return ``ds`` with tf.data's autotuner back on (TensorFlow's default)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = True
    return ds.with_options(options)


def train_epochs(epochs, autotune, train_count=None, seed=42, splits=None, functions=None):
    """Train notebook 4's FCN-8 (quick recipe) for ``epochs``; return (seconds per epoch, total, losses).

    ``m2nist_recipe.train`` trains it, on the course's pipelines (autotuner off) or, with
    ``autotune``, on the same pipelines with the autotuner back on. ``splits`` (default: quick
    mode's M2NIST) and ``functions`` (default: the solution notebook's) are for a quick test.
    """
    from benchmarks import m2nist_recipe
    from helpers import m2nist

    start = time.perf_counter()
    curve = m2nist_recipe.train(splits or m2nist.load_m2nist(quick=True),
                                m2nist_recipe.notebook_recipe(quick=True), epochs, seed, train_count,
                                log=lambda line: None, functions=functions,
                                pipeline=with_autotune if autotune else None)
    total = time.perf_counter() - start  # building the model and grading each epoch included
    return [e["seconds"] for e in curve], total, [e["loss"] for e in curve]


def measure(epochs=3, train_count=None, splits=None, functions=None, warm_up=True):
    """Return {autotune: (seconds per epoch, total seconds, losses)} for autotune True, then False."""
    if warm_up:  # start TensorFlow's runtime before the clock: it belongs to neither run
        train_epochs(1, False, 32, splits=splits, functions=functions)
    return {autotune: train_epochs(epochs, autotune, train_count, splits=splits, functions=functions)
            for autotune in (True, False)}


def report(results):
    """Return the benchmark's printed report."""
    from benchmarks import common

    rows = [["on (TensorFlow's default)" if autotune else "off (the course's pipelines)",
             " / ".join(f"{s:.1f}" for s in seconds), f"{total:.1f}"]
            for autotune, (seconds, total, _) in results.items()]
    same = results[True][2] == results[False][2]
    return "\n".join([
        f"Notebook 4's FCN-8, quick recipe, one fit of {len(results[True][0])} epochs with tf.data's "
        "autotuner on, then one with it off",
        f"Machine: {common.machine()}",
        common.table(rows, ["autotuner", "epochs (s)", "whole run (s)"]),
        f"Losses per epoch {'identical' if same else 'DIFFER'}: "
        + ", ".join(f"{x:.4f}" for x in results[False][2])])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each FCN-8 fit")
    parser.add_argument("--train-count", type=int, default=None,
                        help="training images (default: all of quick mode's 960)")
    args = parser.parse_args(argv)
    results = measure(args.epochs, args.train_count)
    print(report(results))
    return results


if __name__ == "__main__":
    if not __package__:  # run as a file: make `benchmarks` and `helpers` importable
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
