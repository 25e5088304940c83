"""Benchmark 6: notebook 2's U-Net trained with cross-entropy and with the Dice loss, across seeds.

    python -m benchmarks.unet_losses                       # quick mode's data and budget, 5 seeds
    python -m benchmarks.unet_losses --seeds 1 2 3 4 5 --epochs 6
    python -m benchmarks.unet_losses --size 128 128 --filters 32 --epochs 5   # bigger, slower

Notebook 2 compares the two losses once, at its own seed; this gives the range across seeds.
Everything but the loss is the notebook's: its ``unet`` (read from the notebook), its quick-mode
parameters, quick mode's generated pets as tensorflow-datasets prepares them (in a temporary
folder, or ``--data-dir``), the ``train[:85%]`` / ``train[85%:]`` split, the course's pipeline
(``datasets.make_pets_dataset``, which the notebook checks its own against), Adam with cosine
decay and early stopping on validation mean IoU. For each seed both losses start from the same
weights and see the same batches. Prints each run's per-class IoU on the test split, scored on
the three classes and with the trimap's border band ("not classified") ignored, as the notebook
prints them, the range of each over the seeds, and each run's CPU time.
"""

import argparse
import json
import sys
import time

LOSSES = ("ce", "dice")
BORDER = 2  # the trimap's third class, "not classified": the annotators' band along each edge


def loss_function(name):
    """Return what ``compile`` takes for a loss name: cross-entropy or the course's Dice loss."""
    from helpers import keras_metrics

    return {"ce": "sparse_categorical_crossentropy", "dice": keras_metrics.dice_loss}[name]


def pipelines(splits, params, seed):
    """Return the (train, validation, test) batches of one run, seeded as the notebook seeds them.

    ``splits`` holds pets elements (dictionaries with ``image`` and ``segmentation_mask``) under
    "train", "val" and "test"; ``params`` the notebook's parameters.
    """
    import keras

    from helpers import datasets

    # TensorFlow combines the global seed with each shuffle's and flip's own: set it first, so
    # every loss sees the same batches, as in the notebook.
    keras.utils.set_random_seed(seed)
    size, batch = tuple(params["IMAGE_SIZE"]), params["BATCH_SIZE"]
    return tuple(datasets.make_pets_dataset(splits[name], size, batch, shuffle=name == "train",
                                            augment=name == "train" and params["AUGMENT"],
                                            seed=seed)
                 for name in ("train", "val", "test"))


def train_and_score(loss, seed, splits, params):
    """Train the notebook's U-Net with one loss from one seed; return its test scores and times."""
    import keras

    from benchmarks import common
    from helpers import keras_metrics, metrics

    size = tuple(params["IMAGE_SIZE"])
    train, val, test = pipelines(splits, params, seed)
    unet = common.notebook_function("02_unet_pets.ipynb", "unet")
    keras.utils.set_random_seed(seed)  # the same starting weights for every loss
    model = unet((*size, 3), 3, params["BASE_FILTERS"], params["DEPTH"], params["DROPOUT"])
    epochs = params["EPOCHS"]
    schedule = keras.optimizers.schedules.CosineDecay(params["LEARNING_RATE"],
                                                      epochs * int(train.cardinality()), alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss_function(loss),
                  metrics=[keras_metrics.mean_iou_metric(3)])
    model.optimizer.build(model.trainable_variables)  # as the notebook: fit traces its step once
    stop = keras.callbacks.EarlyStopping(monitor="val_mean_iou", mode="max",
                                         patience=params["PATIENCE"], restore_best_weights=True)
    cpu, wall = time.process_time(), time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=epochs, callbacks=[stop], verbose=0)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    scores = metrics.evaluate_dataset(model, test, 3)
    # As the dataset intends: pixels in the border band are not scored (pet and background).
    pet_background = metrics.evaluate_dataset(model, test, 3, ignore_class=BORDER)
    # The notebook's Dice-loss cell: both losses of this model's output on 8 test images.
    images, truths = next(iter(test.unbatch().batch(8)))
    probabilities = model.predict_on_batch(images)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy()(truths, probabilities)
    return {"loss": loss, "seed": seed, "iou": [float(v) for v in scores.iou],
            "mean_iou": scores.mean_iou, "pixel_accuracy": scores.pixel_accuracy,
            "iou_border_ignored": [float(v) for v in pet_background.iou[:BORDER]],
            "mean_iou_border_ignored": pet_background.mean_iou,
            "losses_on_8": [float(cross_entropy), float(keras_metrics.dice_loss(truths, probabilities))],
            "val_mean_iou": [float(v) for v in history.history["val_mean_iou"]],
            "epochs_run": len(history.history["loss"]), "cpu_s": cpu, "wall_s": wall}


def measure(splits, losses, seeds, params):
    """Train every loss from every seed (seed by seed, so background load hits them alike)."""
    return [train_and_score(loss, seed, splits, params) for seed in seeds for loss in losses]


def load_splits(data_dir, validation_fraction):
    """Prepare quick mode's pets in ``data_dir`` and split them as notebook 2 does."""
    import tensorflow_datasets as tfds

    from helpers import datasets

    test = datasets.load_pets(quick=True, data_dir=data_dir)["test"]
    cut = f"{1 - validation_fraction:.0%}"
    train, val = tfds.load("oxford_iiit_pet", split=[f"train[:{cut}]", f"train[{cut}:]"],
                           data_dir=datasets.pets_data_dir(True, data_dir),
                           read_config=tfds.ReadConfig(try_autocache=False))
    return {"train": train, "val": val, "test": test}


def report(results, params, class_names=("pet", "background", "border")):
    """Return the benchmark's printed report: each run, then each class's range over the seeds."""
    import numpy as np

    from benchmarks import common

    rows = [[r["loss"], r["seed"], *(f"{v:.3f}" for v in r["iou"]), f"{r['mean_iou']:.3f}",
             *(f"{v:.3f}" for v in r["iou_border_ignored"]), f"{r['mean_iou_border_ignored']:.3f}",
             f"{r['pixel_accuracy']:.3f}", *(f"{v:.3f}" for v in r["losses_on_8"]),
             r["epochs_run"], f"{r['cpu_s']:.0f}"] for r in results]
    summary = []
    for loss in dict.fromkeys(r["loss"] for r in results):
        runs = np.array([[*r["iou"], r["mean_iou"], *r["iou_border_ignored"],
                          r["mean_iou_border_ignored"]] for r in results if r["loss"] == loss])
        summary.append([loss, len(runs), *(f"{lo:.2f}-{hi:.2f} ({mean:.2f})" for lo, hi, mean
                                           in zip(runs.min(0), runs.max(0), runs.mean(0)))])
    ignored = [f"{name}, {class_names[BORDER]} ignored" for name in (*class_names[:BORDER], "mean")]
    size = params["IMAGE_SIZE"]
    return "\n".join([
        f"Notebook 2's U-Net, cross-entropy vs Dice loss: {size[0]}x{size[1]}, base filters "
        f"{params['BASE_FILTERS']}, depth {params['DEPTH']}, batch {params['BATCH_SIZE']}, at most "
        f"{params['EPOCHS']} epochs; test-split IoU",
        f"Machine: {common.machine()}",
        common.table(rows, ["loss", "seed", *class_names, "mean IoU", *ignored, "pixel acc",
                            "CE on 8", "Dice loss on 8", "epochs", "CPU s"]),
        "",
        "IoU over the seeds: min-max (mean)",
        common.table(summary, ["loss", "runs", *class_names, "mean IoU", *ignored]),
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 42])
    parser.add_argument("--epochs", type=int, help="default: the notebook's quick-mode EPOCHS")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="default: the notebook's quick-mode IMAGE_SIZE")
    parser.add_argument("--filters", type=int, help="default: the notebook's quick BASE_FILTERS")
    parser.add_argument("--data-dir", help="a folder to prepare (or reuse) the generated pets in")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    from benchmarks import common

    params = common.notebook_parameters("02_unet_pets.ipynb", quick=True)
    params.update({k: v for k, v in (("EPOCHS", args.epochs), ("BASE_FILTERS", args.filters),
                                     ("IMAGE_SIZE", args.size and tuple(args.size))) if v})
    with common.scratch_dir() as scratch:
        splits = load_splits(args.data_dir or scratch, params["VALIDATION_FRACTION"])
        results = measure(splits, args.losses, args.seeds, params)
    print(report(results, params))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": {k: list(v) if isinstance(v, tuple) else v
                                  for k, v in params.items()}, "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    if not __package__:  # run as a file: make `benchmarks` and `helpers` importable
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    main()
