"""Benchmark 7: notebook 1's FCN-32s, FCN-16s and FCN-8s, bilinear versus default upsampling start.

    python -m benchmarks.fcn_family                        # quick-mode data and budget, seeds 42 1 2
    python -m benchmarks.fcn_family --seeds 42 1 2 3 4     # more seeds
    python -m benchmarks.fcn_family --inits bilinear       # only the notebook's initialisation

Trains notebook 1's own ``fcn`` (pulled out of the notebook) on the quick-mode CamVid data, as
the notebook does in quick mode: its parameters cell's quick defaults (image size, batch, epochs,
learning rate, conv6/7 width, random VGG-16 weights, flips), its split and seeds, Adam on sparse
cross-entropy with early stopping on the validation mean IoU restoring the best weights; void
(label 11) is left out of the loss and the scores, and the 11 other classes are scored. For
each seed, variant and initialisation of the ``Conv2DTranspose`` layers — ``bilinear``
(``helpers.models.init_bilinear``, the notebook's default) or ``default`` (Keras' Glorot-uniform)
— it reports the test mean IoU, pixel accuracy, the IoU of the thin classes and the training
time. The seed sets the validation block, the shuffling and the starting weights, as
``-p SEED`` does in the notebook. The generated data lives in a temporary folder.
"""

import argparse
import json
import statistics
import sys
import time

VARIANTS = ("32s", "16s", "8s")
INITS = ("bilinear", "default")
THIN = ("column/pole", "traffic light", "fence", "pedestrian", "bicyclist")


def load_data(params, root, train_frames=None, url=None):
    """Return the quick-mode (train, val, test) pipelines for the notebook's parameters and seed."""
    import keras

    from helpers import datasets

    keras.utils.set_random_seed(params["SEED"])  # as the notebook does before making its pipelines
    folder = datasets.download_camvid(url=url, quick=True, root=root)
    train_pairs, val_pairs = datasets.split_pairs(datasets.camvid_pairs(folder, "train"),
                                                  params["VALIDATION_FRACTION"], seed=params["SEED"])
    train_pairs = train_pairs[:train_frames]
    size, batch = params["IMAGE_SIZE"], params["BATCH_SIZE"]
    return (datasets.make_dataset(train_pairs, size, batch, shuffle=True, augment=params["AUGMENT"],
                                  seed=params["SEED"]),
            datasets.make_dataset(val_pairs, size, batch),
            datasets.make_dataset(datasets.camvid_pairs(folder, "test"), size, batch))


def run(fcn, variant, init, params, data):
    """Build, train and score one FCN with notebook 1's ``fcn`` as the notebook does; return its figures."""
    import keras

    from helpers import datasets, keras_metrics, metrics, models

    train_ds, val_ds, test_ds = data
    void = datasets.CAMVID_VOID
    n_classes = len(datasets.CAMVID_CLASSES) - 1  # void is not predicted
    keras.utils.set_random_seed(params["SEED"])  # as the notebook's make_fcn()
    encoder = models.vgg16_encoder((*params["IMAGE_SIZE"], 3), weights=params["ENCODER_WEIGHTS"])
    model = fcn(encoder, n_classes, variant, params["FC_FILTERS"])
    if init == "bilinear":
        models.init_bilinear(model)
    steps, epochs, warmup = int(train_ds.cardinality()), params["EPOCHS"], params["WARMUP_EPOCHS"]
    schedule = keras.optimizers.schedules.CosineDecay(  # the notebook's train_fcn()
        initial_learning_rate=params["LEARNING_RATE"] / 10, warmup_target=params["LEARNING_RATE"],
        warmup_steps=warmup * steps, decay_steps=max(1, (epochs - warmup) * steps),
        alpha=params["FINAL_LR_FRACTION"])
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=void),
                  metrics=[keras_metrics.mean_iou_metric(n_classes, ignore_class=void)])
    model.optimizer.build(model.trainable_variables)  # as the notebook: fit traces its step once
    stop = keras.callbacks.EarlyStopping(monitor="val_mean_iou", mode="max",
                                         patience=params["PATIENCE"], restore_best_weights=True)
    start = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[stop], verbose=0)
    train_s = time.perf_counter() - start
    scores = metrics.evaluate_dataset(model, test_ds, n_classes, ignore_class=void)
    thin = {name: float(scores.iou[datasets.CAMVID_CLASSES.index(name)]) for name in THIN}
    return {"variant": variant, "init": init, "seed": params["SEED"], "mean_iou": scores.mean_iou,
            "pixel_accuracy": scores.pixel_accuracy, "thin_iou": thin,
            "thin_mean_iou": float(statistics.fmean(thin.values())), "train_s": train_s}


def measure(seeds, variants=VARIANTS, inits=INITS, overrides=None, train_frames=None, url=None):
    """Train every (seed, variant, init) on the quick-mode data; return the list of results.

    ``url``: another CamVid-format archive than quick mode's (the tests' tiny one).
    """
    from benchmarks import common

    # Read once: the notebook may be edited while this runs.
    fcn = common.notebook_function("01_fcn8_camvid.ipynb", "fcn")
    defaults = dict(common.notebook_parameters("01_fcn8_camvid.ipynb", quick=True), **(overrides or {}))
    results = []
    with common.scratch_dir() as root:
        for seed in seeds:
            params = dict(defaults, SEED=seed)
            data = load_data(params, root, train_frames, url)
            for variant in variants:
                for init in inits:
                    results.append(run(fcn, variant, init, params, data))
                    r = results[-1]
                    print(f"seed {seed} FCN-{variant} {init:8}: mean IoU {r['mean_iou']:.3f}, "
                          f"thin {r['thin_mean_iou']:.3f}, {r['train_s']:.0f} s", flush=True)
    return results


def report(results):
    """Return the benchmark's printed report: one row per run, then ranges over the seeds."""
    from benchmarks import common

    rows = [[r["seed"], f"FCN-{r['variant']}", r["init"], f"{r['mean_iou']:.3f}",
             f"{r['pixel_accuracy']:.3f}", *(f"{r['thin_iou'][n]:.3f}" for n in THIN),
             f"{r['train_s']:.0f}"] for r in results]
    summary = []
    groups = {}
    for r in results:
        groups.setdefault((r["variant"], r["init"]), []).append(r)
    for (variant, init), runs in groups.items():
        span = lambda key: f"{min(r[key] for r in runs):.3f}-{max(r[key] for r in runs):.3f}"  # noqa: E731
        summary.append([f"FCN-{variant}", init, len(runs), span("mean_iou"),
                        f"{statistics.fmean(r['mean_iou'] for r in runs):.3f}",
                        span("thin_mean_iou"), f"{statistics.median(r['train_s'] for r in runs):.0f}"])
    wins = []
    for variant in dict.fromkeys(r["variant"] for r in results):
        pairs = [(a, b) for a in results for b in results if a["variant"] == b["variant"] == variant
                 and a["seed"] == b["seed"] and a["init"] == "bilinear" and b["init"] == "default"]
        if pairs:
            better = sum(a["mean_iou"] > b["mean_iou"] for a, b in pairs)
            gain = statistics.fmean(a["mean_iou"] - b["mean_iou"] for a, b in pairs)
            wins.append(f"FCN-{variant}: bilinear better in {better} of {len(pairs)} seeds, "
                        f"mean IoU {gain:+.3f} on average")
    return "\n".join([
        "Notebook 1's FCN family on quick-mode data (test split), each trained with the quick budget",
        f"Machine: {common.machine()}",
        common.table(rows, ["seed", "model", "init", "mean IoU", "accuracy",
                            *(n.split("/")[-1] for n in THIN), "train s"]),
        "",
        common.table(summary, ["model", "init", "seeds", "mean IoU range", "mean", "thin-class IoU range",
                               "median train s"]),
        *wins,
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
    parser.add_argument("--epochs", type=int, help="instead of the notebook's quick-mode EPOCHS")
    args = parser.parse_args(argv)
    overrides = {"EPOCHS": args.epochs} if args.epochs else None
    results = measure(args.seeds, args.variants, args.inits, overrides)
    print(report(results))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    if not __package__:  # run as a file: make `benchmarks` and `helpers` importable
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    main()
