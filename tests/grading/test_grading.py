"""The grader: the grade formula, safe loading, verdicts and exit codes, the bounds every file
is graded under, and a class's folder end to end (tests/test_grader.py: its parts one by one)."""

import csv
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import bomb_files
import keras
import numpy as np
import pytest
from keras import layers
from packaging.requirements import Requirement
from grading_models import GOOD_MODEL, small_fcn
from zip_tools import rewrite_zip

from helpers import download, grading, m2nist, metrics, synthetic
from helpers.config import REPO_DIR
from grader import cli, limits, safety, scoring, tables, testset, workers

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
    report = scoring.report_for_scores("edge.keras", scores)
    assert (report.status, report.grade) == ("fail", 60.0)
    assert report.text().endswith("Grade: 60.00 (10 x the sum of the digit IoUs; pass above 60): FAIL")


def test_the_docstring_states_the_pass_rule_as_the_readme_does():
    assert "pass: grade above 60" in " ".join(grading.__doc__.split())
    assert "pass mark is" not in grading.__doc__
    assert "pass above 60" in (REPO_DIR / "README.md").read_text()


@pytest.fixture(scope="module")
def quick_splits():
    return m2nist.load_m2nist(quick=True)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return tmp_path_factory.mktemp("submissions")


@pytest.fixture(scope="module")
def good_model(quick_splits, model_files):
    """The shipped trained model (tests/grading_models.py rebuilds it) and its grade, scored here."""
    assert GOOD_MODEL.is_file(), f"{GOOD_MODEL} is missing: run COURSE_QUICK=1 python tests/grading_models.py"
    path = model_files / "good.keras"  # a copy: the grader writes its verdict beside the file
    path.write_bytes(GOOD_MODEL.read_bytes())
    value = grading.grade(grading.score_model(scoring.load_submission(path), *quick_splits["test"]))
    assert grading.passed(value), (
        f"the shipped model grades {value:.2f} on today's quick test split: "
        "run COURSE_QUICK=1 python tests/grading_models.py to retrain it")
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
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)],
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


@pytest.mark.slow
def test_a_good_model_passes_with_exit_0_and_a_json_verdict(good_model):
    path, value = good_model
    done = grade_cli(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout
    verdict = json.loads(path.with_name("good.keras.grade.json").read_text())
    assert verdict["status"] == "pass"
    mirror = os.environ["COURSE_M2NIST_URL"]  # the test session's loopback server
    assert verdict["test_split"] == f"M2NIST test split (from {mirror}, quick mode; 48 images)"
    # Which test set, by name and hash: the archive the download cache holds.
    archive = download.local_path(os.environ["COURSE_DATA_DIR"]) / "downloads" / "m2nist-quick" / "m2nist.zip"
    assert verdict["test_set"] == {
        "name": "m2nist.zip", "source": f"from {mirror}", "sha256": download.sha256_file(archive),
        "images": 48, "archive_images": m2nist.QUICK_COUNT, "part": "the fixed split's test part"}
    # Graded in a worker, as every file is; it reports what the file cost.
    assert verdict["resources"]["worker_files_before"] == 0 and verdict["resources"]["seconds"] > 0
    assert verdict["grade"] == pytest.approx(value, abs=0.01)
    assert verdict["grade"] == pytest.approx(10 * sum(verdict["iou"].values()), abs=0.01)
    assert all(0 < verdict["dice"][d] <= 1 for d in verdict["dice"])


@pytest.mark.slow
def test_an_untrained_model_fails_with_exit_1_on_the_archive_url_names(
        untrained_model, other_m2nist, tmp_path):
    out = tmp_path / "verdict.json"
    assert cli.main([str(untrained_model), "--full", "--url", other_m2nist,
                         "--json", str(out)]) == 1
    verdict = json.loads(out.read_text())
    assert verdict["status"] == "fail" and verdict["grade"] < 10
    # 100 images split 80 / 16 / 4: the verdict was graded on that archive's test split.
    assert verdict["test_split"] == f"M2NIST test split (from {other_m2nist}; 4 images)"
    expected = grading.grade(grading.score_model(
        scoring.load_submission(untrained_model),
        *scoring.fixed_test_split(quick=False, url=other_m2nist)))
    assert verdict["grade"] == pytest.approx(expected, abs=0.01)


def test_the_lambda_sentinel_really_runs_when_its_code_is_executed(lambda_model):
    path, sentinel = lambda_model
    keras.saving.load_model(path, safe_mode=False)  # what a careless grader would do
    assert sentinel.exists()


def test_a_lambda_model_is_rejected_without_running_its_code(lambda_model, tmp_path, capsys):
    path, sentinel = lambda_model
    assert cli.main([str(path), "--json", str(tmp_path / "v.json")]) == 2
    assert not sentinel.exists()
    assert "Lambda" in capsys.readouterr().out
    assert json.loads((tmp_path / "v.json").read_text())["status"] == "invalid"


def test_a_lambda_is_rejected_even_when_the_config_scan_is_bypassed(lambda_model, monkeypatch):
    # Keras' safe_mode is the second line of defence behind the grader's own scan.
    path, sentinel = lambda_model
    monkeypatch.setattr(safety, "scan_config", lambda node, problems, top=True: None)
    with pytest.raises(grading.InvalidSubmission, match="cannot be loaded safely"):
        scoring.load_submission(path)
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
        scoring.load_submission(tmp_path / "custom.keras")


def test_corrupt_truncated_and_wrong_type_files_get_exit_2(untrained_model, tmp_path, capsys):
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(untrained_model.read_bytes()[:5000])
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"this is not a model")
    wrong_type = tmp_path / "model.h5"
    wrong_type.write_bytes(untrained_model.read_bytes())
    latin1 = tmp_path / os.fsdecode(b"caf\xe9.keras")  # a name that is not UTF-8
    latin1.write_bytes(b"this is not a model either")
    for path, reason in ((truncated, "not a readable .keras archive"),
                         (garbage, "not a readable .keras archive"),
                         (wrong_type, "not a .keras file"),
                         (latin1, "caf\ufffd.keras is not a readable .keras archive")):
        assert cli.main([str(path), "--json", str(tmp_path / "v.json")]) == 2
        assert reason in capsys.readouterr().out
    assert cli.main([str(latin1)]) == 2  # its verdict beside it, under its own name
    assert latin1.with_name(latin1.name + ".grade.json").is_file()


@pytest.mark.parametrize("shape, message", [
    ((64, 84, 10), "output shape is (64, 84, 10)"),
    ((32, 42, 11), "output shape is (32, 42, 11)"),
])
def test_wrong_output_shapes_are_invalid(shape, message, tmp_path, quick_splits):
    # What a worker does with the file (the command line's exit 2 for an invalid verdict is
    # tested above, on files refused before any worker starts).
    inputs = keras.Input((64, 84, 1))
    x = inputs if shape[0] == 64 else layers.MaxPooling2D()(inputs)
    model = keras.Model(inputs, layers.Conv2D(shape[-1], 1, activation="softmax")(x))
    model.save(tmp_path / "m.keras")
    report = scoring.grade_file(tmp_path / "m.keras", quick_splits["test"])
    assert report.status == "invalid" and message in report.message
    assert cli.EXIT[report.status] == 2


def test_a_wrong_input_shape_is_invalid(tmp_path):
    inputs = keras.Input((64, 84, 3))
    keras.Model(inputs, layers.Conv2D(11, 1)(inputs)).save(tmp_path / "rgb.keras")
    with pytest.raises(grading.InvalidSubmission, match=r"input shape is \(64, 84, 3\)"):
        scoring.load_submission(tmp_path / "rgb.keras")


@pytest.mark.slow
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
    # One worker: oscar, last, runs out of memory in a worker that graded others, and is
    # graded again in a fresh one.
    done = grade_cli(folder, "--memory-limit", 1.5, "--jobs", 1)
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
    verdicts = {v["submission"]: v for v in json.loads((folder / "grades.json").read_text())}
    assert len(verdicts) == 6
    # A memory verdict comes from a worker that had graded nothing before.
    assert verdicts["mallory.keras"]["resources"]["worker_files_before"] == 2
    assert verdicts["oscar.keras"]["resources"]["worker_files_before"] == 0
    # Ended early: the worker oscar ran out of memory in, and the fresh one it ran out in again.
    assert "Workers ended early (a timeout, a crash, out of memory or grown too large) and " \
           "replaced: 2." in done.stdout
    with open(folder / "students.csv") as f:
        students = {row["student"]: row for row in csv.DictReader(f)}
    assert {k: (v["status"], v["files"]) for k, v in students.items()} == {
        "alice": ("pass", "1"), "bob": ("fail", "1"), "carol": ("invalid", "1"),
        "dave": ("invalid", "1"), "mallory": ("invalid", "1"), "oscar": ("invalid", "1")}
    assert students["alice"]["score"] == rows["alice.keras"]["grade"] and students["carol"]["score"] == ""
    assert sorted(p.name for p in (folder / "feedback").iterdir()) == [
        f"{name}.feedback.txt" for name in ("alice", "bob", "carol", "dave", "mallory", "oscar")]
    # Grading again ignores its own outputs (tables, feedback files and their zip).
    assert [p.relative_to(folder).as_posix() for p in tables.submissions_in(folder)] == [
        "alice.keras", "bob.keras", "carol/model.keras", "dave.keras", "mallory.keras",
        "oscar.keras"]


def test_tables_and_verdicts_written_under_other_names_are_not_graded_next_time(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "alice.keras").write_bytes(b"PK\x03\x04")
    report = scoring.Report("alice.keras", "fail", grade=12.5)
    tables.write_csv([report], folder / "results.csv")  # --csv results.csv
    # As the grader writes them: a folder's verdicts (--json) and one file's.
    (folder / "verdicts.json").write_text(json.dumps([dataclasses.asdict(report)], indent=1))
    (folder / "alice-verdict.json").write_text(json.dumps(dataclasses.asdict(report), indent=1))
    # Files a student handed in that merely look like tables are still graded.
    (folder / "notes.csv").write_text("my model, trained for 20 epochs\n")
    (folder / "config.json").write_text(json.dumps({"epochs": 20}))
    assert [p.name for p in tables.submissions_in(folder)] == ["alice.keras", "config.json", "notes.csv"]


@pytest.mark.parametrize("limit", ["-1", "inf", "nan"])
def test_a_memory_limit_that_is_no_number_of_gib_is_refused(tmp_path, limit, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main([str(tmp_path), "--memory-limit", limit])
    assert exit.value.code == 2 and "--memory-limit must be a number of GiB" in capsys.readouterr().err


@pytest.mark.parametrize("limit, expected", [
    (1 << 30, "the grader's process was killed by signal 11 on this file (possibly out of its "
              "memory limit of 1 GiB): F0000 00:00:1.2 3 check.cc:1] Check failed Segmentation fault"),
    (0, "the grader's process died on this file (exit code -11): F0000 00:00:1.2 3 check.cc:1] "
        "Check failed Segmentation fault"),
])
def test_a_child_killed_by_a_signal_gets_a_verdict_without_tensorflow_info_lines(limit, expected):
    # What a worker wrote while grading the file, then it died without a verdict
    # (tests/test_grader.py kills real workers; this is the message they get).
    output = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
              "I0000 00:00:1.2 3 onednn.cc:1] some TensorFlow log line\n"
              "W0000 00:00:1.2 3 cpu_feature_guard.cc:1] another TensorFlow log line\n"
              "E0000 00:00:1.2 3 cuda_platform.cc:52] failed call to cuInit: no device\n"
              "F0000 00:00:1.2 3 check.cc:1] Check failed\nSegmentation fault\n")
    message = workers.crash_message(-11, output, limit)
    assert message == expected
    assert "TensorFlow log line" not in message and "absl" not in message and "cuInit" not in message
    # Nothing but log lines before it died: the message ends at its cause, with no ": ".
    message = workers.crash_message(-11, output.rsplit("F0000", 1)[0], limit)
    assert message == expected.split(": F0000")[0]


def test_a_child_that_crashed_after_tensorflow_ran_out_of_memory_gets_the_memory_verdict():
    # TensorFlow's CPU allocator logged the refused allocation, then the op crashed the worker
    # (SIGSEGV, on a CPU with AMX, grading tests/bomb_files.wide_conv under a 1 GiB limit).
    output = ("W0000 00:00:1796188320.394711    5250 bfc_allocator.cc:502] Allocator (mklcpu) ran "
              "out of memory trying to allocate 5.25GiB (rounded to 5637144576)requested by op "
              "functional_1/conv2d_1/BiasAdd\nIf the cause is memory fragmentation maybe the "
              "environment variable 'TF_GPU_ALLOCATOR=cuda_malloc_async' will improve the situation.\n"
              "Current allocation summary follows.\n")
    assert workers.crash_message(-11, output, 1 << 30) == limits.memory_message(1 << 30)
    assert workers.crash_message(-11, output.replace("ran out of", "ran short of"), 1 << 30) != (
        limits.memory_message(1 << 30))
    # The same warning when TensorFlow recovered says so, and a later crash is not memory's;
    # the allocator's follow-up lines stay out of the verdict.
    recovered = ("W0000 00:00:1.2 3 bfc_allocator.cc:291] Allocator (mklcpu) ran out of memory "
                 "trying to allocate 2.1GiB with freed_by_count=0. The caller indicates that this "
                 "is not a failure, but this may mean that there could be performance gains if "
                 "more memory were available.\nIf the cause is memory fragmentation maybe the "
                 "environment variable 'TF_GPU_ALLOCATOR=cuda_malloc_async' will improve the "
                 "situation.\nCurrent allocation summary follows.\nSegmentation fault\n")
    assert workers.crash_message(-11, recovered, 1 << 30) == (
        "the grader's process was killed by signal 11 on this file (possibly out of its memory "
        "limit of 1 GiB): Segmentation fault")


def test_an_empty_folder_is_exit_2(tmp_path):
    assert cli.main([str(tmp_path)]) == 2


def test_without_test_data_the_grader_exits_3_not_fail(untrained_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_M2NIST_URL", (tmp_path / "missing" / "m2nist.zip").as_uri())
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "empty-cache"))
    assert cli.main([str(untrained_model), "--full"]) == cli.EXIT_CANNOT_GRADE
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
        scoring.load_submission(path)


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
    safety.scan_config({"class_name": "Functional", "module": "keras.src.models.functional",
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
        safety.scan_config(configuration, problems)
        assert problems == set(), name
        modules |= set(re.findall(r'"module": "([^"]+)"', json.dumps(configuration)))
        loaded = scoring.load_submission(path)
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
    safety.scan_config(nested, problems)
    assert problems == {"serialized Python code (a lambda or function)"}
    problems = set()
    safety.scan_config({**nested, "config": {"layers": []}}, problems)
    assert problems == set()  # only the top-level compile_config is skipped (compile=False)


def test_non_dict_and_deeply_nested_configs_are_invalid_not_crashes(untrained_model, tmp_path):
    for name, text in (("list", "[1, 2]"), ("deep", "[" * 100000 + "]" * 100000)):
        path = tmp_path / f"{name}.keras"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("config.json", text)
        with pytest.raises(grading.InvalidSubmission, match="not a readable .keras archive"):
            scoring.load_submission(path)


def test_a_fully_convolutional_model_with_open_sizes_is_graded(tmp_path, quick_splits):
    inputs = keras.Input((None, None, 1))
    keras.Model(inputs, layers.Conv2D(11, 3, padding="same", activation="softmax")(inputs)).save(
        tmp_path / "open.keras")
    report = scoring.grade_file(tmp_path / "open.keras", quick_splits["test"])
    assert report.status == "fail" and cli.EXIT[report.status] == 1


@pytest.fixture
def other_m2nist(tmp_path, monkeypatch):
    """A small M2NIST archive elsewhere, with the default source made unreachable."""
    archive = synthetic.write_m2nist_archive(tmp_path / "other-m2nist.zip", seed=3, count=100)
    monkeypatch.setenv("COURSE_M2NIST_URL", (tmp_path / "missing" / "m2nist.zip").as_uri())
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    return archive.as_uri()


@pytest.fixture
def old_keras_in_workers(tmp_path, monkeypatch):
    """Put a Keras 3.10 where grading workers import it first (this process keeps its own)."""
    fake = tmp_path / "old-keras" / "keras"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "3.10.0"\n')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")]))


def test_a_worker_that_cannot_grade_reports_its_whole_message(
        untrained_model, old_keras_in_workers, tmp_path, capsys):
    # The main process finds a recent Keras installed; the worker imports an old one.
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "frank.keras").write_bytes(untrained_model.read_bytes())
    assert cli.main([str(folder)]) == cli.EXIT_CANNOT_GRADE
    out = capsys.readouterr().out
    message = out[out.index("Cannot grade"):]
    assert message.startswith("Cannot grade: Keras 3.10.0 is installed, and before 3.11 a model "
                              "file can run code even when loaded with safe_mode")
    assert message.rstrip().endswith("No submission was loaded.\nUpgrade it: pip install 'keras>=3.11'")
    assert not (folder / "grades.csv").exists()


@pytest.mark.parametrize("version, ok", [
    ("3.10.9", False), ("3.9.0", False), ("2.15.0", False), ("", False), ("unknown", False),
    ("3.11.0", True), ("3.15.1", True), ("4.0.0", True)])
def test_the_grader_refuses_a_keras_whose_safe_mode_can_be_bypassed(version, ok, monkeypatch):
    monkeypatch.setattr(keras, "__version__", version)
    if ok:
        scoring.check_keras_version()
    else:
        with pytest.raises(scoring.CannotGrade, match=r"(?s)Cannot grade: Keras .* 'keras>=3\.11'"):
            scoring.check_keras_version()


def test_an_old_keras_means_exit_3_and_no_model_is_loaded(
        lambda_model, old_keras_in_workers, tmp_path, monkeypatch, capsys):
    path, sentinel = lambda_model
    monkeypatch.setattr(keras, "__version__", "3.10.0")  # this process's Keras
    # Past the main process's scan, the file reaches a worker, whose Keras (3.10) refuses.
    monkeypatch.setattr(safety, "scan_config", lambda node, problems, top=True: None)
    out = tmp_path / "v.json"
    assert cli.main([str(path), "--json", str(out)]) == cli.EXIT_CANNOT_GRADE
    assert "Cannot grade: Keras 3.10.0 is installed" in capsys.readouterr().out
    assert not out.exists() and not sentinel.exists()
    # An old Keras installed where the main process looks is refused before any worker starts.
    from grader import scoring

    monkeypatch.setattr(scoring, "installed_keras_version", lambda: "3.10.0")
    monkeypatch.setattr(workers, "Worker", None)  # starting one would fail the test
    assert cli.main([str(path), "--json", str(out)]) == cli.EXIT_CANNOT_GRADE
    assert "Cannot grade: Keras 3.10.0 is installed" in capsys.readouterr().out
    assert not out.exists() and not sentinel.exists()
    with pytest.raises(scoring.CannotGrade):
        scoring.load_submission(path)  # the library path refuses too, not just the CLI
    assert not sentinel.exists()
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "3 cannot grade at all" in " ".join(capsys.readouterr().out.split())


def test_pyproject_floors_keras_where_the_grader_does_and_lists_the_runtime_packages():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the course also runs on 3.10
    dependencies = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = {Requirement(d).name: Requirement(d).specifier for d in dependencies}
    floor = ".".join(map(str, scoring.MIN_KERAS))
    assert requirements["keras"].contains(f"{floor}.0") and not requirements["keras"].contains("3.10.9")
    assert {"tensorflow-datasets", "tensorflow-hub", "scikit-learn"} <= set(requirements)
    assert all("==" not in str(spec) for spec in requirements.values())


@pytest.mark.slow
def test_a_submission_that_takes_too_long_gets_a_verdict_not_a_hang(untrained_model, tmp_path):
    folder = tmp_path / "slow"
    folder.mkdir()
    (folder / "slow.keras").write_bytes(untrained_model.read_bytes())
    # No file is graded in 50 ms (a worker's start, importing TensorFlow, is not counted).
    assert cli.main([str(folder), "--timeout", "0.05"]) == 0
    with open(folder / "grades.csv") as f:
        row = next(csv.DictReader(f))
    assert row["status"] == "invalid" and "longer than 0.05 s" in row["message"]


# Runs a command as its child and reports that child's tree's peak RSS. Measured from a fresh,
# small process on purpose: Linux carries a process's peak RSS across exec, so a command forked
# straight from this test process would report this process's RSS (gigabytes, late in a suite)
# as its own. A child of this small launcher starts from the launcher's few megabytes.
_PEAK_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print("\\nPEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
sys.exit(code)
"""


def tree_rss(root):
    """Return the resident memory in bytes of process ``root`` and all its descendants (Linux)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "pid (comm)"
        except OSError:
            continue  # it has just ended
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


def graded_measured(command, seconds=300):
    """Run ``command``; return (exit code, peak RSS in bytes of its largest process, output,
    peak RSS in bytes of its whole process tree at once).

    The first peak is the largest of the command's process and its reaped children (here: the
    grading workers), from the kernel's own count; the second sums the tree's processes, sampled
    every 20 ms while it runs (a peak shorter than that can be missed).
    """
    child = subprocess.Popen([sys.executable, "-c", _PEAK_LAUNCHER, *command], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, cwd=REPO_DIR, start_new_session=True,
                             env={**os.environ, "COURSE_QUICK": "1"})
    watchdog = threading.Timer(seconds, os.killpg, (child.pid, signal.SIGKILL))
    watchdog.start()
    tree_peak, done = [0], threading.Event()

    def sample():
        while not done.wait(0.02):
            tree_peak[0] = max(tree_peak[0], tree_rss(child.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        output = child.stdout.read().decode(errors="replace")
        code = child.wait()
    finally:
        watchdog.cancel()
        done.set()
        sampler.join()
    output, _, peak = output.rpartition("\nPEAK_RSS_KIB ")
    assert peak.strip().isdigit(), f"the command was killed after {seconds} s: {output[-3000:]}"
    return code, int(peak) << 10, output, tree_peak[0]  # Linux: KiB


def test_an_upper_case_keras_extension_is_a_keras_file(untrained_model, tmp_path):
    shouting = tmp_path / "smithjane_12345_680_MODEL.KERAS"
    shouting.write_bytes(untrained_model.read_bytes())
    config = scoring.check_before_loading(shouting)  # Canvas keeps the name as handed in
    assert config["class_name"] == "Functional"
    with pytest.raises(safety.InvalidSubmission, match="is not a .keras file"):
        scoring.check_before_loading(shouting.rename(tmp_path / "model.h5"))


@pytest.mark.slow
def test_files_declaring_gigabytes_are_refused_quickly_within_bounded_memory(bombs, tmp_path):
    declared = {"weights": 3.8 * GIB, "config": 4 * 2 * (1 << 36), "zip": 3900 << 20}
    folder = tmp_path / "class"
    folder.mkdir()
    named = {kind: folder / f"{kind}.keras" for kind in declared}
    for kind, path in named.items():
        path.write_bytes(bombs[kind].read_bytes())
        assert path.stat().st_size < 5 << 20  # small on disk
    # Graded first, by the same worker: what importing Keras and grading a file takes.
    (folder / "a-plain.keras").write_bytes((bombs["weights"].parent / "plain.keras").read_bytes())
    # A safety net: were a check to stop working, the worker would otherwise allocate what the
    # file declares. With it, such a file ends as "ran out of memory" and the test fails.
    code, peak, output, tree = graded_measured([sys.executable, "-m", "grader", str(folder),
                                                "--jobs", "1", "--memory-limit", "2.5"])
    assert code == 0, output[-3000:]
    results = {Path(v["submission"]).stem: v for v in json.loads((folder / "grades.json").read_text())}
    expected = {"weights": "has a weights array layers/conv2d/vars/0 of shape (1, 1, 1024, 996147)",
                "config": f"describes a model of {2 * (1 << 36):,} parameters",
                "zip": "has a model.weights.h5 of 3.81 GiB uncompressed"}
    assert results["a-plain"]["status"] == "fail"
    for kind in named:
        result = results[kind]
        assert result["status"] == "invalid" and expected[kind] in result["message"], result
        assert "the limit is" in result["message"] and "nothing from the file was loaded" in result["message"]
        assert result["resources"]["seconds"] < 5, result
    print(f"peak RSS {peak / GIB:.2f} GiB (the largest process: the worker); "
          f"the whole tree at once {tree / GIB:.2f} GiB")
    assert peak < min(declared.values()) / 2 and peak / 2 < tree < min(declared.values()) / 2
    # The zip bomb is refused by the main process, before any worker; the other two by the
    # worker, and refusing them added next to nothing to what it held.
    assert results["zip"]["resources"]["refused_before_loading"]
    for kind in ("weights", "config"):
        used = results[kind]["resources"]
        assert used["peak_since_file_start"] and used["peak_rss_mib"] - used["rss_before_mib"] < 64, used


@pytest.mark.slow
def test_a_file_that_needs_gigabytes_to_run_is_stopped_by_the_memory_limit_graded_alone(tmp_path):
    # The file: 0.4 MB, passes every size check, took 6.7 GB to grade without a bound.
    path = bomb_files.wide_conv(tmp_path / "wide.keras", 8192)
    assert path.stat().st_size < 1 << 20
    code, peak, output, tree = graded_measured([sys.executable, "-m", "grader", str(path),
                                                "--memory-limit", "1", "--json", str(tmp_path / "v.json")])
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert code == 2, output[-3000:]
    assert verdict["message"] == limits.memory_message(GIB)  # the error, no TensorFlow log lines
    print(f"peak RSS {peak / GIB:.2f} GiB; the whole tree at once {tree / GIB:.2f} GiB")
    assert peak < 2 * GIB  # a worker under a 1 GiB RLIMIT_DATA, plus TensorFlow's shared code
    # The grader and its worker together, sampled (measured: 1.05 GiB; the worker 0.99).
    assert peak / 2 < tree < 2 * GIB


def test_one_file_is_graded_in_a_worker_with_both_limits(untrained_model, tmp_path, monkeypatch, capsys):
    # The worker itself is what the tests above run; here, what a single file is handed to.
    calls = []

    class Pool:
        def __init__(self, jobs, test_file, memory_limit, timeout, scratch, threads=None):
            calls.append((jobs, memory_limit, timeout))
            self.memory_limit = memory_limit

        def grade_one(self, path, name):
            calls.append(path)
            return scoring.Report(name, "invalid", message=limits.memory_message(self.memory_limit))

    monkeypatch.setattr(workers, "Pool", Pool)
    out = tmp_path / "v.json"
    assert cli.main([str(untrained_model), "--timeout", "7",
                     "--memory-limit", "2.5", "--json", str(out)]) == 2
    assert calls == [(1, int(2.5 * GIB), 7), untrained_model]
    assert "memory limit of 2.5 GiB" in json.loads(out.read_text())["message"]
    calls.clear()
    assert cli.main([str(untrained_model), "--json", str(out)]) == 2  # the default: the same
    assert calls == [(1, int(limits.MEMORY_LIMIT_GB * GIB), workers.TIMEOUT), untrained_model]
    with pytest.raises(SystemExit) as refused:  # a flag that did nothing is gone, not ignored
        cli.main([str(untrained_model), "--isolate"])
    assert refused.value.code == 2 and "--isolate" in capsys.readouterr().err


@pytest.fixture(scope="module")
def private_test_set(tmp_path_factory):
    """A private test set of 20 images, built as an instructor would."""
    path = tmp_path_factory.mktemp("private") / "private-test.zip"
    testset.make_private_test_set(path, count=20, seed=7)
    return path


def lms_class(folder, good, untrained):
    """Lay out a class as Canvas's and Moodle's bulk downloads (and a plain folder) name it;
    return {file: its student's key}."""
    files = {
        # Canvas: <lastfirst>_<user id>_<file id>_<file name>; LATE_ before the id of a late
        # one; a file handed in twice gets -1; one name, two students: told apart by id.
        "smithjane_12345_90001_model.keras": ("canvas:12345", good),
        "smithjane_12345_90002_model-1.keras": ("canvas:12345", untrained),
        "doejohn_LATE_23456_90003_m2nist_fcn.keras": ("canvas:23456", b"PK\x03\x04 truncated"),
        "leeanna_34567_90004_model.keras": ("canvas:34567", good),
        "leeanna_45678_90005_model.keras": ("canvas:45678", b"this is not a model"),
        "anon_x7Yq2_90006_model.keras": ("canvas:anon_x7Yq2", b"PK\x03\x04 not a model"),
        # Moodle: a folder per student (4.1 and later, and before), or flat names.
        "Jane Smith_678_assignsubmission_file/model.keras": ("moodle:678", good),
        "Ana María López_679_assignsubmission_file_model.keras": ("moodle:679", untrained),
        "Bob Stone_680_assignsubmission_file_/final/model.keras": ("moodle:680", good),
        "Bob Stone_680_assignsubmission_onlinetext/onlinetext.html": ("moodle:680", b"<p>see file</p>"),
        # A folder per student.
        "carol/notes.txt": ("name:carol", b"trained for 5 epochs"),
    }
    for name, (_, content) in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.read_bytes())
    return {name: key for name, (key, _) in files.items()}


def rows_of(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_class_from_canvas_and_moodle_gets_one_row_per_student_the_same_with_any_jobs(
        good_model, untrained_model, private_test_set, tmp_path, capsys):
    folder = tmp_path / "class"
    folder.mkdir()
    owners = lms_class(folder, good_model[0], untrained_model)
    # Moodle's online-text entry is part of the download but no handed-in file: listed, not graded.
    entry = "Bob Stone_680_assignsubmission_onlinetext/onlinetext.html"
    url = private_test_set.as_uri()
    assert cli.main([str(folder), "--url", url, "--jobs", "2", "--points", "10",
                         "--assignment", "M2NIST FCN (4242)"]) == 0
    assert f"not handed-in files: {entry} (Moodle onlinetext entry)" in capsys.readouterr().out
    files = {row["submission"]: row for row in rows_of(folder / "grades.csv")}
    graded = {name: key for name, key in owners.items() if name != entry}
    # No file lost or duplicated, each with its owner.
    assert sorted(files) == sorted(graded) and len(rows_of(folder / "grades.csv")) == len(graded)
    assert {name: f"{row['lms'] or 'name'}:{row['student_id'] or row['student']}"
            for name, row in files.items()} == graded
    # Graded on every image of the private set, in the workers as in this process.
    sha256 = download.sha256_file(private_test_set)
    verdicts = {v["submission"]: v for v in json.loads((folder / "grades.json").read_text())}
    assert {v["test_set"]["sha256"] for v in verdicts.values()} == {sha256}
    assert verdicts["smithjane_12345_90001_model.keras"]["test_set"]["images"] == 20
    private = testset.load_test_set(url=url)
    for name, model in (("smithjane_12345_90001_model.keras", good_model[0]),
                        ("smithjane_12345_90002_model-1.keras", untrained_model)):
        expected = scoring.grade_file(model, (private.images, private.labels)).grade
        assert float(files[name]["grade"]) == pytest.approx(expected, abs=0.01)
    assert files["smithjane_12345_90001_model.keras"]["test_set"] == \
        f"private-test.zip (20 images, SHA-256 {sha256})"

    # One row per student; several files: the best counts.
    students = {(row["lms"], row["student_id"] or row["student"]): row
                for row in rows_of(folder / "students.csv")}
    assert len(rows_of(folder / "students.csv")) == len(students) == len(set(owners.values())) == 9
    assert students[("canvas", "12345")]["counted_file"] == "smithjane_12345_90001_model.keras"
    assert students[("canvas", "12345")]["files"] == "2"
    assert students[("moodle", "680")]["counted_file"] == "Bob Stone_680_assignsubmission_file_/final/model.keras"
    for row in students.values():
        counted = files[row["counted_file"]]
        assert counted["counted"] == "yes" and row["status"] == counted["status"]
        if counted["grade"] == "":
            assert row["score"] == ""
        else:  # 10 points of 100, both rounded to 2 decimals: at most half a cent apart
            assert re.fullmatch(r"\d+\.\d\d", row["score"]), row["score"]
            assert float(row["score"]) == pytest.approx(float(counted["grade"]) / 10, abs=0.0051)
        assert row["maximum"] == "10"
    assert sum(row["counted"] == "yes" for row in files.values()) == 9

    # Canvas' gradebook import: its columns, the points row, a row per Canvas user id.
    canvas = (folder / "canvas-grades.csv").read_text(encoding="utf-8").splitlines()
    assert canvas[:2] == ["Student,ID,SIS User ID,SIS Login ID,Section,M2NIST FCN (4242)",
                          "Points Possible,,,,,10"]
    assert sorted(line.split(",")[1] for line in canvas[2:]) == ["12345", "23456", "34567", "45678"]
    assert f"smithjane,12345,,,,{students[('canvas', '12345')]['score']}" in canvas
    # Moodle's grading worksheet: "Participant <id>", grade, maximum, feedback comment.
    moodle = {row["Identifier"]: row for row in rows_of(folder / "moodle-grades.csv")}
    assert sorted(moodle) == ["Participant 678", "Participant 679", "Participant 680"]
    assert moodle["Participant 679"]["Full name"] == "Ana María López"
    assert moodle["Participant 678"]["Grade"] == students[("moodle", "678")]["score"]
    assert moodle["Participant 678"]["Maximum Grade"] == "10"
    assert moodle["Participant 678"]["Feedback comments"] == students[("moodle", "678")]["comment"]

    # A feedback file per student, named as each LMS files it back with the student.
    feedback = sorted(p.name for p in (folder / "feedback").iterdir())
    assert feedback == sorted([
        "smithjane_12345_90001_grade-feedback.txt", "doejohn_LATE_23456_90003_grade-feedback.txt",
        "leeanna_34567_90004_grade-feedback.txt", "leeanna_45678_90005_grade-feedback.txt",
        "anon_x7Yq2_90006_grade-feedback.txt",
        "Jane Smith_678_assignsubmission_file_grade-feedback.txt",
        "Ana María López_679_assignsubmission_file_grade-feedback.txt",
        "Bob Stone_680_assignsubmission_file_grade-feedback.txt", "carol.feedback.txt"])
    with zipfile.ZipFile(folder / "feedback.zip") as zf:
        assert sorted(zf.namelist()) == feedback
    jane = (folder / "feedback" / "smithjane_12345_90001_grade-feedback.txt").read_text(encoding="utf-8")
    assert "File: smithjane_12345_90001_model.keras (this one counts)" in jane
    assert "File: smithjane_12345_90002_model-1.keras" in jane and sha256 in jane

    # Graded again with one worker, in the same folder: the same verdicts, and none of the
    # tables or feedback written above is taken for a submission.
    first = {name: {k: v for k, v in row.items() if k != "seconds"} for name, row in files.items()}
    first_json = {k: {**v, "resources": None} for k, v in verdicts.items()}
    assert cli.main([str(folder), "--url", url, "--jobs", "1", "--points", "10",
                         "--assignment", "M2NIST FCN (4242)"]) == 0
    again = {row["submission"]: {k: v for k, v in row.items() if k != "seconds"}
             for row in rows_of(folder / "grades.csv")}
    assert again == first
    assert {v["submission"]: {**v, "resources": None}
            for v in json.loads((folder / "grades.json").read_text())} == first_json
