"""Grade M2NIST segmentation models: the assignment's rules, for learners and instructors.

    python -m helpers.grading model.keras          # one submission
    python -m helpers.grading submissions/         # every file in a folder, plus a CSV
    python -m helpers.grading model.keras --url URL  # the test split from another M2NIST archive
    python -m helpers.grading model.keras --isolate  # one file, with the folder's limits

A submission is a ``.keras`` file. It is loaded with Keras ``safe_mode=True`` and no
custom objects, after the checks of ``helpers.model_safety``: a model carrying serialized
Python code (a ``Lambda`` layer, a lambda activation), a function other than Keras' own
losses, metrics and activations, or a class from outside the Keras modules a plain model's
configuration uses is rejected without running any of it; so is a file that declares more
than a course model can need (zip entries, parameters, weights arrays), before anything is
allocated. The model must map (64, 84, 1)
images scaled to [-1, 1] to (64, 84, 11) per-pixel class scores. It is scored on the
course's fixed M2NIST test split (from ``--url``, else ``COURSE_M2NIST_URL``, else the
official archive) with the course's IoU (``helpers.metrics``): grade = 10 x the sum of the
ten digit IoUs; pass: grade above 60, decided on the grade rounded to 2 decimals as printed.

Exit codes for one submission: 0 pass, 1 fail, 2 invalid submission. For a folder: 0
once every file has a verdict (they are in the CSV), 2 if the folder holds no files; each
file is graded in a child process with a time limit (``--timeout``) and a memory limit
(``--memory-limit``), so one that crashes, hangs or exhausts memory costs only its own
verdict; ``--isolate`` grades a single file that way. Either way, 3 when the grader cannot
grade at all: the test data cannot be had, or the installed Keras is older than 3.11 (its
safe_mode can be bypassed, so no submission is loaded).
Taught in notebook 4.
"""

import argparse
import csv
import io
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from helpers import config, m2nist, metrics, model_safety
from helpers.download import DataError
from helpers.model_safety import InvalidSubmission

PASS_MARK = 60.0
DIGITS = tuple(range(10))
INPUT_SHAPE = (*m2nist.IMAGE_SHAPE, 1)
OUTPUT_SHAPE = (*m2nist.IMAGE_SHAPE, m2nist.N_CLASSES)
EXIT = {"pass": 0, "fail": 1, "invalid": 2}
EXIT_CANNOT_GRADE = 3  # the grader's set-up (test data, Keras version), not the submission
MIN_KERAS = (3, 11)  # older Keras has safe_mode bypasses: CVE-2025-1550, -8747, -9906
TIMEOUT = 600  # seconds one submission may take in folder mode or --isolate
# Memory for each grading process (folder mode, or --isolate), enforced as RLIMIT_DATA: the
# process's private writable memory (heap, mmap'd arrays, TensorFlow's allocations), not
# address space reserved and never used. Measured grading in quick mode on CPU: the
# solution's FCN-8 (2.4 M parameters, 29 MB file) ends at VmData 0.73 GiB and grades under
# a 0.75 GiB limit; a classic U-Net (31 M parameters, 373 MB file with Adam's state) ends at
# VmData 1.2 GiB, grades under 1.5 GiB and aborts under 1 GiB. 4 GiB leaves room for bigger
# honest models while a refused allocation stays far from a machine's memory.
# RLIMIT_AS (address space) is unusable: TensorFlow maps 2.9 GiB of it on CPU (CUDA reserves
# far more), and under a 1.5 GiB RLIMIT_AS grading spun for minutes instead of failing.
MEMORY_LIMIT_GB = 4.0
_OUR_FILES = {"grades.csv", "grades.json"}
# Phrases of an allocation refused under the memory limit: Python, NumPy, TensorFlow, C++.
_OUT_OF_MEMORY = re.compile(r"MemoryError|Unable to allocate|OOM when allocating|bad_alloc|"
                            r"Cannot allocate memory|ResourceExhausted")
_memory_limit = None  # bytes, once limit_memory has set one in this process


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


def load_submission(path):
    """Load a submitted ``.keras`` model safely; raise InvalidSubmission saying why it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise InvalidSubmission(f"{path} is not a file")
    if path.suffix != ".keras":
        raise InvalidSubmission(f"{path.name} is not a .keras file; save the model with "
                                "model.save('model.keras')")
    configuration = model_safety.read_configuration(path)  # zip limits and the code scan
    check_keras_version()  # before Keras deserializes anything from the file
    model_safety.check_sizes(path, configuration)  # parameters and weights arrays, unallocated
    import tempfile

    import keras

    with tempfile.TemporaryDirectory(prefix="submission-") as scratch:
        try:
            # Loaded from a copy without compile settings: compile=False skips the model's
            # own, but Keras would still compile nested models, creating their metrics.
            plain = model_safety.write_without_compile_configs(path, configuration,
                                                                Path(scratch) / "model.keras")
            model = keras.saving.load_model(plain, compile=False, safe_mode=True)
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


def limit_memory(n_bytes):
    """Cap this process's data memory at ``n_bytes`` (RLIMIT_DATA); return False where it cannot be."""
    global _memory_limit
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            n_bytes = min(n_bytes, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (n_bytes, hard))
    except (ImportError, AttributeError, ValueError, OSError):
        return False  # e.g. Windows, which has no resource module
    # Only Linux counts mmap'd memory (where large arrays live) against RLIMIT_DATA.
    _memory_limit = n_bytes
    return sys.platform.startswith("linux")


_TF_LOG_LINE = re.compile(r"[IW]\d{4} \d\d:\d\d:")  # TensorFlow's C++ info and warning lines


def _tail(file, size=64 << 10):
    """Return the last ``size`` bytes of an open file as text."""
    file.seek(0, os.SEEK_END)
    file.seek(max(0, file.tell() - size))
    return file.read().decode(errors="replace")


def _memory_message(limit):
    if limit:
        return (f"it ran out of its memory limit of {model_safety.size_text(limit)} while "
                "being loaded or run (the grader's --memory-limit)")
    return "it ran out of memory while being loaded or run"


def _out_of_memory(error):
    """Return True when an exception, or one it came from, is a refused allocation."""
    while error is not None:
        if isinstance(error, MemoryError) or _OUT_OF_MEMORY.search(
                f"{type(error).__name__}: {error}"):
            return True
        error = error.__cause__ or error.__context__
    return False


def grade_file(path, test_data, name=None):
    """Grade one submitted file against ``test_data`` = (images, labels); return its Report."""
    name = name or str(path)
    try:
        model = load_submission(path)
        scores = score_model(model, *test_data)
    except CannotGrade:
        raise  # the grader's set-up, not this submission: no verdict
    except Exception as e:
        if _out_of_memory(e):
            return Report(name, "invalid", message=_memory_message(_memory_limit))
        if isinstance(e, InvalidSubmission):
            return Report(name, "invalid", message=str(e))
        # A model that loads but cannot run, e.g. mismatched weights.
        return Report(name, "invalid", message=f"the model failed to run on the test images: "
                                               f"{type(e).__name__}: {str(e)[:300]}")
    return report_for_scores(name, scores)


CSV_COLUMNS = (["submission", "status", "grade"] + [f"iou_{d}" for d in DIGITS]
               + [f"dice_{d}" for d in DIGITS] + ["message"])


_CSV_HEADER = ",".join(CSV_COLUMNS).encode()


def _our_output(path):
    """Whether ``path`` is a table or verdict an earlier run wrote, whatever its name (--csv, --json)."""
    if path.name in _OUR_FILES or path.name.endswith(".grade.json"):
        return True
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        return False
    try:  # the first bytes tell: what write_csv and json.dumps(..., indent=1) write first
        with open(path, "rb") as f:
            head = f.read(len(_CSV_HEADER) + 2)
    except OSError:
        return False
    if suffix == ".csv":
        return head.rstrip(b"\r\n") == _CSV_HEADER
    return head.startswith((b'[\n {\n  "submission": ', b'{\n "submission": '))


def submissions_in(folder):
    """List the files of a submissions folder (recursively, sorted, skipping hidden and our outputs)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and not _our_output(p))


def write_csv(reports, path):
    """Write one row per report: status, grade, the ten IoUs and Dice scores, the message."""
    columns = CSV_COLUMNS
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


def grade_isolated(path, name, quick, timeout=TIMEOUT, url=None, memory_limit=None):
    """Grade one file in a child process with a time and memory limit, so a submission that
    crashes, hangs or exhausts memory costs only its own verdict.

    ``memory_limit`` is in bytes (default: MEMORY_LIMIT_GB; 0 for none).
    """
    import subprocess
    import tempfile

    if memory_limit is None:
        memory_limit = int(MEMORY_LIMIT_GB * 2**30)
    with tempfile.TemporaryDirectory(prefix="grading-") as scratch:
        out = Path(scratch) / "verdict.json"
        command = [sys.executable, "-m", "helpers.grading", str(path), "--json", str(out),
                   "--quick" if quick else "--full"] + (["--url", url] if url else [])
        # The child limits itself: a preexec_fn would run between fork and exec, which is
        # unsafe in this process once TensorFlow has started its threads.
        command += ["--limit-this-process", str(memory_limit)] if memory_limit else []
        # TMPDIR: the child's temporary files (its stripped copy of the submission) go in this
        # folder, which is removed even when the child is killed mid-load.
        env = {**os.environ, "TMPDIR": scratch, "PYTHONPATH": os.pathsep.join(
            [str(config.PACKAGE_DIR.parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        # The child's output goes to files, not to this process's memory: a submission could
        # make it print gigabytes. Only the ends are read back.
        with open(Path(scratch) / "stdout", "w+b") as stdout, open(Path(scratch) / "stderr", "w+b") as stderr:
            try:
                returncode = subprocess.run(command, stdout=stdout, stderr=stderr, timeout=timeout,
                                            env=env).returncode
            except subprocess.TimeoutExpired:
                return Report(name, "invalid", message=f"grading took longer than {timeout} s")
            done = SimpleNamespace(returncode=returncode, stdout=_tail(stdout), stderr=_tail(stderr))
        if done.returncode == EXIT_CANNOT_GRADE:
            raise CannotGrade(_cannot_grade_message(done))
        try:
            verdict = json.loads(out.read_text())
        except (OSError, ValueError):
            output = f"{done.stdout}\n{done.stderr}"
            if _OUT_OF_MEMORY.search(output):  # e.g. std::bad_alloc aborted the process
                return Report(name, "invalid", message=_memory_message(memory_limit))
            tail = " ".join(" ".join(line for line in (done.stderr or done.stdout).splitlines()
                                     if not _TF_LOG_LINE.match(line)).split())[-300:]
            if done.returncode < 0 and memory_limit:
                # Native code that finds no memory often crashes instead of saying so.
                return Report(name, "invalid", message=(
                    f"the grader's process was killed by signal {-done.returncode} on this file "
                    f"(possibly out of its memory limit of {model_safety.size_text(memory_limit)}): {tail}"))
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
                        help=f"for a folder or --isolate: seconds one submission may take "
                             f"(default {TIMEOUT})")
    parser.add_argument("--memory-limit", type=float, default=MEMORY_LIMIT_GB, metavar="GIB",
                        help=f"for a folder or --isolate: the memory one submission's grading "
                             f"may use, in GiB (default {MEMORY_LIMIT_GB:g}; 0 for no limit; "
                             "enforced on Linux)")
    parser.add_argument("--isolate", action="store_true",
                        help="for one file: grade it in a child process with the time and "
                             "memory limits, as a folder's files are")
    # How a folder's grader hands its memory limit (bytes) to the child grading one file.
    parser.add_argument("--limit-this-process", type=int, help=argparse.SUPPRESS)
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
    if args.limit_this_process:
        limit_memory(args.limit_this_process)
    if not 0 <= args.memory_limit < 2**20:  # also refuses nan and inf
        parser.error(f"--memory-limit must be a number of GiB, 0 for none; got {args.memory_limit}")
    memory_limit = int(args.memory_limit * 2**30)

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
    isolated = target.is_dir() or args.isolate
    if isolated and memory_limit and not sys.platform.startswith("linux"):
        print(f"Note: the memory limit is enforced on Linux only; on {sys.platform} each "
              "submission has the time limit alone.")

    if not target.is_dir():
        try:
            report = (grade_isolated(target, str(target), quick, args.timeout, url=args.url,
                                     memory_limit=memory_limit) if args.isolate
                      else grade_file(target, test_data))
        except CannotGrade as e:
            print(e)
            return EXIT_CANNOT_GRADE
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
                                    url=args.url, memory_limit=memory_limit)
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
