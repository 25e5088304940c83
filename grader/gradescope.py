"""Gradescope: the autograder bundle (``python -m grader gradescope``) and what it runs there.

An instructor builds the bundle once from a private test set::

    python -m grader --make-test-set private-test.zip
    python -m grader gradescope --test-set private-test.zip --out autograder.zip

and uploads ``autograder.zip`` as the assignment's autograder. It follows Gradescope's
autograder specification: at its root ``setup.sh`` (run once, as root, when Gradescope builds
the image) and ``run_autograder`` (run for each submission, from ``/autograder``, with the
learner's upload in ``/autograder/submission``; it writes ``/autograder/results/results.json``).
Beside them:

- ``requirements-grader.txt``: the packages the grader needs on a CPU, at the versions pinned
  in the course's ``requirements.txt`` (TensorFlow as ``tensorflow-cpu``, the same release
  without the GPU kernels: a smaller download, and grading never uses a GPU);
- ``grader-settings.json``: the limits, points and visibility chosen when it was built, and the
  test set's name and SHA-256;
- ``test-set/<name>.zip``: the private test set. It stays in ``/autograder/source``, which
  learners never see; results name it and give its SHA-256, never its images;
- ``course/``: this package and the modules of ``helpers`` it imports (the assignment's rule).

``run_autograder`` runs ``python -m grader.gradescope``: the ``.keras`` files of the upload are
graded exactly as a class folder grades one student's files (each in a grading worker under
the time and memory limits, never running a submission's code; the best counts), and
``results.json`` gets the score, the learner's feedback (``output``) and one entry per check
(``tests``). Anything that goes wrong still ends in a ``results.json`` (score 0, saying why).
``AUTOGRADER_ROOT`` stands for ``/autograder`` (for trying the bundle on a machine of one's
own); ``grade_upload`` is what GitHub Classroom's workflow (``grader.classroom``) uses too.
"""

import argparse
import ast
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from helpers import config
from helpers.download import DataError, sha256_file
from grader import identity, limits, scoring, tables, testset, workers
from grader.safety import InvalidSubmission, size_text

TEMPLATES = Path(__file__).resolve().parent / "templates" / "gradescope"
SETTINGS = "grader-settings.json"
REQUIREMENTS = "requirements-grader.txt"
TEST_SET_DIR = "test-set"
CODE_DIR = "course"
# What the grader imports, in its main process and its workers: nothing for notebooks.
GRADER_PACKAGES = ("tensorflow", "keras", "h5py", "numpy", "pillow", "tqdm")
# Installed under another name on Gradescope: the CPU-only build of the same release.
CPU_BUILDS = {"tensorflow": "tensorflow-cpu"}
VISIBILITY = ("hidden", "after_due_date", "after_published", "visible")
STATUSES = ("passed", "failed")
FORMATS = ("text", "simple_format", "html", "md", "ansi")
MAX_FILES = 5  # .keras files graded from one upload; more would risk Gradescope's own timeout
POINTS = 100.0
DIGIT_PASS = scoring.PASS_MARK / 100  # a digit's IoU at the pass mark's share (0.6)
UPLOAD_HINT = ("What to upload: the one file that model.save('model.keras') writes in the "
               "assignment notebook. Check it on your machine first with "
               "python -m grader model.keras, then upload that .keras file as it is.")

# Gradescope's results.json, as its autograder specification documents it: each field's
# JSON type (what Python's json module reads it as). ``check_results`` holds results to it.
RESULTS_FIELDS = {"score": (int, float), "execution_time": (int, float), "output": str,
                  "output_format": str, "test_output_format": str, "test_name_format": str,
                  "visibility": str, "stdout_visibility": str, "extra_data": dict,
                  "tests": list, "leaderboard": list}
TEST_FIELDS = {"score": (int, float), "max_score": (int, float), "status": str, "name": str,
               "name_format": str, "number": str, "output": str, "output_format": str,
               "tags": list, "visibility": str, "extra_data": dict}
# What this grader always writes, in each test too.
WRITTEN = ("score", "execution_time", "output", "output_format", "stdout_visibility",
           "extra_data", "tests")
WRITTEN_TEST = ("name", "score", "max_score", "status", "output", "visibility")


# ---------------------------------------------------------------------------------------
# One learner's upload, graded (Gradescope's submission, or a Classroom repository)

@dataclass
class Upload:
    """What one learner handed in, and the verdicts on its ``.keras`` files."""

    reports: list = field(default_factory=list)  # Report per graded .keras file, name order
    counted: int | None = None  # index of the report that counts (None: no .keras file)
    not_graded: list = field(default_factory=list)  # .keras files past max_files
    other_files: list = field(default_factory=list)  # every other file, not graded
    problem: str = ""  # with no .keras file: what was found, and what to upload
    test_set: dict = field(default_factory=dict)  # TestSet.identity()
    limits: dict = field(default_factory=dict)  # seconds and GiB per file

    @property
    def report(self):
        """The report that counts, or None."""
        return None if self.counted is None else self.reports[self.counted]

    def as_dict(self):
        return {**asdict(self), "reports": [asdict(r) for r in self.reports]}

    @classmethod
    def from_dict(cls, data):
        data = dict(data)
        data["reports"] = [scoring.Report(**r) for r in data.get("reports", [])]
        return cls(**data)


def load_test_set(url=None, quick=False, data_dir=None):
    """Return the TestSet at ``url`` (None: the course's public split), else CannotGrade."""
    try:
        return testset.load_test_set(quick, url, root=data_dir)
    except DataError as e:
        raise scoring.CannotGrade(f"Cannot grade: the test data is not available.\n{e}") from e


def _zip_contents(path):
    """Return the names in a zip archive (its directory only, nothing extracted), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [i.filename for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def no_model_message(folder, names, hint=UPLOAD_HINT):
    """Say why an upload without a .keras file was not graded, and (``hint``) what to hand in."""
    lines = ["No .keras model file was found in your submission, so nothing was graded."]
    for name in names:
        lower = name.lower()
        if lower.endswith(".zip"):
            inside = _zip_contents(Path(folder) / name)
            models = [n for n in inside or [] if n.lower().endswith(".keras")]
            held = (f" (it holds {', '.join(models[:3])})" if models else
                    " (it holds no .keras file)" if inside is not None else "")
            lines.append(f"{name} is a zip archive{held}: upload the .keras file itself, not an "
                         "archive of it. A .keras file is already compressed.")
        elif lower.endswith((".h5", ".hdf5")):
            lines.append(f"{name} is an HDF5 file (Keras 2's format, or weights alone): the "
                         "grader takes a whole model in Keras 3's .keras format.")
        elif PurePosixPath(name).name == "saved_model.pb" or lower.endswith(".pb"):
            lines.append(f"{name} is part of a TensorFlow SavedModel: the grader takes a Keras "
                         "3 .keras file.")
        elif lower.endswith(".ipynb"):
            lines.append(f"{name} is a notebook: the grader grades the model it saves, not the "
                         "notebook.")
    if names:
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        lines.append(f"Your submission holds: {shown}.")
    else:
        lines.append("Your submission is empty.")
    lines.append(hint)
    return "\n".join(lines)


def grade_upload(folder, test_set, *, timeout=workers.TIMEOUT,
                 memory_limit_gib=limits.MEMORY_LIMIT_GB, max_files=MAX_FILES, scratch=None,
                 hint=UPLOAD_HINT):
    """Grade the .keras files under ``folder`` as a class folder grades one student's files.

    Each file is checked, then graded in a worker under ``timeout`` seconds and
    ``memory_limit_gib`` GiB (0: none), never running its code; the best grade counts.
    ``hint`` says what to hand in, where nothing can be graded. Returns an Upload. Raises
    scoring.CannotGrade when nothing can be graded at all (the set-up, not the upload: Keras
    too old, a worker that cannot start).
    """
    folder = Path(folder)
    files = tables.submissions_in(folder) if folder.is_dir() else []
    relative = [identity.shown(p.relative_to(folder)) for p in files]
    models = [(p, name) for p, name in zip(files, relative) if p.suffix.lower() == ".keras"]
    upload = Upload(test_set=test_set.identity(),
                    limits={"seconds": timeout, "memory_gib": memory_limit_gib},
                    other_files=[name for p, name in zip(files, relative)
                                 if p.suffix.lower() != ".keras"])
    upload.not_graded = [name for _, name in models[max_files:]]
    models = models[:max_files]
    if not models:
        upload.problem = no_model_message(folder, upload.other_files, hint)
        return upload
    scoring.check_keras_version(scoring.installed_keras_version())  # before any file is read
    reports = [None] * len(models)
    tasks = []
    for i, (path, name) in enumerate(models):
        start = time.perf_counter()
        try:
            scoring.check_before_loading(path)  # no Keras needed: refused before any worker
            tasks.append(workers.Task(i, path, name))
        except InvalidSubmission as e:
            reports[i] = scoring.Report(name, "invalid", message=str(e), resources={
                "seconds": round(time.perf_counter() - start, 3), "refused_before_loading": True})
    if tasks:
        own = scratch is None
        scratch = Path(tempfile.mkdtemp(prefix="grading-") if own else scratch)
        try:
            pool = workers.Pool(1, test_set.save(scratch / "test-set.npz"),
                                int(memory_limit_gib * 2**30), timeout, scratch)
            pool.run(tasks, lambda task, report: reports.__setitem__(task.index, report))
        finally:
            if own:
                shutil.rmtree(scratch, ignore_errors=True)
    for report in reports:
        report.test_split, report.test_set = test_set.description(), test_set.identity()
    upload.reports = reports
    upload.counted = identity.best(reports)
    return upload


# ---------------------------------------------------------------------------------------
# results.json

def failed_check(report):
    """Return which check a report's file failed: "file", "shape", "run", or None (graded)."""
    if report is None:
        return "file"
    if report.status != "invalid":
        return None
    message = report.message
    if re.search(r"output shape is|input shape is|inputs and \d+ outputs", message):
        return "shape"
    if (re.search(r"ran out of (its )?memory|took longer than|process died|process was killed|"
                  r"failed to run on the test images", message)):
        return "run"
    return "file"


def _score(report, points):
    if report is None or report.status == "invalid" or report.grade is None:
        return 0.0
    return round(report.grade * points / 100, 2)


def _limits_text(upload):
    memory = upload.limits.get("memory_gib") or 0
    memory = f"{size_text(int(memory * 2**30))} of memory" if memory else "no memory limit"
    return f"{upload.limits.get('seconds', workers.TIMEOUT):g} s and {memory}"


def which_test_set(upload):
    """Return the line that names the test set: file name, image count, SHA-256."""
    ts = upload.test_set
    if not ts:
        return "Test set: none loaded."
    practice = f"a PRACTICE set ({ts['practice']}), " if ts.get("practice") else ""
    return f"Test set: {ts['name']} ({practice}{ts['images']} images, SHA-256 {ts['sha256']})."


def feedback(upload, points=POINTS, details=True, hint=UPLOAD_HINT):
    """Return the learner's feedback: verdict, grade, score, what to fix, which test set.

    ``details``: whether the grade may be shown now (False where the instructor shows grades
    only once published: then the feedback says the file was graded, and no more).
    """
    report = upload.report
    lines = []
    if report is None:
        lines += [f"NOT GRADED: score 0 of {points:g}.", upload.problem]
    elif report.status == "invalid":
        several = len(upload.reports) > 1
        which = (f"none of your {len(upload.reports)} .keras files could be graded; the first, "
                 f"{report.submission}," if several else f"{report.submission}")
        lines += [f"NOT GRADED: score 0 of {points:g}: {which} was refused.",
                  f"Why: {report.message}", hint]
    elif not details:
        lines += [f"GRADED: {report.submission} is a safe, loadable model of the right shapes "
                  "and was graded. Your grade will be shown when your instructor publishes "
                  "the grades."]
    else:
        verdict = report.status.upper()
        lines += [f"{verdict}: grade {report.grade:.2f} (pass above {scoring.PASS_MARK:.0f}): "
                  f"score {_score(report, points):g} of {points:g}.",
                  "The grade is 10 x the sum of the ten digits' IoU (intersection over union) "
                  f"on the test set. Graded file: {report.submission}."]
        low = sorted(scoring.DIGITS, key=lambda d: report.iou[str(d)])[:3]
        worst = ", ".join(f"{d} ({report.iou[str(d)]:.3f})" for d in low)
        if report.status == "fail":
            lines.append(f"What to improve: the digits with the lowest IoU are {worst}. A model "
                         f"passes when the ten IoUs average above {DIGIT_PASS:.1f}: train longer, "
                         "or weight digit pixels above the background in the loss, then hand "
                         "in the new model.keras.")
        else:
            lines.append(f"Lowest IoUs: {worst}.")
    if len(upload.reports) > 1:
        lines.append(f"You handed in {len(upload.reports)} .keras files; each was graded and the "
                     "best grade counts:")
        for i, r in enumerate(upload.reports):
            mark = " <- counts" if i == upload.counted else ""
            if r.status == "invalid":
                lines.append(f"  {r.submission}: not graded ({r.message[:200]}){mark}")
            elif details:
                lines.append(f"  {r.submission}: grade {r.grade:.2f}, {r.status.upper()}{mark}")
            else:
                lines.append(f"  {r.submission}: graded{mark}")
    if upload.not_graded:
        lines.append(f"Not graded ({len(upload.not_graded)}): only the first "
                     f"{len(upload.reports)} .keras files (in name order) are graded; upload "
                     f"fewer. Left out: {', '.join(upload.not_graded[:10])}.")
    lines.append(which_test_set(upload))
    return "\n".join(line for line in lines if line)


def _test(name, status, output, visibility, score=0.0, max_score=0.0, number=None):
    entry = {"name": name, "score": score, "max_score": max_score, "status": status,
             "output": output, "visibility": visibility, "name_format": "text",
             "output_format": "text"}
    if number is not None:
        entry["number"] = number
    return entry


def tests(upload, points=POINTS, digit_visibility="visible"):
    """Return results.json's ``tests``: three checks of the file that counts, its ten digit IoUs
    (which carry the points), its grade, and a line for every other file handed in."""
    report = upload.report
    failed = failed_check(report)
    order = ["file", "shape", "run"]
    images = upload.test_set.get("images", "the")
    checks = {
        "file": ("Model file: a .keras model with no code and nothing oversized, loaded with "
                 "Keras safe_mode",
                 f"{report.submission if report else 'Your model'}: no code in it, its sizes "
                 "within the limits, loaded with Keras safe_mode."),
        "shape": (f"Model shapes: {scoring.INPUT_SHAPE} images in, {scoring.OUTPUT_SHAPE} class "
                  "scores out",
                  f"Input {scoring.INPUT_SHAPE}, output {scoring.OUTPUT_SHAPE}: as the "
                  "assignment asks."),
        "run": (f"Runs on the {images} test images within {_limits_text(upload)}",
                f"Ran on the {images} test images in "
                f"{(report.resources.get('seconds') or 0) if report else 0:.1f} s.")}
    entries = []
    for n, stage in enumerate(order, 1):
        name, ok = checks[stage]
        if failed is None or order.index(stage) < order.index(failed):
            entries.append(_test(name, "passed", ok, "visible", number=str(n)))
        elif stage == failed:
            why = upload.problem if report is None else report.message
            entries.append(_test(name, "failed", why, "visible", number=str(n)))
        else:
            entries.append(_test(name, "failed", "Not checked: the file failed the check above.",
                                 "visible", number=str(n)))
    share = points / len(scoring.DIGITS)
    for digit in scoring.DIGITS:
        name = f"IoU of digit {digit} ({share:g} points x the IoU)"
        if failed is None:
            iou = report.iou[str(digit)]
            entries.append(_test(
                name, "passed" if iou > DIGIT_PASS else "failed",
                f"IoU {iou:.3f}, Dice {report.dice[str(digit)]:.3f} "
                f"({'above' if iou > DIGIT_PASS else 'not above'} {DIGIT_PASS:.1f}, the pass "
                "mark's share).", digit_visibility, round(iou * share, 4), share,
                number=f"4.{digit}"))
        else:
            entries.append(_test(name, "failed", "Not scored: no file could be graded.",
                                 digit_visibility, 0.0, share, number=f"4.{digit}"))
    grade_name = f"Grade: 10 x the sum of the digit IoUs (pass above {scoring.PASS_MARK:.0f})"
    if failed is None:
        entries.append(_test(grade_name, "passed" if report.status == "pass" else "failed",
                             report.text(), digit_visibility, number="5"))
    else:
        entries.append(_test(grade_name, "failed", "No grade: no file could be graded.",
                             "visible", number="5"))
    others = [(i, r) for i, r in enumerate(upload.reports) if i != upload.counted]
    for k, (i, r) in enumerate(others, 1):
        graded = r.status != "invalid"
        entries.append(_test(
            f"Also handed in: {r.submission} (not counted: the best grade counts)",
            "passed" if r.status == "pass" else "failed",
            r.text() if graded else f"Not graded: {r.message}",
            digit_visibility if graded else "visible", number=f"6.{k}"))
    return entries


def results(upload, settings, seconds=0.0):
    """Return results.json for ``upload`` under the bundle's ``settings``."""
    points = float(settings.get("points", POINTS))
    digit_visibility = settings.get("digit_visibility", "visible")
    data = {
        "score": _score(upload.report, points),
        "execution_time": int(math.ceil(seconds)),
        "output": feedback(upload, points, details=digit_visibility == "visible"),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        # The log (/autograder/results/stdout) names paths: for instructors only.
        "stdout_visibility": "hidden",
        "extra_data": {
            "test_set": upload.test_set,
            "files": [{"file": r.submission, "status": r.status, "grade": r.grade,
                       "counted": i == upload.counted, "message": r.message,
                       "seconds": r.resources.get("seconds"),
                       "peak_rss_mib": r.resources.get("peak_rss_mib"),
                       "refused_before_loading": bool(r.resources.get("refused_before_loading"))}
                      for i, r in enumerate(upload.reports)],
            "not_graded": upload.not_graded, "other_files": upload.other_files[:50],
            "limits": upload.limits, "points": points},
        "tests": tests(upload, points, digit_visibility),
    }
    if settings.get("visibility"):
        data["visibility"] = settings["visibility"]
    return data


def error_results(message, settings=None, seconds=0.0):
    """Return results.json for a submission that could not be graded through no fault of its own."""
    output = ("NOT GRADED: score 0. The autograder could not grade this submission; this is "
              "not a verdict on your file. Tell your instructor, who can regrade it once the "
              f"autograder is fixed.\n{message}")
    return {"score": 0.0, "execution_time": int(math.ceil(seconds)), "output": output,
            "output_format": "text", "stdout_visibility": "hidden",
            "extra_data": {"error": message[-2000:]},
            "tests": [_test("The autograder ran", "failed", message[-2000:], "visible")]}


def check_results(data):
    """Return the ways ``data`` departs from results.json's documented format (empty: none)."""
    problems = []

    def check(obj, fields, where, written):
        if not isinstance(obj, dict):
            problems.append(f"{where} is not an object")
            return
        for key, value in obj.items():
            if key not in fields:
                problems.append(f"{where}: {key!r} is not a documented field")
            elif isinstance(value, bool) or not isinstance(value, fields[key]):
                problems.append(f"{where}: {key!r} is {type(value).__name__}")
        for key in written:
            if key not in obj:
                problems.append(f"{where}: {key!r} is missing")
        for key in ("visibility", "stdout_visibility"):
            if key in obj and obj[key] not in VISIBILITY:
                problems.append(f"{where}: {key} {obj[key]!r} is not one of {VISIBILITY}")
        for key in ("output_format", "name_format", "test_output_format", "test_name_format"):
            if key in obj and obj[key] not in FORMATS:
                problems.append(f"{where}: {key} {obj[key]!r} is not one of {FORMATS}")
        if "status" in obj and obj["status"] not in STATUSES:
            problems.append(f"{where}: status {obj['status']!r} is not one of {STATUSES}")
        for key in ("score", "max_score", "execution_time"):
            value = obj.get(key)
            if isinstance(value, (int, float)) and not (math.isfinite(value) and value >= 0):
                problems.append(f"{where}: {key} {value!r} is not a finite number >= 0")

    check(data, RESULTS_FIELDS, "results", WRITTEN)
    for i, test in enumerate(data.get("tests", []) if isinstance(data, dict) else []):
        check(test, TEST_FIELDS, f"tests[{i}]", WRITTEN_TEST)
        if isinstance(test, dict) and isinstance(test.get("score"), (int, float)) \
                and isinstance(test.get("max_score"), (int, float)) \
                and test["score"] > test["max_score"] + 1e-9:
            problems.append(f"tests[{i}]: score {test['score']} above max_score "
                            f"{test['max_score']}")
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as e:
        problems.append(f"not JSON: {e}")
    return problems


def write_results(path, data):
    """Write results.json atomically (a reader never sees half of it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


# ---------------------------------------------------------------------------------------
# run_autograder's grading: python -m grader.gradescope

def run(root):
    """Grade ``root``/submission with the bundle in ``root``/source; write the results; return 0."""
    root = Path(root)
    start = time.monotonic()
    out = root / "results" / "results.json"
    settings = {}
    try:
        settings = json.loads((root / "source" / SETTINGS).read_text())
        print(f"Grader code: {Path(__file__).resolve().parent}; settings: {json.dumps(settings)}")
        with tempfile.TemporaryDirectory(prefix="autograder-") as scratch:
            test_set = load_test_set(str(root / "source" / settings["test_set"]["path"]),
                                     data_dir=Path(scratch) / "data")
            if test_set.sha256 != settings["test_set"]["sha256"]:
                raise scoring.CannotGrade(
                    f"Cannot grade: the bundle's test set has SHA-256 {test_set.sha256}, not the "
                    f"{settings['test_set']['sha256']} it was built with. Rebuild the bundle.")
            print(f"Grading on the {test_set.description()} (SHA-256 {test_set.sha256}).")
            upload = grade_upload(root / "submission", test_set,
                                  timeout=float(settings["timeout"]),
                                  memory_limit_gib=float(settings["memory_limit_gib"]),
                                  max_files=int(settings["max_files"]),
                                  scratch=Path(scratch))
        data = results(upload, settings, time.monotonic() - start)
        for report in upload.reports:
            print(report.text() if report.status != "invalid"
                  else f"{report.submission}: INVALID: {report.message}")
    except Exception as e:  # noqa: BLE001 - whatever it is, the learner gets a results.json
        traceback.print_exc(file=sys.stdout)
        message = str(e) if isinstance(e, scoring.CannotGrade) else f"{type(e).__name__}: {e}"
        data = error_results(message, settings, time.monotonic() - start)
    problems = check_results(data)
    if problems:  # never expected: said in the log, and the results still written
        print("results.json departs from Gradescope's format: " + "; ".join(problems))
    write_results(out, data)
    print(f"Score {data['score']:g}. Wrote {out}.\n--- what the learner reads ---\n"
          f"{data['output']}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m grader.gradescope",
        description="Grade a Gradescope submission with the autograder bundle (what "
                    "run_autograder runs); build the bundle with python -m grader gradescope.")
    parser.add_argument("--root", default=os.environ.get("AUTOGRADER_ROOT", "/autograder"),
                        help="Gradescope's /autograder (default: AUTOGRADER_ROOT, else "
                             "/autograder)")
    return run(parser.parse_args(argv).root)


# ---------------------------------------------------------------------------------------
# Building the bundle: python -m grader gradescope

def pinned_requirements(path=None):
    """Return {package name (lower case, - for _): version} for the == pins of requirements.txt."""
    path = Path(path) if path else config.REPO_DIR / "requirements.txt"
    pins = {}
    for line in path.read_text().splitlines():
        found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if found:
            pins[found.group(1).lower().replace("_", "-")] = found.group(2)
    return pins


def grader_requirements(pins):
    """Return requirements-grader.txt's text: GRADER_PACKAGES at their pinned versions."""
    missing = [name for name in GRADER_PACKAGES if name not in pins]
    if missing:
        raise ValueError(f"requirements.txt pins no version of {', '.join(missing)}")
    lines = ["# The packages the M2NIST grader needs on a CPU, at the versions the course's",
             "# requirements.txt pins (tensorflow as tensorflow-cpu: the same release without",
             "# the GPU kernels). Written by python -m grader gradescope; setup.sh installs it."]
    lines += [f"{CPU_BUILDS.get(name, name)}=={pins[name]}" for name in GRADER_PACKAGES]
    return "\n".join(lines) + "\n"


def helpers_modules(package_dir=None):
    """Return the ``helpers`` modules that the grader's modules import, directly or not."""
    grader_dir = Path(package_dir or Path(__file__).resolve().parent)
    helpers_dir = config.PACKAGE_DIR

    def imported(path):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "helpers":
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers."):
                names.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                names.update(a.name.split(".")[1] for a in node.names
                             if a.name.startswith("helpers."))
        return {n for n in names if (helpers_dir / f"{n}.py").is_file()}

    needed = set()
    todo = set().union(*(imported(p) for p in grader_dir.glob("*.py")))
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo |= imported(helpers_dir / f"{name}.py") - needed
    return sorted(needed)


def _add(archive, name, data, executable=False):
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    archive.writestr(info, data)


def build_bundle(test_set_path, out, *, points=POINTS, timeout=workers.TIMEOUT,
                 memory_limit_gib=limits.MEMORY_LIMIT_GB, digit_visibility="visible",
                 visibility=None, max_files=MAX_FILES, requirements=None):
    """Write the Gradescope autograder zip to ``out``; return its settings.

    ``test_set_path``: a private test set (``python -m grader --make-test-set``), checked
    here as the grader will read it. Raises ValueError saying what is wrong.
    """
    test_set_path, out = Path(test_set_path), Path(out)
    if not test_set_path.is_file():
        raise ValueError(f"{test_set_path} is not a file; make a private test set with "
                         "python -m grader --make-test-set private-test.zip")
    if out.suffix.lower() != ".zip":
        raise ValueError(f"{out} must be a .zip file: Gradescope takes the autograder as a zip")
    if out.resolve() == test_set_path.resolve():
        raise ValueError("--out would overwrite the test set")
    with tempfile.TemporaryDirectory(prefix="bundle-") as scratch:
        try:
            test_set = load_test_set(str(test_set_path), data_dir=Path(scratch))
        except scoring.CannotGrade as e:
            raise ValueError(str(e)) from e
    if not test_set.private:
        raise ValueError(f"{test_set_path.name} is an M2NIST archive, not a private test set: "
                         "learners have the public split's labels. Make one with "
                         "python -m grader --make-test-set private-test.zip")
    pins = pinned_requirements(requirements)
    settings = {
        "format": "m2nist-gradescope-autograder", "version": 1,
        "test_set": {"path": f"{TEST_SET_DIR}/{test_set_path.name}", "name": test_set_path.name,
                     "sha256": sha256_file(test_set_path), "images": len(test_set.images),
                     **({"practice": test_set.identity()["practice"]} if getattr(
                         test_set, "practice", False) else {})},
        "points": float(points), "timeout": float(timeout),
        "memory_limit_gib": float(memory_limit_gib), "max_files": int(max_files),
        "digit_visibility": digit_visibility, "visibility": visibility,
        "packages": {CPU_BUILDS.get(n, n): pins.get(n) for n in GRADER_PACKAGES},
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    requirements_text = grader_requirements(pins)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    with zipfile.ZipFile(partial, "w") as archive:
        _add(archive, "setup.sh", (TEMPLATES / "setup.sh").read_bytes(), executable=True)
        _add(archive, "run_autograder", (TEMPLATES / "run_autograder").read_bytes(),
             executable=True)
        _add(archive, REQUIREMENTS, requirements_text)
        _add(archive, SETTINGS, json.dumps(settings, indent=1) + "\n")
        _add(archive, settings["test_set"]["path"], test_set_path.read_bytes())
        grader_dir = Path(__file__).resolve().parent
        for path in sorted(grader_dir.glob("*.py")):
            _add(archive, f"{CODE_DIR}/grader/{path.name}", path.read_bytes())
        for name in ["__init__"] + helpers_modules(grader_dir):
            _add(archive, f"{CODE_DIR}/helpers/{name}.py",
                 (config.PACKAGE_DIR / f"{name}.py").read_bytes())
    os.replace(partial, out)
    return settings


def _visibility(text):
    if text not in VISIBILITY:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(VISIBILITY)}")
    return text


def bundle_main(argv=None):
    """``python -m grader gradescope``: build the autograder zip; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m grader gradescope",
        description="Build a Gradescope autograder (a zip to upload as the assignment's "
                    "autograder) that grades each learner's .keras upload on a private test "
                    "set, under the same limits as python -m grader.")
    parser.add_argument("--test-set", required=True, metavar="ZIP",
                        help="the private test set (python -m grader --make-test-set ZIP); it "
                             "travels inside the bundle, where learners never see it")
    parser.add_argument("--out", default="autograder.zip", help="the zip to write "
                                                                "(default autograder.zip)")
    parser.add_argument("--points", type=float, default=POINTS,
                        help=f"the assignment's points on Gradescope; a grade of 100 earns them "
                             f"(default {POINTS:g})")
    parser.add_argument("--timeout", type=float, default=workers.TIMEOUT,
                        help=f"seconds one .keras file may take (default {workers.TIMEOUT}, as "
                             "python -m grader)")
    parser.add_argument("--memory-limit", type=float, default=limits.MEMORY_LIMIT_GB,
                        metavar="GIB", help=f"memory one file's grading may use, in GiB "
                                            f"(default {limits.MEMORY_LIMIT_GB:g}; 0 for none)")
    parser.add_argument("--max-files", type=int, default=MAX_FILES,
                        help=f".keras files graded from one upload (default {MAX_FILES})")
    parser.add_argument("--digit-visibility", type=_visibility, default="visible",
                        help="when learners see the per-digit IoUs and the grade: visible "
                             "(default), after_due_date, after_published or hidden. The checks "
                             "of the file (what to fix) are always visible")
    parser.add_argument("--visibility", type=_visibility, default=None,
                        help="Gradescope's top-level visibility of the whole result (default: "
                             "not set, Gradescope's own default)")
    args = parser.parse_args(argv)
    if not args.points > 0 or not args.timeout > 0 or args.max_files < 1 \
            or not 0 <= args.memory_limit < 2**20:
        parser.error("--points and --timeout must be above 0, --max-files at least 1, "
                     "--memory-limit a number of GiB (0 for none)")
    try:
        settings = build_bundle(args.test_set, args.out, points=args.points,
                                timeout=args.timeout, memory_limit_gib=args.memory_limit,
                                digit_visibility=args.digit_visibility,
                                visibility=args.visibility, max_files=args.max_files)
    except (ValueError, OSError) as e:
        print(f"No autograder written: {e}")
        return 2
    ts = settings["test_set"]
    if ts.get("practice"):
        print(f"Warning: {ts['name']} is a PRACTICE test set ({ts['practice']}): models grade far "
              "lower on it than on M2NIST, and every result will say so. For grading, make one "
              "with python -m grader --make-test-set (MNIST's digits, the default).")
    print(f"Wrote {args.out}: a Gradescope autograder grading .keras uploads on {ts['name']} "
          f"({ts['images']} images, SHA-256 {ts['sha256']}), {settings['points']:g} points, "
          f"each file under {settings['timeout']:g} s and "
          f"{settings['memory_limit_gib']:g} GiB; per-digit results {args.digit_visibility}.\n"
          "Upload it on the assignment's Configure Autograder page (base image: Ubuntu, "
          "22.04 or later). Keep it away from learners: it holds the test set.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
