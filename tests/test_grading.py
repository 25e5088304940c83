"""The grader: the grade formula, safe loading, verdicts and exit codes, the folder table."""

import csv
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from keras import layers

from helpers import grading, m2nist, metrics
from helpers.config import REPO_DIR


def test_grade_is_ten_times_the_sum_of_digit_ious_from_the_course_metric():
    # Truth: digits 0..9 each on 2 pixels, background on 4. The prediction gets digit d's
    # two pixels right for even d, one right (and one as background) for odd d.
    truth = np.array([d for d in range(10) for _ in range(2)] + [10] * 4)
    pred = truth.copy()
    for d in range(1, 10, 2):
        pred[2 * d + 1] = 10
    scores = metrics.segmentation_scores(truth, pred, 11)
    # Even digits: IoU 1. Odd digits: TP 1, FN 1 -> 1/2. Background unused by the grade.
    assert grading.grade(scores) == pytest.approx(10 * (5 * 1.0 + 5 * 0.5))
    assert not grading.passed(60.0) and grading.passed(60.01)


def test_grade_counts_a_digit_never_seen_as_zero():
    scores = SimpleNamespace(iou=np.array([1.0] * 9 + [np.nan, 0.5]))
    assert grading.grade(scores) == pytest.approx(90.0)


def small_fcn(seed=0):
    """A slim FCN-8 (any architecture may be graded; this one trains fast on 2 cores)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64, 84, 1))
    x = layers.ZeroPadding2D(((0, 0), (6, 6)))(inputs)
    features = []
    for filters in (16, 32, 64, 64, 64):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.BatchNormalization(momentum=0.9)(layers.MaxPooling2D()(x))
        features.append(x)
    x = layers.Conv2DTranspose(11, 4, strides=2, padding="same")(features[4])
    x = layers.Add()([x, layers.Conv2D(11, 1)(features[3])])
    x = layers.Conv2DTranspose(11, 4, strides=2, padding="same")(x)
    x = layers.Add()([x, layers.Conv2D(11, 1)(features[2])])
    x = layers.Conv2DTranspose(11, 16, strides=8, padding="same")(x)
    outputs = layers.Activation("softmax")(layers.Cropping2D(((0, 0), (6, 6)))(x))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def quick_splits():
    return m2nist.load_m2nist(quick=True)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("submissions")


@pytest.fixture(scope="module")
def good_model(quick_splits, models_dir):
    """Train inside the test until the grade on the quick test split passes (at most 10 epochs)."""
    model = small_fcn()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    train = m2nist.make_m2nist_dataset(*quick_splits["train"], 16, shuffle=True, digit_weight=10.0)
    for epoch in range(10):
        model.fit(train, epochs=1, verbose=0)
        value = grading.grade(grading.score_model(model, *quick_splits["test"]))
        print(f"epoch {epoch + 1}: grade {value:.1f}")
        if grading.passed(value):
            break
    assert grading.passed(value), f"the test's model only reached a grade of {value:.1f}"
    path = models_dir / "good.keras"
    model.save(path)
    return path, value


@pytest.fixture(scope="module")
def untrained_model(models_dir):
    path = models_dir / "untrained.keras"
    small_fcn(seed=1).save(path)
    return path


@pytest.fixture
def lambda_model(tmp_path, monkeypatch):
    """A model whose Lambda layer creates a file (named by $LAMBDA_SENTINEL) when its code runs."""
    sentinel = tmp_path / "lambda-ran"
    monkeypatch.setenv("LAMBDA_SENTINEL", str(sentinel))  # subprocesses inherit it
    inputs = keras.Input((64, 84, 1))
    x = layers.Conv2D(11, 1)(inputs)
    x = layers.Lambda(
        lambda t: (open(__import__("os").environ["LAMBDA_SENTINEL"], "w").close(), t)[1])(x)
    model = keras.Model(inputs, layers.Activation("softmax")(x))
    sentinel.unlink(missing_ok=True)  # building the model called the lambda once
    path = tmp_path / "lambda.keras"
    model.save(path)
    return path, sentinel


def grade_cli(*args):
    """Run the grader's exact entry point in a fresh interpreter."""
    env = {**os.environ, "COURSE_QUICK": "1"}
    return subprocess.run([sys.executable, "-m", "helpers.grading", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=REPO_DIR, timeout=300)


def test_a_good_model_passes_with_exit_0_and_a_json_verdict(good_model):
    path, value = good_model
    done = grade_cli(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout
    verdict = json.loads(path.with_name("good.keras.grade.json").read_text())
    assert verdict["status"] == "pass"
    mirror = os.environ["COURSE_M2NIST_URL"]  # the test session's loopback server
    assert verdict["test_split"] == f"M2NIST test split (from {mirror}, quick mode; 48 images)"
    assert verdict["grade"] == pytest.approx(value, abs=0.01)
    assert verdict["grade"] == pytest.approx(10 * sum(verdict["iou"].values()), abs=0.01)
    assert all(0 < verdict["dice"][d] <= 1 for d in verdict["dice"])


def test_an_untrained_model_fails_with_exit_1(untrained_model, tmp_path):
    out = tmp_path / "verdict.json"
    assert grading.main([str(untrained_model), "--json", str(out)]) == 1
    verdict = json.loads(out.read_text())
    assert verdict["status"] == "fail" and verdict["grade"] < 10


def test_the_lambda_sentinel_really_runs_when_its_code_is_executed(lambda_model):
    path, sentinel = lambda_model
    keras.saving.load_model(path, safe_mode=False)  # what a careless grader would do
    assert sentinel.exists()


def test_a_lambda_model_is_rejected_without_running_its_code(lambda_model, tmp_path, capsys):
    path, sentinel = lambda_model
    assert grading.main([str(path), "--json", str(tmp_path / "v.json")]) == 2
    assert not sentinel.exists()
    assert "Lambda" in capsys.readouterr().out
    assert json.loads((tmp_path / "v.json").read_text())["status"] == "invalid"


def test_a_lambda_is_rejected_even_when_the_config_scan_is_bypassed(lambda_model, monkeypatch):
    # Keras' safe_mode is the second line of defence behind the grader's own scan.
    path, sentinel = lambda_model
    monkeypatch.setattr(grading, "_scan_config", lambda node, problems: None)
    with pytest.raises(grading.InvalidSubmission, match="cannot be loaded safely"):
        grading.load_submission(path)
    assert not sentinel.exists()


def test_a_custom_layer_class_is_rejected(tmp_path):
    @keras.saving.register_keras_serializable(package="student")
    class Doubler(layers.Layer):
        def call(self, x):
            return 2 * x

    inputs = keras.Input((64, 84, 1))
    model = keras.Model(inputs, layers.Conv2D(11, 1, activation="softmax")(Doubler()(inputs)))
    model.save(tmp_path / "custom.keras")
    with pytest.raises(grading.InvalidSubmission, match="Doubler"):
        grading.load_submission(tmp_path / "custom.keras")


def test_corrupt_truncated_and_wrong_type_files_get_exit_2(untrained_model, tmp_path, capsys):
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(untrained_model.read_bytes()[:5000])
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"this is not a model")
    wrong_type = tmp_path / "model.h5"
    wrong_type.write_bytes(untrained_model.read_bytes())
    for path, reason in ((truncated, "not a readable .keras archive"),
                         (garbage, "not a readable .keras archive"),
                         (wrong_type, "not a .keras file")):
        assert grading.main([str(path), "--json", str(tmp_path / "v.json")]) == 2
        assert reason in capsys.readouterr().out


@pytest.mark.parametrize("shape, message", [
    ((64, 84, 10), "output shape is (64, 84, 10)"),
    ((32, 42, 11), "output shape is (32, 42, 11)"),
])
def test_wrong_output_shapes_get_exit_2(shape, message, tmp_path, capsys):
    inputs = keras.Input((64, 84, 1))
    x = inputs if shape[0] == 64 else layers.MaxPooling2D()(inputs)
    model = keras.Model(inputs, layers.Conv2D(shape[-1], 1, activation="softmax")(x))
    model.save(tmp_path / "m.keras")
    assert grading.main([str(tmp_path / "m.keras"), "--json", str(tmp_path / "v.json")]) == 2
    assert message in capsys.readouterr().out


def test_a_wrong_input_shape_is_invalid(tmp_path):
    inputs = keras.Input((64, 84, 3))
    keras.Model(inputs, layers.Conv2D(11, 1)(inputs)).save(tmp_path / "rgb.keras")
    with pytest.raises(grading.InvalidSubmission, match=r"input shape is \(64, 84, 3\)"):
        grading.load_submission(tmp_path / "rgb.keras")


def test_a_folder_is_graded_into_a_csv_with_one_row_per_submission(
        good_model, untrained_model, lambda_model, tmp_path):
    folder = tmp_path / "class"
    (folder / "carol").mkdir(parents=True)
    (folder / "alice.keras").write_bytes(good_model[0].read_bytes())
    (folder / "bob.keras").write_bytes(untrained_model.read_bytes())
    (folder / "carol" / "model.keras").write_bytes(lambda_model[0].read_bytes())
    (folder / "dave.keras").write_bytes(b"PK\x03\x04 broken")
    done = grade_cli(folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not lambda_model[1].exists()
    with open(folder / "grades.csv") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    assert {k: v["status"] for k, v in rows.items()} == {
        "alice.keras": "pass", "bob.keras": "fail", "carol/model.keras": "invalid",
        "dave.keras": "invalid"}
    assert float(rows["alice.keras"]["grade"]) == pytest.approx(good_model[1], abs=0.01)
    assert rows["carol/model.keras"]["grade"] == "" and "Lambda" in rows["carol/model.keras"]["message"]
    assert len(json.loads((folder / "grades.json").read_text())) == 4
    # Grading again ignores its own outputs.
    assert [p.relative_to(folder).as_posix() for p in grading.submissions_in(folder)] == [
        "alice.keras", "bob.keras", "carol/model.keras", "dave.keras"]


def test_an_empty_folder_is_exit_2(tmp_path):
    assert grading.main([str(tmp_path)]) == 2


def test_without_test_data_the_grader_exits_3_not_fail(untrained_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_M2NIST_URL", (tmp_path / "missing" / "m2nist.zip").as_uri())
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "empty-cache"))
    assert grading.main([str(untrained_model), "--full"]) == grading.EXIT_NO_DATA
    assert "test data is not available" in capsys.readouterr().out


def rewrite_config(source, target, edit):
    """Copy a .keras file, letting ``edit(config_dict)`` change its config.json."""
    import zipfile

    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "config.json":
                configuration = json.loads(data)
                edit(configuration)
                data = json.dumps(configuration)
            out.writestr(info.filename, data)
    return target


def first_layer(configuration, class_name):
    return next(l for l in configuration["config"]["layers"] if l["class_name"] == class_name)


@pytest.mark.parametrize("edit, message", [
    (lambda c: first_layer(c, "Conv2D").update(module="os"), "the class Conv2D from module os"),
    (lambda c: first_layer(c, "Conv2D").update(module=None), "the class Conv2D from module None"),
    (lambda c: first_layer(c, "Conv2D").update(registered_name="student>Conv2D"),
     "the registered custom object student>Conv2D"),
    (lambda c: first_layer(c, "Conv2D")["config"].update(
        activation={"class_name": "__lambda__", "config": {"code": "", "defaults": None}}),
     "serialized Python code"),
])
def test_the_config_scan_refuses_code_and_foreign_classes(untrained_model, tmp_path, edit, message):
    path = rewrite_config(untrained_model, tmp_path / "edited.keras", edit)
    with pytest.raises(grading.InvalidSubmission, match=re.escape(message)):
        grading.load_submission(path)


def test_nested_models_are_scanned_including_their_compile_config():
    nested = {"class_name": "Functional", "module": "keras.src.models.functional", "config": {
        "layers": [{"class_name": "Functional", "module": "keras.src.models.functional",
                    "config": {}, "compile_config": {"loss": {"class_name": "__lambda__"}}}]},
              "compile_config": {"loss": {"class_name": "__lambda__"}}}
    problems = set()
    grading._scan_config(nested, problems)
    assert problems == {"serialized Python code (a lambda or function)"}
    problems = set()
    grading._scan_config({**nested, "config": {"layers": []}}, problems)
    assert problems == set()  # only the top-level compile_config is skipped (compile=False)


def test_non_dict_and_deeply_nested_configs_are_invalid_not_crashes(untrained_model, tmp_path):
    import zipfile

    for name, text in (("list", "[1, 2]"), ("deep", "[" * 100000 + "]" * 100000)):
        path = tmp_path / f"{name}.keras"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("config.json", text)
        with pytest.raises(grading.InvalidSubmission, match="not a readable .keras archive"):
            grading.load_submission(path)


def test_a_fully_convolutional_model_with_open_sizes_is_graded(tmp_path):
    inputs = keras.Input((None, None, 1))
    keras.Model(inputs, layers.Conv2D(11, 3, padding="same", activation="softmax")(inputs)).save(
        tmp_path / "open.keras")
    assert grading.main([str(tmp_path / "open.keras"), "--json", str(tmp_path / "v.json")]) == 1
    assert json.loads((tmp_path / "v.json").read_text())["status"] == "fail"


def test_a_submission_that_takes_too_long_gets_a_verdict_not_a_hang(untrained_model, tmp_path):
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "slow.keras").write_bytes(untrained_model.read_bytes())
    assert grading.main([str(folder), "--timeout", "1"]) == 0
    with open(folder / "grades.csv") as f:
        row = next(csv.DictReader(f))
    assert row["status"] == "invalid" and "longer than 1 s" in row["message"]
