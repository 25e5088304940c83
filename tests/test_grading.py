"""The grader: the grade formula, safe loading, verdicts and exit codes, the folder table."""

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from types import SimpleNamespace

import bomb_files
import keras
import numpy as np
import pytest
from keras import layers
from packaging.requirements import Requirement
from zip_tools import rewrite_zip

from helpers import grading, m2nist, metrics, model_safety, synthetic
from helpers.config import REPO_DIR

GIB = 1 << 30


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


def test_the_pass_decision_agrees_with_the_printed_grade_at_the_boundary():
    assert not grading.passed(60.0004) and not grading.passed(60.004)
    assert grading.passed(60.006)
    # Ten digit IoUs of 0.600004: grade 60.0004, printed 60.00, so it must FAIL.
    scores = SimpleNamespace(iou=np.array([0.600004] * 10 + [1.0]), dice=np.full(11, 0.75))
    assert grading.grade(scores) == pytest.approx(60.0004)
    report = grading.report_for_scores("edge.keras", scores)
    assert (report.status, report.grade) == ("fail", 60.0)
    assert report.text().endswith("Grade: 60.00 (10 x the sum of the digit IoUs; pass above 60): FAIL")


def test_the_docstring_states_the_pass_rule_as_the_readme_does():
    assert "pass: grade above 60" in " ".join(grading.__doc__.split())
    assert "pass mark is" not in grading.__doc__
    assert "pass above 60" in (REPO_DIR / "README.md").read_text()


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
def model_files(tmp_path_factory):
    return tmp_path_factory.mktemp("submissions")


@pytest.fixture(scope="module")
def good_model(quick_splits, model_files):
    """Train inside the test until the grade on the quick test split passes (at most 10 epochs)."""
    model = small_fcn()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    images, labels = quick_splits["train"]
    weights = np.where(labels == m2nist.BACKGROUND, 1.0, 10.0)  # digit pixels count 10x
    train = m2nist.make_m2nist_dataset(images, labels, 16, shuffle=True, weights=weights)
    for epoch in range(10):
        model.fit(train, epochs=1, verbose=0)
        value = grading.grade(grading.score_model(model, *quick_splits["test"]))
        print(f"epoch {epoch + 1}: grade {value:.1f}")
        if grading.passed(value):
            break
    assert grading.passed(value), f"the test's model only reached a grade of {value:.1f}"
    path = model_files / "good.keras"
    model.save(path)
    return path, value


@pytest.fixture(scope="module")
def untrained_model(model_files):
    path = model_files / "untrained.keras"
    small_fcn(seed=1).save(path)
    return path


@pytest.fixture(scope="module")
def bombs(model_files):
    """Files of kilobytes to megabytes that declare gigabytes, and one that needs them to run."""
    plain = bomb_files.two_layer_model(model_files / "plain.keras")
    return {
        # Under the 4 GiB above which Keras 3.15 refuses such arrays and zip entries itself.
        "weights": bomb_files.weights_bomb(plain, model_files / "weights-bomb.keras", int(3.8 * GIB)),
        "config": bomb_files.config_bomb(plain, model_files / "config-bomb.keras", 1 << 36),
        "zip": bomb_files.zip_bomb(plain, model_files / "zip-bomb.keras", mib=3900),
        # 64 x 64 times the image in its activations: 2.8 GB for a batch of 32.
        "activations": bomb_files.wide_model(model_files / "wide.keras", 64),
    }


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


def test_score_model_uses_the_course_predict_labels(monkeypatch):
    inputs = keras.Input((64, 84, 1))
    model = keras.Model(inputs, layers.Conv2D(11, 1)(inputs))
    images = np.zeros((3, 64, 84), np.uint8)
    labels = np.full((3, 64, 84), m2nist.BACKGROUND, np.uint8)
    calls = []

    def every_pixel_is_digit_7(model_, scaled):
        calls.append(scaled.shape)
        return np.full(scaled.shape[:3], 7)

    monkeypatch.setattr(metrics, "predict_labels", every_pixel_is_digit_7)
    scores = grading.score_model(model, images, labels)
    assert calls == [(3, 64, 84, 1)]
    assert scores.confusion[m2nist.BACKGROUND, 7] == labels.size


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
    monkeypatch.setattr(model_safety, "scan_config", lambda node, problems, top=True: None)
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
        good_model, untrained_model, lambda_model, bombs, tmp_path):
    folder = tmp_path / "class"
    (folder / "carol").mkdir(parents=True)
    (folder / "alice.keras").write_bytes(good_model[0].read_bytes())
    (folder / "bob.keras").write_bytes(untrained_model.read_bytes())
    (folder / "carol" / "model.keras").write_bytes(lambda_model[0].read_bytes())
    (folder / "dave.keras").write_bytes(b"PK\x03\x04 broken")
    # A weights array of 3.8 GiB the checks refuse, and a model they pass whose activations
    # need gigabytes: its grading runs out of the memory limit, and the rest carry on.
    (folder / "mallory.keras").write_bytes(bombs["weights"].read_bytes())
    (folder / "oscar.keras").write_bytes(bombs["activations"].read_bytes())
    done = grade_cli(folder, "--memory-limit", 1.5)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not lambda_model[1].exists()
    with open(folder / "grades.csv") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    assert {k: v["status"] for k, v in rows.items()} == {
        "alice.keras": "pass", "bob.keras": "fail", "carol/model.keras": "invalid",
        "dave.keras": "invalid", "mallory.keras": "invalid", "oscar.keras": "invalid"}
    assert float(rows["alice.keras"]["grade"]) == pytest.approx(good_model[1], abs=0.01)
    assert rows["carol/model.keras"]["grade"] == "" and "Lambda" in rows["carol/model.keras"]["message"]
    assert "has a weights array layers/conv2d/vars/0 of shape" in rows["mallory.keras"]["message"]
    assert rows["oscar.keras"]["message"] == (
        "it ran out of its memory limit of 1.5 GiB while being loaded or run "
        "(the grader's --memory-limit)")
    assert len(json.loads((folder / "grades.json").read_text())) == 6
    # Grading again ignores its own outputs.
    assert [p.relative_to(folder).as_posix() for p in grading.submissions_in(folder)] == [
        "alice.keras", "bob.keras", "carol/model.keras", "dave.keras", "mallory.keras",
        "oscar.keras"]


def test_tables_and_verdicts_written_under_other_names_are_not_graded_next_time(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "alice.keras").write_bytes(b"PK\x03\x04")
    report = grading.Report("alice.keras", "fail", grade=12.5)
    grading.write_csv([report], folder / "results.csv")  # --csv results.csv
    # As the grader writes them: a folder's verdicts (--json) and one file's.
    (folder / "verdicts.json").write_text(json.dumps([dataclasses.asdict(report)], indent=1))
    (folder / "alice-verdict.json").write_text(json.dumps(dataclasses.asdict(report), indent=1))
    # Files a student handed in that merely look like tables are still graded.
    (folder / "notes.csv").write_text("my model, trained for 20 epochs\n")
    (folder / "config.json").write_text(json.dumps({"epochs": 20}))
    assert [p.name for p in grading.submissions_in(folder)] == ["alice.keras", "config.json", "notes.csv"]


@pytest.mark.parametrize("limit", ["-1", "inf", "nan"])
def test_a_memory_limit_that_is_no_number_of_gib_is_refused(tmp_path, limit, capsys):
    with pytest.raises(SystemExit) as exit:
        grading.main([str(tmp_path), "--memory-limit", limit])
    assert exit.value.code == 2 and "--memory-limit must be a number of GiB" in capsys.readouterr().err


@pytest.mark.parametrize("limit, expected", [
    (1 << 30, "the grader's process was killed by signal 11 on this file (possibly out of its "
              "memory limit of 1 GiB): F0000 00:00:1.2 3 check.cc:1] Check failed Segmentation fault"),
    (0, "the grader's process died on this file (exit code -11): F0000 00:00:1.2 3 check.cc:1] "
        "Check failed Segmentation fault"),
])
def test_a_child_killed_by_a_signal_gets_a_verdict_without_tensorflow_info_lines(
        monkeypatch, tmp_path, limit, expected):
    import subprocess

    def crashing_child(command, stdout, stderr, timeout, env):  # writes no verdict, then dies
        stderr.write(b"I0000 00:00:1.2 3 onednn.cc:1] some TensorFlow log line\n"
                     b"F0000 00:00:1.2 3 check.cc:1] Check failed\nSegmentation fault\n")
        return SimpleNamespace(returncode=-11)

    monkeypatch.setattr(subprocess, "run", crashing_child)
    report = grading.grade_isolated(tmp_path / "x.keras", "x.keras", quick=True, memory_limit=limit)
    assert report.status == "invalid" and report.message == expected
    assert "TensorFlow log line" not in report.message


def test_an_empty_folder_is_exit_2(tmp_path):
    assert grading.main([str(tmp_path)]) == 2


def test_without_test_data_the_grader_exits_3_not_fail(untrained_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_M2NIST_URL", (tmp_path / "missing" / "m2nist.zip").as_uri())
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "empty-cache"))
    assert grading.main([str(untrained_model), "--full"]) == grading.EXIT_CANNOT_GRADE
    assert "test data is not available" in capsys.readouterr().out


def rewrite_config(source, target, edit):
    """Copy a .keras file, letting ``edit(config_dict)`` change its config.json."""
    def change(name, data):
        if name != "config.json":
            return name, data
        configuration = json.loads(data)
        edit(configuration)
        return name, json.dumps(configuration)

    return rewrite_zip(source, target, change)


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
    (lambda c: first_layer(c, "Conv2D")["config"].update(activation={
        "module": "keras.utils", "class_name": "function", "config": "get_file",
        "registered_name": "function"}), "the function get_file from module keras.utils"),
    (lambda c: first_layer(c, "Conv2D")["config"].update(activation={
        "module": "keras.config", "class_name": "enable_unsafe_deserialization", "config": {},
        "registered_name": None}),
     "the class enable_unsafe_deserialization from module keras.config"),
])
def test_the_config_scan_refuses_code_and_foreign_classes(untrained_model, tmp_path, edit, message):
    path = rewrite_config(untrained_model, tmp_path / "edited.keras", edit)
    with pytest.raises(grading.InvalidSubmission, match=re.escape(message)):
        grading.load_submission(path)


def gadget(module, class_name, config=None):
    return {"module": module, "class_name": class_name, "config": config or {},
            "registered_name": None}


@pytest.mark.parametrize("node, problem", [
    (gadget("keras.config", "function", "enable_unsafe_deserialization"),
     "the function enable_unsafe_deserialization from module keras.config"),
    (gadget("keras", "function", "utils.get_file"), "the function utils.get_file from module keras"),
    (gadget("keras.ops", "function", "convert_to_numpy"),
     "the function convert_to_numpy from module keras.ops"),
    (gadget("builtins", "function", "get"), "the function get from module builtins"),
    (gadget("builtins", "function", "eval"), "the function eval from module builtins"),
    (gadget("keras.losses", "function", "sparse_categorical_crossentropy"),
     "the function sparse_categorical_crossentropy from module keras.losses"),
    (gadget("keras.config", "enable_unsafe_deserialization"),
     "the class enable_unsafe_deserialization from module keras.config"),
    (gadget("keras.utils", "FeatureSpace"), "the class FeatureSpace from module keras.utils"),
    (gadget("keras.saving", "KerasFileEditor"), "the class KerasFileEditor from module keras.saving"),
    (gadget("keras.backend", "Variable"), "the class Variable from module keras.backend"),
    (gadget("keras.src.utils.file_utils", "Anything"),
     "the class Anything from module keras.src.utils.file_utils"),
    (gadget("keras.src.saving.saving_lib", "Anything"),
     "the class Anything from module keras.src.saving.saving_lib"),
    (gadget("keras", "utils.FeatureSpace"), "the class utils.FeatureSpace from module keras"),
    (gadget("keras", "Variable"), "the class Variable from module keras"),
    (gadget("keras.layers", "deserialize"), "the class deserialize from module keras.layers"),
    ({"class_name": "Conv2D", "config": {}}, "the class Conv2D from module None"),
])
def test_the_config_scan_refuses_keras_functions_and_modules_a_model_never_uses(node, problem):
    problems = set()
    model_safety.scan_config({"class_name": "Functional", "module": "keras.src.models.functional",
                          "config": {"layers": [{"config": {"activation": node}}]}}, problems)
    assert problems == {problem}


def typical_models():
    """Models in the course's style: every module their configs name must pass the scan."""
    from keras import constraints, initializers, regularizers

    inputs = keras.Input((64, 84, 1))
    x = layers.Rescaling(1.0, offset=0.0)(inputs)
    x = layers.ZeroPadding2D(((0, 0), (6, 6)))(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu",
                      kernel_initializer=initializers.HeNormal(seed=1),
                      bias_initializer=initializers.Constant(0.1),
                      kernel_regularizer=regularizers.L2(1e-4), activity_regularizer="l2",
                      kernel_constraint=constraints.MaxNorm(3), bias_constraint=constraints.NonNeg())(x)
    x = layers.BatchNormalization(gamma_regularizer=regularizers.L1(1e-5))(x)
    x = layers.Dropout(0.2)(layers.Activation(keras.activations.leaky_relu)(x))
    pooled = layers.MaxPooling2D()(x)
    up = layers.UpSampling2D()(pooled)
    t = layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation=keras.activations.gelu)(pooled)
    x = layers.Concatenate()([layers.Add()([up, t]), x])
    x = layers.Cropping2D(((0, 0), (6, 6)))(x)
    x = layers.Resizing(64, 84)(x)
    x = layers.Softmax()(layers.Conv2D(11, 1)(x))
    functional = keras.Model(inputs, layers.Activation("softmax", dtype="mixed_float16")(x))
    functional.compile(keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.9)),
                       keras.losses.SparseCategoricalCrossentropy(),
                       metrics=[keras.metrics.SparseCategoricalAccuracy(), keras.metrics.MeanIoU(11)])
    sequential = keras.Sequential([keras.Input((64, 84, 1)), layers.Conv2D(8, 3, padding="same"),
                                   layers.BatchNormalization(), layers.Activation("relu"),
                                   layers.Conv2D(11, 1, activation="softmax")])
    sequential.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                       keras.losses.sparse_categorical_crossentropy,
                       metrics=[keras.metrics.sparse_categorical_accuracy])
    nested = keras.Model(inputs, sequential(inputs))  # its compile_config names two functions
    # Tensor operators instead of layers, as learners often write skip connections.
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.ops.relu(x + x) * 0.5
    x = keras.ops.cast(keras.ops.concatenate([x, x[..., :4]], axis=-1), "float32")
    operators = keras.Model(inputs, layers.Conv2D(11, 1, activation="softmax")(x))
    return {"functional": functional, "sequential": sequential, "nested": nested,
            "operators": operators}


def test_typical_course_models_pass_the_scan_and_load(tmp_path):
    modules = set()
    for name, model in typical_models().items():
        path = tmp_path / f"{name}.keras"
        model.save(path)
        configuration = json.loads(zipfile.ZipFile(path).read("config.json"))
        problems = set()
        model_safety.scan_config(configuration, problems)
        assert problems == set(), name
        modules |= set(re.findall(r'"module": "([^"]+)"', json.dumps(configuration)))
        loaded = grading.load_submission(path)
        assert loaded.output_shape == (None, 64, 84, 11)
    # What the allowlist was built from; a module missing here would be rejected.
    assert modules == {"keras", "keras.layers", "keras.initializers", "keras.regularizers",
                       "keras.constraints", "keras.optimizers", "keras.optimizers.schedules",
                       "keras.losses", "keras.metrics", "keras.src.models.functional", "builtins",
                       "keras.src.ops.numpy", "keras.src.ops.nn", "keras.src.ops.core"}


def test_nested_models_are_scanned_including_their_compile_config():
    nested = {"class_name": "Functional", "module": "keras.src.models.functional", "config": {
        "layers": [{"class_name": "Functional", "module": "keras.src.models.functional",
                    "config": {}, "compile_config": {"loss": {"class_name": "__lambda__"}}}]},
              "compile_config": {"loss": {"class_name": "__lambda__"}}}
    problems = set()
    model_safety.scan_config(nested, problems)
    assert problems == {"serialized Python code (a lambda or function)"}
    problems = set()
    model_safety.scan_config({**nested, "config": {"layers": []}}, problems)
    assert problems == set()  # only the top-level compile_config is skipped (compile=False)


def test_non_dict_and_deeply_nested_configs_are_invalid_not_crashes(untrained_model, tmp_path):
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


@pytest.fixture
def other_m2nist(tmp_path, monkeypatch):
    """A small M2NIST archive elsewhere, with the default source made unreachable."""
    archive = synthetic.write_m2nist_archive(tmp_path / "other-m2nist.zip", seed=3, count=100)
    monkeypatch.setenv("COURSE_M2NIST_URL", (tmp_path / "missing" / "m2nist.zip").as_uri())
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    return archive.as_uri()


def test_the_url_option_chooses_the_m2nist_archive(untrained_model, other_m2nist, tmp_path):
    out = tmp_path / "v.json"
    assert grading.main([str(untrained_model), "--full", "--url", other_m2nist,
                         "--json", str(out)]) == 1
    # 100 images split 80 / 16 / 4: the verdict was graded on that archive's test split.
    assert json.loads(out.read_text())["test_split"] == (
        f"M2NIST test split (from {other_m2nist}; 4 images)")


def test_the_url_option_reaches_each_isolated_grader(untrained_model, other_m2nist, tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "erin.keras").write_bytes(untrained_model.read_bytes())
    assert grading.main([str(folder), "--full", "--url", other_m2nist]) == 0
    with open(folder / "grades.csv") as f:
        row = next(csv.DictReader(f))
    expected = grading.grade(grading.score_model(
        grading.load_submission(untrained_model),
        *grading.fixed_test_split(quick=False, url=other_m2nist)))
    assert row["status"] == "fail" and float(row["grade"]) == pytest.approx(expected, abs=0.01)


def test_a_child_that_cannot_grade_reports_its_whole_message(
        untrained_model, quick_splits, tmp_path, monkeypatch, capsys):
    # The parent has test data; the child finds none at the unreachable default source.
    missing = (tmp_path / "missing" / "m2nist.zip").as_uri()
    monkeypatch.setenv("COURSE_M2NIST_URL", missing)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(grading, "fixed_test_split", lambda **_: quick_splits["test"])
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "frank.keras").write_bytes(untrained_model.read_bytes())
    assert grading.main([str(folder), "--full"]) == grading.EXIT_CANNOT_GRADE
    out = capsys.readouterr().out
    message = out[out.index("Cannot grade"):]
    assert message.startswith("Cannot grade: the test data is not available.\n"
                              "Could not download the M2NIST archive.")
    assert f"URL:     {missing}" in message and "Reason:" in message
    assert "Mirror:  set COURSE_M2NIST_URL" in message and "Offline:" in message


@pytest.mark.parametrize("version, ok", [
    ("3.10.9", False), ("3.9.0", False), ("2.15.0", False), ("", False), ("unknown", False),
    ("3.11.0", True), ("3.15.1", True), ("4.0.0", True)])
def test_the_grader_refuses_a_keras_whose_safe_mode_can_be_bypassed(version, ok, monkeypatch):
    monkeypatch.setattr(keras, "__version__", version)
    if ok:
        grading.check_keras_version()
    else:
        with pytest.raises(grading.CannotGrade, match=r"(?s)Cannot grade: Keras .* 'keras>=3\.11'"):
            grading.check_keras_version()


def test_an_old_keras_means_exit_3_and_no_model_is_loaded(lambda_model, tmp_path, monkeypatch, capsys):
    path, sentinel = lambda_model
    monkeypatch.setattr(keras, "__version__", "3.10.0")
    monkeypatch.setattr(model_safety, "scan_config", lambda node, problems, top=True: None)
    out = tmp_path / "v.json"
    assert grading.main([str(path), "--json", str(out)]) == grading.EXIT_CANNOT_GRADE
    assert "Cannot grade: Keras 3.10.0 is installed" in capsys.readouterr().out
    assert not out.exists() and not sentinel.exists()
    with pytest.raises(grading.CannotGrade):
        grading.load_submission(path)  # the library path refuses too, not just the CLI
    assert not sentinel.exists()
    with pytest.raises(SystemExit):
        grading.main(["--help"])
    assert "3 cannot grade at all" in " ".join(capsys.readouterr().out.split())


def test_pyproject_floors_keras_where_the_grader_does_and_lists_the_runtime_packages():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the course also runs on 3.10
    dependencies = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = {Requirement(d).name: Requirement(d).specifier for d in dependencies}
    floor = ".".join(map(str, grading.MIN_KERAS))
    assert requirements["keras"].contains(f"{floor}.0") and not requirements["keras"].contains("3.10.9")
    assert {"tensorflow-datasets", "tensorflow-hub", "scikit-learn"} <= set(requirements)
    assert all("==" not in str(spec) for spec in requirements.values())


def test_a_submission_that_takes_too_long_gets_a_verdict_not_a_hang(untrained_model, tmp_path):
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "slow.keras").write_bytes(untrained_model.read_bytes())
    assert grading.main([str(folder), "--timeout", "1"]) == 0
    with open(folder / "grades.csv") as f:
        row = next(csv.DictReader(f))
    assert row["status"] == "invalid" and "longer than 1 s" in row["message"]


# Runs in a fresh interpreter, whose peak memory the test reads when it ends.
_REFUSE_ALL = """
import json, resource, sys, time
from helpers import grading
# A safety net: were a check to stop working, this process would otherwise allocate what
# the file declares. With it, such a file ends as "ran out of memory" and the test fails.
grading.limit_memory(int(sys.argv[1]))
grading.check_keras_version()  # imports Keras before anything is timed
grading.main([sys.argv[2], "--json", sys.argv[2] + ".json"])  # and loads the test data
results = {"baseline_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
for path in sys.argv[3:]:
    start = time.perf_counter()
    code = grading.main([path, "--json", path + ".json"])
    results[path] = {"exit": code, "seconds": time.perf_counter() - start,
                     "message": json.load(open(path + ".json"))["message"]}
print("RESULTS " + json.dumps(results))
"""


def test_files_declaring_gigabytes_are_refused_quickly_within_bounded_memory(bombs, tmp_path):
    declared = {"weights": 3.8 * GIB, "config": 4 * 2 * (1 << 36), "zip": 3900 << 20}
    named = {kind: tmp_path / f"{kind}.keras" for kind in declared}
    for kind, path in named.items():
        path.write_bytes(bombs[kind].read_bytes())
        assert path.stat().st_size < 5 << 20  # small on disk
    honest = tmp_path / "plain.keras"
    honest.write_bytes((bombs["weights"].parent / "plain.keras").read_bytes())
    out = tmp_path / "out.txt"
    with open(out, "w") as stdout:
        child = subprocess.Popen(
            [sys.executable, "-c", _REFUSE_ALL, str(int(2.5 * GIB)), str(honest),
             *map(str, named.values())], stdout=stdout, stderr=subprocess.STDOUT,
            cwd=REPO_DIR, env={**os.environ, "COURSE_QUICK": "1"})
        watchdog = threading.Timer(180, child.kill)
        watchdog.start()
        try:
            # wait4 reaps this one child and returns its own resource usage, peak RSS included.
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            watchdog.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
    text = out.read_text()
    assert "RESULTS " in text, text[-3000:]
    results = json.loads(text.split("RESULTS ", 1)[1])
    expected = {"weights": "has a weights array layers/conv2d/vars/0 of shape (1, 1, 1024, 996147)",
                "config": f"describes a model of {2 * (1 << 36):,} parameters",
                "zip": "has a model.weights.h5 of 3.81 GiB uncompressed"}
    for kind, path in named.items():
        result = results[str(path)]
        assert result["exit"] == 2 and expected[kind] in result["message"], result
        assert "the limit is" in result["message"] and "nothing from the file was loaded" in result["message"]
        assert result["seconds"] < 5, result
    peak = usage.ru_maxrss << 10  # Linux reports KiB
    print(f"peak RSS {peak / GIB:.2f} GiB; after grading an honest file "
          f"{results['baseline_kib'] / (1 << 20):.2f} GiB")
    assert child.returncode == 0 and peak < min(declared.values()) / 2
    # Refusing all three added next to nothing to what importing Keras and grading took.
    assert peak - (results["baseline_kib"] << 10) < 64 << 20


def test_isolate_grades_one_file_in_a_child_with_both_limits(untrained_model, tmp_path, monkeypatch):
    # The child itself is what the folder test runs; here, that one file reaches it.
    calls = []

    def child(path, name, quick, timeout, url=None, memory_limit=None):
        calls.append((path, quick, timeout, url, memory_limit))
        return grading.Report(name, "invalid", message=grading._memory_message(memory_limit))

    monkeypatch.setattr(grading, "grade_isolated", child)
    out = tmp_path / "v.json"
    assert grading.main([str(untrained_model), "--isolate", "--timeout", "7",
                         "--memory-limit", "2.5", "--json", str(out)]) == 2
    assert calls == [(untrained_model, True, 7, None, int(2.5 * GIB))]
    assert "memory limit of 2.5 GiB" in json.loads(out.read_text())["message"]
    calls.clear()
    assert grading.main([str(untrained_model), "--json", str(out)]) == 1  # in this process
    assert calls == []
