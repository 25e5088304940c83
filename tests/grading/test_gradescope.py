"""The Gradescope autograder bundle (``python -m grader gradescope``), without Gradescope.

One bundle is built from a small private test set and reused. Its ``run_autograder`` runs
against a scratch folder standing for ``/autograder`` (``AUTOGRADER_ROOT``), with this
checkout's virtual environment standing for the one ``setup.sh`` makes (``GRADER_VENV``),
on uploads a learner could make: a trained model, several files, none, a zip, a corrupt
file, a Lambda layer, a zip bomb. ``setup.sh`` is checked on its own (its pins are
requirements.txt's), and once for real, into a fresh virtual environment, by a long test
(COURSE_LONG_TESTS=1).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest

from grader import cli, gradescope, testset
from grader.scoring import Report

REPO_DIR = Path(__file__).resolve().parents[2]
GIB = 1 << 30
DIGITS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def private_set(tmp_path_factory):
    path = tmp_path_factory.mktemp("test-set") / "private-test.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a practice-digits warning, where MNIST is missing
        testset.make_private_test_set(path, 20, seed=7)
    return path


@pytest.fixture(scope="module")
def bundle(private_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    assert cli.main(["gradescope", "--test-set", str(private_set), "--out", str(out)]) == 0
    return out


def run_autograder(bundle, tmp_path, files, venv=None, edit=None):
    """Lay out ``tmp_path/root`` as Gradescope does, run run_autograder; return (results, log)."""
    root = tmp_path / "root"
    (root / "submission").mkdir(parents=True)
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root / "source")
    for name in ("setup.sh", "run_autograder"):
        (root / "source" / name).chmod(0o755)  # zipfile drops the bits it stored
    for name, content in files.items():
        path = root / "submission" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.read_bytes() if isinstance(content, Path) else content)
    if edit:
        edit(root)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "GRADER_VENV": venv or sys.prefix}
    run = subprocess.run([str(root / "source" / "run_autograder")], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    text = (root / "results" / "results.json").read_text()
    # The learner's view names neither this machine's paths nor where the test set lies.
    assert str(root) not in text and "test-set/" not in text, text
    results = json.loads(text)
    assert gradescope.check_results(results) == [], results
    return results, run.stdout + run.stderr


def by_name(results):
    return {t["name"]: t for t in results["tests"]}


def digit_tests(results):
    return [t for t in results["tests"] if t["name"].startswith("IoU of digit")]


# ---------------------------------------------------------------------------------------
# The bundle and setup.sh

def test_the_bundle_follows_gradescopes_layout_and_carries_the_private_test_set(bundle, private_set):
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
        settings = json.loads(archive.read(gradescope.SETTINGS))
        carried = archive.read(settings["test_set"]["path"])
    assert {"setup.sh", "run_autograder", gradescope.REQUIREMENTS, gradescope.SETTINGS} <= names
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111
    assert carried == private_set.read_bytes()
    assert settings["test_set"] == {"path": "test-set/private-test.zip", "name": "private-test.zip",
                                    "sha256": testset.download.sha256_file(private_set), "images": 20}
    # The same limits as python -m grader, unless told otherwise.
    assert (settings["timeout"], settings["memory_limit_gib"]) == (
        float(cli.workers.TIMEOUT), float(cli.limits.MEMORY_LIMIT_GB))
    # The grader's code, and of helpers only what it imports: no notebooks, no lessons.
    grader_files = {p.name for p in (REPO_DIR / "grader").glob("*.py")}
    assert {n.split("/")[-1] for n in names if n.startswith("course/grader/")} == grader_files
    helpers = {n.split("/")[-1] for n in names if n.startswith("course/helpers/")}
    assert {"grading.py", "m2nist.py", "metrics.py", "download.py", "config.py"} <= helpers
    assert not any(n.endswith(".ipynb") or "notebooks/" in n for n in names)
    for script in ("setup.sh", "run_autograder"):
        check = subprocess.run(["bash", "-n", str(gradescope.TEMPLATES / script)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def requirement_pins(text):
    return dict(re.findall(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", text, re.M))


def test_setup_sh_installs_exactly_the_pins_of_requirements_txt_the_grader_needs(bundle):
    pinned = {name.lower(): version for name, version in
              requirement_pins((REPO_DIR / "requirements.txt").read_text()).items()}
    with zipfile.ZipFile(bundle) as archive:
        installed = requirement_pins(archive.read(gradescope.REQUIREMENTS).decode())
        setup = archive.read("setup.sh").decode()
    # tensorflow-cpu is the same release as tensorflow, built without the GPU kernels: the
    # grader's workers hide any GPU anyway, and the download is a third of the size.
    as_pinned = {("tensorflow" if name == "tensorflow-cpu" else name): v for name, v in installed.items()}
    assert set(as_pinned) == {"tensorflow", "keras", "h5py", "numpy", "pillow", "tqdm"}
    for name, version in as_pinned.items():
        assert pinned.get(name) == version, f"{name}=={version}; requirements.txt: {pinned.get(name)}"
    assert not {"jupyterlab", "notebook", "ipykernel", "papermill", "matplotlib"} & set(installed)
    # setup.sh installs nothing else with pip: one install, of that file.
    installs = [line.strip() for line in setup.splitlines()
                if "pip install" in line and not line.lstrip().startswith("#")]
    assert installs == ['"$VENV/bin/python" -m pip install --prefer-binary -r '
                        '"$SOURCE/requirements-grader.txt"']


def test_the_command_refuses_a_public_archive_a_missing_test_set_and_odd_settings(tmp_path, capsys):
    public = tmp_path / "m2nist.zip"
    testset.synthetic.write_m2nist_archive(public, 8, seed=1, one_hot=False)
    assert cli.main(["gradescope", "--test-set", str(public), "--out", str(tmp_path / "a.zip")]) == 2
    assert "not a private test set" in capsys.readouterr().out
    assert cli.main(["gradescope", "--test-set", str(tmp_path / "none.zip")]) == 2
    assert "make a private test set with python -m grader --make-test-set" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["gradescope", "--test-set", str(public), "--digit-visibility", "soon"])
    assert not (tmp_path / "a.zip").exists()


# ---------------------------------------------------------------------------------------
# results.json, from Reports made here (no grading)

def report(name, status, grade=None, iou=0.5, message=""):
    graded = status != "invalid"
    return Report(name, status, grade, iou={d: iou for d in DIGITS} if graded else {},
                  dice={d: iou for d in DIGITS} if graded else {}, message=message,
                  resources={"seconds": 1.5})


TEST_SET = {"name": "private-test.zip", "sha256": "ab" * 32, "images": 20}
SETTINGS = {"points": 50.0, "digit_visibility": "visible"}


def upload(*reports):
    from grader.identity import best

    reports = list(reports)
    return gradescope.Upload(reports, best(reports) if reports else None, test_set=TEST_SET,
                             limits={"seconds": 600.0, "memory_gib": 4.0},
                             problem="" if reports else gradescope.no_model_message(Path("."), []))


def test_results_follow_the_documented_schema_and_the_checker_catches_departures():
    data = gradescope.results(upload(report("m.keras", "pass", 72.0, 0.72)), SETTINGS, 3.2)
    assert gradescope.check_results(data) == []
    assert set(data) <= set(gradescope.RESULTS_FIELDS)
    assert isinstance(data["score"], float) and isinstance(data["execution_time"], int)
    for test in data["tests"]:
        assert set(gradescope.WRITTEN_TEST) <= set(test) <= set(gradescope.TEST_FIELDS)
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert isinstance(test["score"], float) and isinstance(test["max_score"], float)
        assert test["status"] in ("passed", "failed") and test["visibility"] in gradescope.VISIBILITY
    bad = json.loads(json.dumps(data))
    bad["grade"] = 3
    bad["tests"][0]["status"] = "ok"
    bad["tests"][1]["score"] = "1"
    bad["tests"][2]["visibility"] = "soon"
    bad["tests"][3]["score"] = 99.0
    del bad["tests"][4]["max_score"]
    problems = gradescope.check_results(bad)
    assert any("'grade' is not a documented field" in p for p in problems)
    assert any("status 'ok'" in p for p in problems)
    assert any("tests[1]: 'score' is str" in p for p in problems)
    assert any("visibility 'soon'" in p for p in problems)
    assert any("above max_score" in p for p in problems)
    assert any("tests[4]: 'max_score' is missing" in p for p in problems)


def test_scores_are_the_grade_on_the_points_scale_carried_by_the_ten_digits():
    # pass, fail, and nothing gradable, on a 50-point assignment
    for graded, expected in [(report("m.keras", "pass", 72.0, 0.72), 36.0),
                             (report("m.keras", "fail", 41.0, 0.41), 20.5)]:
        data = gradescope.results(upload(graded), SETTINGS)
        assert data["score"] == expected
        digits = digit_tests(data)
        assert [t["max_score"] for t in digits] == [5.0] * 10
        assert sum(t["score"] for t in digits) == pytest.approx(expected)
        assert [t["status"] for t in data["tests"][:3]] == ["passed"] * 3
        assert data["output"].startswith(f"{graded.status.upper()}: grade {graded.grade:.2f}")
        assert "Test set: private-test.zip (20 images, SHA-256 " + "ab" * 32 in data["output"]
    assert "What to improve: the digits with the lowest IoU" in gradescope.results(
        upload(report("m.keras", "fail", 41.0, 0.41)), SETTINGS)["output"]
    for refused, failed in [("the model's output shape is (64, 84, 10); it must be", 1),
                            (gradescope.limits.memory_message(4 * GIB), 2),
                            ("m.keras contains a Lambda layer. Submissions may use built-in", 0)]:
        data = gradescope.results(upload(report("m.keras", "invalid", message=refused)), SETTINGS)
        assert data["score"] == 0.0 and "NOT GRADED" in data["output"] and refused in data["output"]
        assert gradescope.UPLOAD_HINT in data["output"]
        checks = data["tests"][:3]
        assert [t["status"] for t in checks] == ["passed"] * failed + ["failed"] * (3 - failed)
        assert checks[failed]["output"] == refused
        assert all(t["score"] == 0 for t in digit_tests(data))
    # A practice test set (scikit-learn's digits) is named as one wherever the test set is.
    practice = gradescope.Upload(test_set={**TEST_SET, "practice": "not M2NIST's exam"})
    assert "(a PRACTICE set (not M2NIST's exam), 20 images" in gradescope.which_test_set(practice)


def test_per_digit_results_and_the_grade_can_wait_until_grades_are_published():
    settings = {**SETTINGS, "digit_visibility": "after_published", "visibility": "visible"}
    two = upload(report("a.keras", "fail", 30.0, 0.3), report("b.keras", "pass", 65.0, 0.65))
    data = gradescope.results(two, settings)
    assert data["visibility"] == "visible" and data["score"] == 32.5
    hidden = [t for t in data["tests"] if t["visibility"] == "after_published"]
    assert len(hidden) == 12  # ten digits, the grade, and the other file's grade
    assert all(t["visibility"] == "visible" for t in data["tests"][:3])
    assert "65.00" not in data["output"] and "30.00" not in data["output"]
    assert "will be shown when your instructor publishes" in data["output"]
    # A refused file's reason is never held back: it says what to fix.
    refused = gradescope.results(upload(report("a.keras", "invalid", message="corrupt")), settings)
    assert "corrupt" in refused["output"] and refused["tests"][0]["visibility"] == "visible"


# ---------------------------------------------------------------------------------------
# run_autograder, end to end on a scratch /autograder

@pytest.fixture(scope="module")
def graded_trained(bundle, tmp_path_factory):
    from grading_models import GOOD_MODEL

    return run_autograder(bundle, tmp_path_factory.mktemp("trained"), {"model.keras": GOOD_MODEL})


@pytest.mark.slow
def test_a_trained_model_gets_its_grade_as_score_with_feedback_and_the_test_set(graded_trained, private_set):
    results, log = graded_trained
    (counted,) = results["extra_data"]["files"]
    assert counted["file"] == "model.keras" and counted["counted"]
    grade = counted["grade"]
    assert results["score"] == round(grade, 2)  # 100 points: the score is the grade
    assert sum(t["score"] for t in digit_tests(results)) == pytest.approx(grade, abs=0.01)
    verdict = "PASS" if grade > 60 else "FAIL"
    assert counted["status"] == verdict.lower()
    assert results["output"].startswith(f"{verdict}: grade {grade:.2f} (pass above 60)")
    sha256 = testset.download.sha256_file(private_set)
    assert f"Test set: private-test.zip (20 images, SHA-256 {sha256})." in results["output"]
    assert results["extra_data"]["test_set"]["sha256"] == sha256
    assert [t["status"] for t in results["tests"][:3]] == ["passed"] * 3
    assert results["tests"][2]["name"] == "Runs on the 20 test images within 600 s and 4 GiB of memory"
    assert results["stdout_visibility"] == "hidden"
    # Graded by the bundle's own copy of the grader, not this checkout's.
    assert re.search(r"Grader code: \S+/root/source/course/grader", log), log


@pytest.mark.slow
def test_several_files_are_graded_as_one_students_the_best_counting_within_bounded_memory(
        bundle, graded_trained, tmp_path):
    import keras
    from keras import layers

    import bomb_files
    from grading_models import GOOD_MODEL, small_fcn

    small_fcn(seed=1).save(tmp_path / "untrained.keras")
    inputs = keras.Input((64, 84, 1))
    keras.Model(inputs, layers.Conv2D(10, 1, activation="softmax")(inputs)).save(tmp_path / "ten.keras")
    plain = bomb_files.two_layer_model(tmp_path / "plain.keras")
    # 3.8 GiB declared in a file of kilobytes: Keras would allocate it all as it loads.
    bomb = bomb_files.weights_bomb(plain, tmp_path / "bomb.keras", int(3.8 * GIB))
    assert bomb.stat().st_size < 1 << 20
    results, log = run_autograder(bundle, tmp_path / "run", {
        "a/untrained.keras": tmp_path / "untrained.keras", "b/trained.keras": GOOD_MODEL,
        "c-wrong-shape.keras": tmp_path / "ten.keras", "d-bomb.keras": bomb,
        "notes.txt": b"my notes"})
    files = {f["file"]: f for f in results["extra_data"]["files"]}
    assert list(files) == ["a/untrained.keras", "b/trained.keras", "c-wrong-shape.keras", "d-bomb.keras"]
    assert [f for f in files if files[f]["counted"]] == ["b/trained.keras"]
    assert results["score"] == graded_trained[0]["score"]  # the same file, the same test set
    assert files["a/untrained.keras"]["status"] in ("fail", "pass")
    assert files["a/untrained.keras"]["grade"] < files["b/trained.keras"]["grade"]
    assert files["c-wrong-shape.keras"]["status"] == "invalid"
    assert "output shape is (64, 84, 10)" in files["c-wrong-shape.keras"]["message"]
    bomb_message = files["d-bomb.keras"]["message"]
    assert "the limit is" in bomb_message and "nothing from the file was loaded" in bomb_message
    assert results["extra_data"]["other_files"] == ["notes.txt"]
    # Each file named in what the learner reads, and the one that counts marked.
    output = results["output"]
    assert "You handed in 4 .keras files; each was graded and the best grade counts:" in output
    assert "b/trained.keras: grade" in output and "<- counts" in output
    for name in files:
        assert name in output
    others = [t for t in results["tests"] if t["name"].startswith("Also handed in")]
    assert len(others) == 3
    # Refused by the grading worker (Keras reads the sizes) with its memory far below what
    # the bomb declares: the worker's peak, TensorFlow included.
    assert not files["d-bomb.keras"]["refused_before_loading"]
    print(f"grading worker's peak RSS: {files['d-bomb.keras']['peak_rss_mib']:.0f} MiB")
    assert 0 < files["d-bomb.keras"]["peak_rss_mib"] < 2048


def lambda_model(path, sentinel):
    import keras
    from keras import layers

    os.environ["LAMBDA_SENTINEL"] = str(sentinel)
    inputs = keras.Input((64, 84, 1))
    x = layers.Lambda(
        lambda t: (open(__import__("os").environ["LAMBDA_SENTINEL"], "w").close(), t)[1])(
        layers.Conv2D(11, 1)(inputs))
    keras.Model(inputs, layers.Activation("softmax")(x)).save(path)
    sentinel.unlink(missing_ok=True)  # building the model called the lambda once
    return path


def zipped_model(path):
    from grading_models import GOOD_MODEL

    with zipfile.ZipFile(path, "w") as archive:
        archive.write(GOOD_MODEL, "model.keras")
    return path


def zip_bomb(path):
    import bomb_files

    return bomb_files.zip_bomb(bomb_files.two_layer_model(path.with_name("plain.keras")), path, mib=3900)


@pytest.mark.parametrize("kind, files, said", [
    ("none", {}, "Your submission is empty."),
    ("notebook", {"assignment.ipynb": b"{}"}, "assignment.ipynb is a notebook"),
    ("zip", {"model.zip": zipped_model},
     "model.zip is a zip archive (it holds model.keras): upload the .keras file itself"),
    ("corrupt", {"model.keras": b"PK\x03\x04 not really a zip"}, "is not a readable .keras archive"),
    ("lambda", {"model.keras": lambda_model}, "Lambda"),
    ("zip bomb", {"model.keras": zip_bomb}, "uncompressed"),
])
def test_no_model_a_zip_or_a_hostile_file_scores_0_and_says_what_to_upload(
        kind, files, said, bundle, tmp_path):
    sentinel = tmp_path / "lambda-ran"
    made = {}
    for name, content in files.items():
        if callable(content):
            target = tmp_path / "made" / name
            target.parent.mkdir(exist_ok=True)
            content = content(target, sentinel) if content is lambda_model else content(target)
        made[name] = content
    start = time.monotonic()
    results, log = run_autograder(bundle, tmp_path, made)
    assert results["score"] == 0.0
    assert said in results["output"], results["output"]
    assert gradescope.UPLOAD_HINT in results["output"]
    assert results["output"].startswith("NOT GRADED: score 0")
    assert results["tests"][0]["status"] == "failed" and said in results["tests"][0]["output"]
    assert not sentinel.exists()  # the Lambda's code never ran
    # Refused before any grading worker started: nothing of the file was loaded.
    assert all(f["refused_before_loading"] for f in results["extra_data"]["files"])
    assert time.monotonic() - start < 60


def test_when_the_grader_itself_fails_the_learner_still_gets_results_saying_so(bundle, tmp_path):
    from grading_models import GOOD_MODEL

    def tamper(root):
        test_set = root / "source" / "test-set" / "private-test.zip"
        test_set.write_bytes(test_set.read_bytes() + b"\0")

    results, log = run_autograder(bundle, tmp_path / "a", {"model.keras": GOOD_MODEL}, edit=tamper)
    assert results["score"] == 0.0 and "not a verdict on your file" in results["output"]
    assert "Rebuild the bundle" in results["output"]
    # No environment at all (setup.sh never ran): run_autograder's own results.json.
    results, log = run_autograder(bundle, tmp_path / "b", {"model.keras": GOOD_MODEL},
                                  venv=str(tmp_path / "no-venv"))
    assert results["score"] == 0.0 and "The autograder could not grade" in results["output"]
    assert "without writing" in log


# ---------------------------------------------------------------------------------------
# setup.sh for real (it installs TensorFlow: minutes, and the package registry)

@pytest.mark.long  # installs TensorFlow into a fresh virtual environment
def test_setup_sh_builds_an_environment_that_grades_a_submission(bundle, tmp_path):
    from grading_models import GOOD_MODEL

    root = tmp_path / "root"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root / "source")
    venv = tmp_path / "grader-venv"
    # This machine's Python 3.11 (the one the checkout's environment was made from).
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "GRADER_VENV": str(venv),
           "GRADER_PYTHON": getattr(sys, "_base_executable", sys.executable)}
    env.pop("PYTHONPATH", None)
    start = time.monotonic()
    setup = subprocess.run(["bash", str(root / "source" / "setup.sh")], capture_output=True,
                           text=True, env=env, cwd=root, timeout=1800)
    setup_s = time.monotonic() - start
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    assert "grader ready: Keras 3.15.1" in setup.stdout
    freeze = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze"],
                            capture_output=True, text=True, env=env).stdout.lower()
    for line in (root / "source" / gradescope.REQUIREMENTS).read_text().splitlines():
        if line and not line.startswith("#"):
            assert line.lower().replace("_", "-") in freeze.replace("_", "-"), line
    assert "jupyterlab" not in freeze and "notebook==" not in freeze and "tensorflow==" not in freeze
    shutil.rmtree(root / "source")  # run_autograder runs from a fresh copy, as on Gradescope
    start = time.monotonic()
    results, log = run_autograder(bundle, tmp_path, {"model.keras": GOOD_MODEL}, venv=str(venv))
    grade_s = time.monotonic() - start
    print(f"setup.sh: {setup_s:.0f} s; run_autograder: {grade_s:.0f} s; score {results['score']}")
    assert results["extra_data"]["files"][0]["status"] in ("pass", "fail")
    assert results["score"] == round(results["extra_data"]["files"][0]["grade"], 2) > 0
