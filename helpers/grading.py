"""Grade M2NIST segmentation models: the assignment's rules, for learners and instructors.

    python -m helpers.grading model.keras          # one submission
    python -m helpers.grading submissions/         # every file in a folder, plus a CSV
    python -m helpers.grading model.keras --url URL  # the test split from another M2NIST archive

A submission is a ``.keras`` file. It is loaded with Keras ``safe_mode=True`` and no
custom objects, after a scan of its configuration: a model carrying serialized Python
code (a ``Lambda`` layer, a lambda activation), a function other than Keras' own losses,
metrics and activations, or a class from outside the Keras modules a plain model's
configuration uses is rejected without running any of it. The model must map (64, 84, 1)
images scaled to [-1, 1] to (64, 84, 11) per-pixel class scores. It is scored on the
course's fixed M2NIST test split (from ``--url``, else ``COURSE_M2NIST_URL``, else the
official archive) with the course's IoU (``helpers.metrics``): grade = 10 x the sum of the
ten digit IoUs; pass: grade above 60, decided on the grade rounded to 2 decimals as printed.

Exit codes for one submission: 0 pass, 1 fail, 2 invalid submission. For a folder: 0
once every file has a verdict (they are in the CSV), 2 if the folder holds no files; each
file is graded in a child process with a time limit, so one that crashes or hangs the
grader costs only its own verdict. Either way, 3 when the grader cannot grade at all: the
test data cannot be had, or the installed Keras is older than 3.11 (its safe_mode can be
bypassed, so no submission is loaded).
Taught in notebook 4.
"""

import argparse
import csv
import functools
import io
import json
import os
import re
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from helpers import config, m2nist, metrics
from helpers.download import DataError

PASS_MARK = 60.0
DIGITS = tuple(range(10))
INPUT_SHAPE = (*m2nist.IMAGE_SHAPE, 1)
OUTPUT_SHAPE = (*m2nist.IMAGE_SHAPE, m2nist.N_CLASSES)
EXIT = {"pass": 0, "fail": 1, "invalid": 2}
EXIT_CANNOT_GRADE = 3  # the grader's set-up (test data, Keras version), not the submission
MIN_KERAS = (3, 11)  # older Keras has safe_mode bypasses: CVE-2025-1550, -8747, -9906
MAX_CONFIG_BYTES = 16 << 20  # a course model's config.json is tens of kilobytes
TIMEOUT = 600  # seconds one submission may take in folder mode
_OUR_FILES = {"grades.csv", "grades.json"}
# The modules a plain model's config.json names, found by saving typical course models
# (Sequential, functional, nested; the course's layers with initializers, regularizers,
# constraints, dtype policies; compiled with optimizers, schedules, losses and metrics).
# Any other module, e.g. keras.config, keras.utils, keras.saving or keras.ops, can name a
# function that Keras' own block list has missed before (the CVEs above).
_CONFIG_MODULES = frozenset({
    "keras.layers", "keras.initializers", "keras.regularizers", "keras.constraints",
    "keras.optimizers", "keras.optimizers.schedules", "keras.losses", "keras.metrics",
    "keras.dtype_policies", "keras.src.models.functional",
    # Tensor operations in a functional model (`up + skip`, `x[..., :8]`, `keras.ops.relu(x)`)
    # are saved as operation classes from these modules. Their configurations hold only
    # plain arguments; a function passed to one would appear as a "function", scanned below.
    "keras.src.ops.numpy", "keras.src.ops.nn", "keras.src.ops.math", "keras.src.ops.image",
    "keras.src.ops.core", "keras.src.ops.linalg"})
_TOP_LEVEL_CLASSES = frozenset({"Functional", "Sequential", "Model", "DTypePolicy",
                                "FloatDTypePolicy"})  # written with module "keras"
# Keras' encodings of values (tensors, arrays, slices): they name no class to import.
_VALUE_MARKERS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__",
                            "__ellipsis__", "__slice__"})


class InvalidSubmission(ValueError):
    """A submission that cannot be graded, with the reason in words."""


class CannotGrade(RuntimeError):
    """The grader cannot grade anything here; the message, from its "Cannot grade" line, says why."""


def grade(scores):
    """Return 10 x the sum of the ten digit IoUs of a ``metrics.Scores`` (a digit never seen counts 0)."""
    return float(10 * np.nansum(np.asarray(scores.iou)[list(DIGITS)]))


def passed(grade_value):
    """Return True when a grade, rounded to 2 decimals, is above the pass mark."""
    # Decided on the printed value, so that "Grade: 60.00" can never read PASS.
    return round(grade_value, 2) > PASS_MARK


def check_keras_version():
    """Raise CannotGrade unless the installed Keras is one whose safe_mode can be trusted."""
    import keras

    version = str(getattr(keras, "__version__", ""))
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or tuple(map(int, found.groups())) < MIN_KERAS:
        floor = ".".join(map(str, MIN_KERAS))
        raise CannotGrade(
            f"Cannot grade: Keras {version or '(version unknown)'} is installed, and before "
            f"{floor} a model file can run code even when loaded with safe_mode "
            f"(CVE-2025-1550, CVE-2025-8747, CVE-2025-9906). No submission was loaded.\n"
            f"Upgrade it: pip install 'keras>={floor}'")


@functools.cache
def _keras_function_names():
    """Return the names of Keras' own activation, loss and metric functions."""
    import inspect

    import keras

    names = set()
    for family in (keras.activations, keras.losses, keras.metrics):
        names.update(name for name in dir(family)
                     if not name.startswith("_") and inspect.isfunction(getattr(family, name)))
    # These look up or build other objects by name: not a loss, metric or activation.
    return frozenset(names - {"get", "serialize", "deserialize"})


def _plain_keras_class(module, class_name):
    # A dotted or lower-case name would let Keras resolve a function (keras.utils.get_file)
    # through an allowed module.
    return (isinstance(class_name, str) and class_name.isidentifier() and class_name[0].isupper()
            and (module in _CONFIG_MODULES
                 or (module == "keras" and class_name in _TOP_LEVEL_CLASSES)))


def _scan_config(node, problems, top=True):
    """Collect serialized code, foreign functions and foreign classes anywhere in a model configuration."""
    if isinstance(node, dict):
        class_name = node.get("class_name")
        module = node.get("module")
        if class_name in ("__lambda__", "__python_function__"):
            problems.add("serialized Python code (a lambda or function)")
        elif class_name in ("Lambda", "TFSMLayer"):
            problems.add(f"a {class_name} layer")
        elif class_name == "function":
            name = node.get("config")
            # Keras writes its own functions (a loss or metric given to compile) by name under
            # "builtins"; under any other module the name can reach any function there.
            if not (module == "builtins" and isinstance(name, str)
                    and name in _keras_function_names()):
                problems.add(f"the function {name} from module {module}")
        elif ("class_name" in node and class_name not in _VALUE_MARKERS
              and not _plain_keras_class(module, class_name)):
            problems.add(f"the class {class_name} from module {module}")
        registered = node.get("registered_name")
        if isinstance(registered, str) and registered != class_name:
            problems.add(f"the registered custom object {registered}")
        for key, value in node.items():
            # Loaded with compile=False, Keras skips the model's own compile_config, but it
            # still compiles nested models from theirs: scan those.
            if not (top and key == "compile_config"):
                _scan_config(value, problems, top=False)
    elif isinstance(node, list):
        for value in node:
            _scan_config(value, problems, top=False)


def load_submission(path):
    """Load a submitted ``.keras`` model safely; raise InvalidSubmission saying why it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise InvalidSubmission(f"{path} is not a file")
    if path.suffix != ".keras":
        raise InvalidSubmission(f"{path.name} is not a .keras file; save the model with "
                                "model.save('model.keras')")
    try:
        with zipfile.ZipFile(path) as zf:
            if zf.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                raise InvalidSubmission(f"{path.name} has a model configuration over "
                                        f"{MAX_CONFIG_BYTES >> 20} MB; that is not a course model")
            configuration = json.loads(zf.read("config.json"))
        if not isinstance(configuration, dict):
            raise ValueError("config.json does not describe a model")
        problems = set()
        _scan_config(configuration, problems)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, RecursionError) as e:
        raise InvalidSubmission(f"{path.name} is not a readable .keras archive (corrupt or "
                                f"truncated?): {type(e).__name__}: {str(e)[:200]}") from e
    if problems:
        raise InvalidSubmission(
            f"{path.name} contains {', '.join(sorted(problems))}. Submissions may use built-in "
            "Keras layers only; nothing from the file was run. Replace the custom part with "
            "built-in layers and save again.")
    check_keras_version()
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types; all mean "cannot load it safely"
        reason = " ".join(str(e).split())[:400] or type(e).__name__
        raise InvalidSubmission(f"{path.name} cannot be loaded safely: {reason}") from e
    check_model_shapes(model)
    return model


def _shape(tensor):
    return tuple(None if d is None else int(d) for d in tensor.shape)


def _fits(got, want):
    return len(got) == len(want) and all(g is None or g == w for g, w in zip(got, want))


def check_model_shapes(model):
    """Raise InvalidSubmission unless the model maps (64, 84, 1) images to (64, 84, 11) scores."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InvalidSubmission(f"the model has {len(model.inputs)} inputs and "
                                f"{len(model.outputs)} outputs; it must have one of each")
    got_in, got_out = _shape(model.inputs[0])[1:], _shape(model.outputs[0])[1:]
    # None (any size) is fine where the course's size fits: a fully convolutional model.
    if not _fits(got_in, INPUT_SHAPE):
        raise InvalidSubmission(f"the model's input shape is {got_in}; it must be {INPUT_SHAPE} "
                                "(64 x 84 grayscale images with a channel axis)")
    if not _fits(got_out, OUTPUT_SHAPE):
        raise InvalidSubmission(f"the model's output shape is {got_out}; it must be {OUTPUT_SHAPE} "
                                "(one score per class - 10 digits and background - per pixel)")


@dataclass
class Report:
    """The verdict on one submission."""

    submission: str
    status: str  # "pass", "fail" or "invalid"
    grade: float | None = None
    pass_mark: float = PASS_MARK
    iou: dict = field(default_factory=dict)
    dice: dict = field(default_factory=dict)
    message: str = ""
    test_split: str = ""  # which data it was graded on

    def text(self):
        """Return the report as lines a person reads."""
        lines = [f"Submission: {self.submission}"]
        if self.status == "invalid":
            lines.append(f"INVALID: {self.message}")
            return "\n".join(lines)
        lines.append(f"{'digit':<6} {'IoU':>6} {'Dice':>6}")
        for digit in DIGITS:
            lines.append(f"{digit:<6} {self.iou[str(digit)]:6.3f} {self.dice[str(digit)]:6.3f}")
        lines.append(f"Grade: {self.grade:.2f} (10 x the sum of the digit IoUs; pass above "
                     f"{self.pass_mark:.0f}): {self.status.upper()}")
        return "\n".join(lines)


def fixed_test_split(quick=None, url=None, root=None):
    """Return the fixed M2NIST test split (images, labels) that every submission is graded on."""
    return m2nist.load_m2nist(url=url, quick=quick, root=root)["test"]


def score_model(model, images, labels):
    """Score a model's predictions on uint8 images against label maps; return ``metrics.Scores``."""
    scaled = m2nist.scale_images(images)
    # metrics.predict_labels drops the class axis, and with it the check of 11 scores per
    # pixel: a model with 10 would never predict background yet be scored. One image shows it.
    probe = model.predict(scaled[:1], verbose=0)
    if probe.shape[1:] != OUTPUT_SHAPE:
        raise InvalidSubmission(f"on the test images the model's output shape is "
                                f"{probe.shape[1:]}; it must be {OUTPUT_SHAPE}")
    predicted = metrics.predict_labels(model, scaled)
    return metrics.segmentation_scores(np.asarray(labels), predicted, m2nist.N_CLASSES)


def report_for_scores(name, scores):
    """Turn the scores of one model into its graded report."""
    value = grade(scores)
    return Report(name, "pass" if passed(value) else "fail", round(value, 2),
                  iou={str(d): float(np.nan_to_num(scores.iou[d])) for d in DIGITS},
                  dice={str(d): float(np.nan_to_num(scores.dice[d])) for d in DIGITS})


def grade_file(path, test_data, name=None):
    """Grade one submitted file against ``test_data`` = (images, labels); return its Report."""
    name = name or str(path)
    try:
        model = load_submission(path)
        scores = score_model(model, *test_data)
    except CannotGrade:
        raise  # the grader's set-up, not this submission: no verdict
    except InvalidSubmission as e:
        return Report(name, "invalid", message=str(e))
    except Exception as e:  # a model that loads but cannot run, e.g. mismatched weights
        return Report(name, "invalid", message=f"the model failed to run on the test images: "
                                               f"{type(e).__name__}: {str(e)[:300]}")
    return report_for_scores(name, scores)


def submissions_in(folder):
    """List the files of a submissions folder (recursively, sorted, skipping hidden and our outputs)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and p.name not in _OUR_FILES and not p.name.endswith(".grade.json"))


def write_csv(reports, path):
    """Write one row per report: status, grade, the ten IoUs and Dice scores, the message."""
    columns = (["submission", "status", "grade"] + [f"iou_{d}" for d in DIGITS]
               + [f"dice_{d}" for d in DIGITS] + ["message"])
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(columns)
    for r in reports:
        writer.writerow([r.submission, r.status, "" if r.grade is None else f"{r.grade:.2f}"]
                        + [f"{r.iou[str(d)]:.4f}" if r.iou else "" for d in DIGITS]
                        + [f"{r.dice[str(d)]:.4f}" if r.dice else "" for d in DIGITS]
                        + [r.message])
    return _write(path, rows.getvalue())


def _cannot_grade_message(done):
    """Return a child's whole "Cannot grade" message, from that line to its last detail."""
    lines = (done.stdout or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Cannot grade")), None)
    if start is not None:
        return "\n".join(lines[start:]).rstrip()
    detail = ((done.stdout or "").strip() or (done.stderr or "").strip())[-2000:]
    return (f"Cannot grade: the grader's process could not grade (exit code {done.returncode})"
            + (f":\n{detail}" if detail else "."))


def grade_isolated(path, name, quick, timeout=TIMEOUT, url=None):
    """Grade one file in a child process, so a submission that crashes or hangs costs only its own verdict."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="grading-") as scratch:
        out = Path(scratch) / "verdict.json"
        command = [sys.executable, "-m", "helpers.grading", str(path), "--json", str(out),
                   "--quick" if quick else "--full"] + (["--url", url] if url else [])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(config.PACKAGE_DIR.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return Report(name, "invalid", message=f"grading took longer than {timeout} s")
        if done.returncode == EXIT_CANNOT_GRADE:
            raise CannotGrade(_cannot_grade_message(done))
        try:
            verdict = json.loads(out.read_text())
        except (OSError, ValueError):
            tail = " ".join((done.stderr or done.stdout).split())[-300:]
            return Report(name, "invalid", message=f"the grader's process died on this file "
                                                   f"(exit code {done.returncode}): {tail}")
    verdict["submission"] = name
    return Report(**verdict)


def _write(path, text):
    try:
        Path(path).write_text(text)
        return True
    except OSError as e:  # e.g. a read-only folder: the verdicts printed above still stand
        print(f"Could not write {path} ({e}); choose another place with --json / --csv")
        return False


def _test_data(quick, url):
    """Return the fixed test split, or raise CannotGrade saying why it cannot be had."""
    check_keras_version()  # first: no download for a grader that would refuse anyway
    try:
        return fixed_test_split(quick=quick, url=url)
    except DataError as e:
        raise CannotGrade(f"Cannot grade: the test data is not available.\n{e}") from e


def main(argv=None):
    """Grade a .keras file or a folder of them; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers.grading",
        description="Grade M2NIST segmentation models (.keras files) on the course's test split.",
        epilog="Pass: grade above 60, decided on the grade rounded to 2 decimals. Exit codes: "
               "0 pass, 1 fail, 2 invalid submission or an empty folder (a folder: 0 once "
               "every file has a verdict), 3 cannot grade at all (no test data, or Keras "
               "older than 3.11).")
    parser.add_argument("target", help="a .keras file, or a folder of submissions")
    parser.add_argument("--json", help="where to write the JSON verdict (default: beside the "
                                       "model as MODEL.grade.json, or FOLDER/grades.json)")
    parser.add_argument("--csv", help="for a folder: where to write the table "
                                      "(default: FOLDER/grades.csv)")
    parser.add_argument("--timeout", type=int, default=TIMEOUT,
                        help=f"for a folder: seconds one submission may take (default {TIMEOUT})")
    parser.add_argument("--url", help="the M2NIST archive the test split comes from, a URL or "
                                      "file:// path (default: COURSE_M2NIST_URL, else the "
                                      "official archive; in quick mode, generated data)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_const", const=True,
                      help="grade on the generated quick-mode data (default: COURSE_QUICK)")
    mode.add_argument("--full", dest="quick", action="store_const", const=False,
                      help="grade on the real M2NIST test split")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    target = Path(args.target)
    if not target.exists():
        parser.error(f"{target} does not exist")
    quick = config.quick_mode() if args.quick is None else args.quick
    files = submissions_in(target) if target.is_dir() else [target]
    if not files:
        print(f"No submissions in {target}.")
        return 2
    try:
        test_data = _test_data(quick, args.url)
    except CannotGrade as e:
        print(e)
        return EXIT_CANNOT_GRADE
    chosen = args.url or config.mirror_url("m2nist")
    source = (f"from {chosen}" if chosen else "generated" if quick else f"from {m2nist.M2NIST_URL}")
    split = (f"M2NIST test split ({source}{', quick mode' if quick else ''}; "
             f"{len(test_data[0])} images)")
    print(f"Grading on the {split}.")

    if not target.is_dir():
        report = grade_file(target, test_data)
        report.test_split = split
        print(report.text())
        out = Path(args.json) if args.json else target.with_name(target.name + ".grade.json")
        if _write(out, json.dumps(asdict(report), indent=1) + "\n"):
            print(f"Verdict written to {out}")
        return EXIT[report.status]

    csv_path = Path(args.csv) if args.csv else target / "grades.csv"
    json_path = Path(args.json) if args.json else target / "grades.json"
    reports = []
    for path in files:
        try:
            report = grade_isolated(path, str(path.relative_to(target)), quick, args.timeout,
                                    url=args.url)
        except CannotGrade as e:
            print(e)
            return EXIT_CANNOT_GRADE
        report.test_split = split
        reports.append(report)
        shown = f"{report.grade:7.2f}" if report.grade is not None else "      -"
        print(f"{report.submission:<40} {report.status.upper():<8}{shown}  {report.message}")
        # Written after every submission: an interrupted run keeps the verdicts so far.
        write_csv(reports, csv_path)
    _write(json_path, json.dumps([asdict(r) for r in reports], indent=1) + "\n")
    counts = {s: sum(r.status == s for r in reports) for s in EXIT}
    print(f"{len(reports)} submissions: {counts['pass']} pass, {counts['fail']} fail, "
          f"{counts['invalid']} invalid. Table: {csv_path}; JSON: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
