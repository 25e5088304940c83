"""Benchmark 4 (part): peak memory of one full-mode training step at the default batch sizes.

    python -m benchmarks.memory              # notebooks 1 and 2, full-mode defaults
    python -m benchmarks.memory --toy        # tiny models, to check the code path

Each measurement runs in a fresh process: it imports TensorFlow (baseline RSS), builds and
compiles the notebook's model with its full-mode parameters under the distribution strategy,
trains one step on a batch of random data of the full-mode batch size, and reports its peak
resident set size (``ru_maxrss``). The peak RSS of the quick-mode test suite is measured by
``benchmarks.notebooks``.
"""

import argparse
import json
import sys
import time

CASES = ("01", "02")


def _fcn8_case(params, toy):
    from benchmarks import common
    from helpers import models

    fcn = common.notebook_function("01_fcn8_camvid.ipynb", "fcn")
    size, filters = ((64, 64), 64) if toy else (params["IMAGE_SIZE"], params["FC_FILTERS"])
    return (lambda: fcn(models.vgg16_encoder((*size, 3), weights=None), 12, "8s", filters)), size, 12


def _unet_case(params, toy):
    from benchmarks import common

    unet = common.notebook_function("02_unet_pets.ipynb", "unet")
    size = (32, 32) if toy else params["IMAGE_SIZE"]
    base = 4 if toy else params["BASE_FILTERS"]
    return (lambda: unet((*size, 3), 3, base, params["DEPTH"], params["DROPOUT"])), size, 3


def child(case, toy):
    """Train one full-mode step of a notebook's model; return its memory figures."""
    import keras
    import numpy as np

    from benchmarks import common
    from helpers import distribute, keras_metrics

    notebook = {"01": "01_fcn8_camvid.ipynb", "02": "02_unet_pets.ipynb"}[case]
    params = common.notebook_parameters(notebook, quick=False)
    baseline = common.peak_rss_mib()
    make, size, n_classes = (_fcn8_case if case == "01" else _unet_case)(params, toy)
    batch = 2 if toy else params["BATCH_SIZE"]
    mixed = distribute.use_mixed_precision()
    strategy = distribute.get_strategy(verbose=False)
    batch = distribute.global_batch_size(batch, strategy)
    with strategy.scope():
        model = make()
        model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss="sparse_categorical_crossentropy",
                      metrics=["accuracy", keras_metrics.mean_iou_metric(n_classes)])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, *size, 3)).astype("float32")
    y = rng.integers(0, n_classes, (batch, *size)).astype("int32")
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    return {"notebook": notebook, "size": list(size), "batch": batch,
            "parameters": model.count_params(), "mixed_precision": mixed,
            "baseline_rss_mib": baseline, "peak_rss_mib": common.peak_rss_mib(),
            "step_s": time.perf_counter() - start}


def report(results):
    """Return the benchmark's printed report."""
    from benchmarks import common

    rows = [[r["notebook"], f"{r['size'][0]}x{r['size'][1]}", r["batch"], f"{r['parameters']:,}",
             f"{r['baseline_rss_mib']:.0f}", f"{r['peak_rss_mib']:.0f}", f"{r['step_s']:.1f}"]
            for r in results.values()]
    return "\n".join([
        "Peak memory of one full-mode training step (fresh process each; first step, "
        "including tracing)",
        f"Machine: {common.machine()}",
        common.table(rows, ["notebook", "input", "batch", "parameters", "RSS after import MiB",
                            "peak RSS MiB", "step s"]),
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(CASES), help="notebook numbers")
    parser.add_argument("--toy", action="store_true", help="tiny models and batches")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.toy)))
        return None

    from benchmarks import common

    results = {case: common.run_child("benchmarks.memory", ["--child", case] + ["--toy"] * args.toy)
               for case in args.cases}
    print(report(results))
    return results


if __name__ == "__main__":
    if not __package__:  # run as a file: make `benchmarks` and `helpers` importable
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    main()
