"""Benchmark 2: FCN-8 training throughput, the original course's configuration versus ours.

    python -m benchmarks.training                    # full FCN-8 (VGG-16, conv6 7x7x4096), 224x224, batch 8
    python -m benchmarks.training --steps 2 --size 64 64 --fc-filters 64   # a toy run
    python -m benchmarks.training --configs course ours ours+xla              # XLA on the CPU too

The same model (notebook 1's ``fcn(..., variant="8s")`` on ``helpers.models.vgg16_encoder``, random weights) and
the same batch of random frames, trained for a few steps:

- course: one-hot int32 labels (a void pixel all zeros, so that it adds nothing to the loss),
  categorical cross-entropy, SGD with Nesterov momentum (the course's optimiser), float32, no
  XLA (``jit_compile=False``), accuracy metric;
- ours: sparse int32 labels and sparse categorical cross-entropy with void (label 11) ignored,
  Adam, mean IoU tracked as a metric, ``jit_compile="auto"`` (XLA on a GPU or TPU, not on the
  CPU), and on a GPU mixed precision (float16 compute, float32 outputs);
- ours+xla (``--configs course ours ours+xla``): ours with XLA forced on, also on the CPU.

All models live in one fresh process and take their steps in turns, so background load hits
them alike. Prints images/s (median step) per configuration and the ratios ours / course's.
The first step (tracing, XLA compilation) is excluded.
"""

import argparse
import json
import sys
import time

N_CLASSES = 11  # CamVid's classes, predicted by both models; the labels also hold void
VOID = 11


def build(config, size, fc_filters, strategy):
    """Build and compile notebook 1's FCN-8 for a configuration under the distribution strategy."""
    import keras

    from benchmarks import common
    from helpers import distribute, keras_metrics, models

    # The dtype policy is read when layers are built: float32 for the course, 16-bit on a GPU for ours.
    keras.mixed_precision.set_global_policy("float32")
    mixed = config["mixed"] and distribute.use_mixed_precision(strategy)
    fcn = common.notebook_function("01_fcn8_camvid.ipynb", "fcn")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = fcn(models.vgg16_encoder((*size, 3), weights=None), N_CLASSES, "8s", fc_filters)
        if config["sparse"]:  # as notebook 1's train_fcn: void left out of the loss and the metric
            model.compile(optimizer=keras.optimizers.Adam(1e-4),
                          loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=VOID),
                          metrics=[keras_metrics.mean_iou_metric(N_CLASSES, ignore_class=VOID)],
                          jit_compile=config["jit"])
        else:
            model.compile(optimizer=keras.optimizers.SGD(1e-2, momentum=0.9, nesterov=True),
                          loss="categorical_crossentropy", metrics=["accuracy"],
                          jit_compile=config["jit"])
    keras.mixed_precision.set_global_policy("float32")
    return model, mixed


def batch(size, batch_size, sparse, seed=0):
    """Return one batch of random frames and label maps (one-hot for the course) as tensors."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, *size, 3)).astype("float32")
    labels = rng.integers(0, N_CLASSES + 1, (batch_size, *size)).astype("int32")  # void too
    if not sparse:  # the course's labels: an int32 one-hot volume per pixel, void all zeros
        labels = np.eye(N_CLASSES + 1, dtype="int32")[labels][..., :N_CLASSES]
    return tf.constant(images), tf.constant(labels)


def child(names, size, batch_size, steps, warmup, fc_filters):
    """Train the configurations' models in turns, step by step; return images/s and more for each.

    Taking the steps in turns (course, ours, course, ours, ...) exposes every configuration to
    the same background load, so the ratios hold on a shared machine; each figure is the
    median step time.
    """
    import statistics

    from benchmarks import common
    from helpers import distribute

    strategy = distribute.get_strategy(verbose=False)
    global_batch = distribute.global_batch_size(batch_size, strategy)
    runs = {}
    for name in names:
        model, mixed = build(CONFIGS[name], size, fc_filters, strategy)
        data = batch(size, global_batch, CONFIGS[name]["sparse"])
        runs[name] = {"model": model, "data": data, "mixed": mixed, "times": []}
    for name, run in runs.items():  # tracing (and XLA compilation), untimed except the first
        start = time.perf_counter()
        run["model"].train_on_batch(*run["data"])
        run["first_step_s"] = time.perf_counter() - start
        for _ in range(warmup - 1):
            run["model"].train_on_batch(*run["data"])
    for _ in range(steps):
        for run in runs.values():
            start = time.perf_counter()
            run["model"].train_on_batch(*run["data"])  # returns the loss: waits for the step
            run["times"].append(time.perf_counter() - start)
    peak = common.peak_rss_mib()
    return {name: {"images_per_s": global_batch / statistics.median(run["times"]),
                   "step_times_s": run["times"], "first_step_s": run["first_step_s"],
                   "mixed_precision": run["mixed"], "jit_compile": bool(run["model"].jit_compile),
                   "parameters": run["model"].count_params(), "peak_rss_mib": peak,
                   "global_batch": global_batch}
            for name, run in runs.items()}


CONFIGS = {
    "course": {"sparse": False, "jit": False, "mixed": False},
    # "auto": Keras compiles with XLA on a GPU or TPU, not on the CPU, where it measured slower
    # for the full FCN-8 (see README.md).
    "ours": {"sparse": True, "jit": "auto", "mixed": True},
    "ours+xla": {"sparse": True, "jit": True, "mixed": True},
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=8, help="per replica")
    parser.add_argument("--fc-filters", type=int, default=4096, help="width of conv6/conv7")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--configs", nargs="+", default=["course", "ours"], choices=list(CONFIGS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = tuple(args.size)
    options = [*args.configs, "--size", *size, "--batch", args.batch, "--fc-filters",
               args.fc_filters, "--steps", args.steps, "--warmup", args.warmup]
    if args.child:
        print(json.dumps(child(args.configs, size, args.batch, args.steps, max(1, args.warmup),
                               args.fc_filters)))
        return None

    from benchmarks import common

    # A fresh process: the dtype policy and XLA settings stay out of the caller's TensorFlow.
    results = common.run_child("benchmarks.training", ["--child", "--configs", *options])
    print(report(results, size, args.fc_filters, args.steps))
    return results


def report(results, size, fc_filters, steps):
    """Return the benchmark's printed report."""
    from benchmarks import common

    base = results.get("course", {}).get("images_per_s")
    rows = []
    for name, r in results.items():
        ratio = f"{r['images_per_s'] / base:.2f}x" if base else "-"
        rows.append([name, f"{r['images_per_s']:.2f}", ratio, f"{r['first_step_s']:.1f}",
                     "yes" if r["jit_compile"] else "no", "yes" if r["mixed_precision"] else "no"])
    first = next(iter(results.values()))
    lines = [
        f"FCN-8 training throughput: {size[0]}x{size[1]}, global batch {first['global_batch']}, "
        f"conv6/7 width {fc_filters}, {first['parameters']:,} parameters, median of {steps} "
        "steps taken in turns",
        f"Machine: {common.machine()}",
        common.table(rows, ["config", "images/s", "vs course", "first step s", "XLA",
                            "mixed precision"]),
        f"Peak RSS of the process holding all the models: {first['peak_rss_mib']:.0f} MiB",
    ]
    if base and "ours" in results:
        gpu = results["ours"]["mixed_precision"]
        target = 2.0 if gpu else 1.0
        ratio = results["ours"]["images_per_s"] / base
        lines.append(f"Target ours >= {target:.1f}x the course on {'GPU' if gpu else 'CPU'}: "
                     f"{ratio:.2f}x, {'met' if ratio >= target else 'NOT met'}")
    return "\n".join(lines)


if __name__ == "__main__":
    if not __package__:  # run as a file: make `benchmarks` and `helpers` importable
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    main()
