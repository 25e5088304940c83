"""The grader's command line, ``python -m grader``: one file, a class, a test set."""

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path, PurePosixPath

from helpers import config
from helpers.download import DataError, sha256_file
from grader import identity, limits, scoring, tables, testset, workers
from grader.safety import InvalidSubmission, size_text

EXIT = {"pass": 0, "fail": 1, "invalid": 2}
EXIT_CANNOT_GRADE = workers.EXIT_CANNOT_GRADE  # the set-up (test data, Keras), not the submission
DEFAULT_JOBS = 2
POINTS = 100.0


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m grader",
        description="Grade M2NIST segmentation models (.keras files) on the course's test split, "
                    "or a class's folder of them (Canvas and Moodle downloads included).",
        epilog="Pass: grade above 60, decided on the grade rounded to 2 decimals. Exit codes: "
               "0 pass, 1 fail, 2 invalid submission, an empty or refused folder (a Moodle "
               "team download without --moodle-teams) or a wrong command line (a folder: 0 "
               "once every file has a verdict), 3 cannot grade at all (no test data, or "
               "Keras older than 3.11). A Gradescope autograder: python -m grader gradescope "
               "--help.")
    parser.add_argument("target", nargs="?", help="a .keras file, or a folder of submissions")
    parser.add_argument("--json", help="where to write the JSON verdict (default: beside the "
                                       "model as MODEL.grade.json, or grades.json in --out)")
    parser.add_argument("--csv", help="for a folder: where to write the table of files "
                                      "(default: grades.csv in --out)")
    parser.add_argument("--out", help="for a folder: where to write grades.csv, grades.json, "
                                      "students.csv, the LMS tables and the feedback files "
                                      "(default: the folder)")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help=f"for a folder: how many files to grade at once, each in a worker "
                             f"with the limits below (default {DEFAULT_JOBS}; fewer when the "
                             "machine's memory cannot hold that many memory limits)")
    parser.add_argument("--timeout", type=float, default=workers.TIMEOUT,
                        help=f"seconds one submission may take (default {workers.TIMEOUT})")
    parser.add_argument("--memory-limit", type=float, default=limits.MEMORY_LIMIT_GB, metavar="GIB",
                        help=f"the memory one submission's grading may use, in GiB (default "
                             f"{limits.MEMORY_LIMIT_GB:g}; 0 for no limit; enforced on Linux)")
    parser.add_argument("--url", help="the M2NIST archive the test set comes from, a URL, "
                                      "file:// URL or path: an M2NIST archive (its fixed split's "
                                      "test part is used) or a private test set from "
                                      "--make-test-set (all its images are). Default: "
                                      "COURSE_M2NIST_URL, else the official archive; in quick "
                                      "mode, generated data")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_const", const=True,
                      help="grade on the generated quick-mode data (default: COURSE_QUICK)")
    mode.add_argument("--full", dest="quick", action="store_const", const=False,
                      help="grade on the real M2NIST test split")
    lms = parser.add_argument_group("tables for a learning-management system")
    lms.add_argument("--points", type=float, default=POINTS,
                     help=f"the assignment's maximum score in the LMS; a grade of 100 earns it "
                          f"(default {POINTS:g})")
    lms.add_argument("--assignment", default="M2NIST assignment",
                     help="Canvas: the assignment's column header as a gradebook export shows "
                          "it, 'Title (id)'")
    lms.add_argument("--moodle-teams", action="store_true",
                     help="Moodle: the assignment takes team submissions, so its download names "
                          "files by group ('<Group name>_<group id>_assignsubmission_file'), not "
                          "by participant: one score per group, and no grading worksheet")
    private = parser.add_argument_group("a private test set")
    private.add_argument("--make-test-set", metavar="ZIP",
                         help="write a fresh M2NIST-format test archive to ZIP and stop; "
                              "grade with --url ZIP")
    private.add_argument("--count", type=int, default=testset.DEFAULT_COUNT,
                         help=f"its number of images (default {testset.DEFAULT_COUNT})")
    private.add_argument("--seed", type=int, help="its random seed (default: a new one)")
    private.add_argument("--digits", choices=["mnist", "sklearn"], default="mnist",
                         help="its handwritten digits: real MNIST digits placed as M2NIST "
                              "places them (default; offline), or 'sklearn': a PRACTICE set of "
                              "scikit-learn's 8x8 digits, which grades models far lower than "
                              "M2NIST does and is marked as practice in every verdict")
    return parser


def make_test_set(args):
    """--make-test-set: write a private test archive and say how to use it."""
    try:
        path, seed, digits = testset.make_private_test_set(
            args.make_test_set, args.count, args.seed, args.digits)
    except (FileExistsError, ValueError, DataError, OSError) as e:
        print(f"No test set written: {e}")
        return 2
    kind = ("a PRACTICE test set (scikit-learn's 8x8 digits: NOT M2NIST's exam; models grade "
            "far lower on it)" if digits != "mnist" else "a private M2NIST-format test set")
    print(f"Wrote {path}: {kind} of {args.count} images "
          f"({digits} digits, seed {seed}), SHA-256 {sha256_file(path)}.\n"
          f"Keep it away from learners. Grade a class on every one of its images with:\n"
          f"  python -m grader SUBMISSIONS/ --url {path}")
    return 0


def _jobs(requested, memory_limit):
    """Return how many workers fit in this machine's memory, saying so when fewer than asked."""
    available = limits.available_bytes()
    if memory_limit and available:
        fits = max(1, available // memory_limit)
        if requested > fits:
            print(f"Note: {requested} workers with a memory limit of {size_text(memory_limit)} "
                  f"each would need {size_text(requested * memory_limit)}; this machine has "
                  f"{size_text(available)} available, so {fits} grade at once.")
            return fits
    return requested


def _threads(jobs):
    """Return TensorFlow threads per worker: the CPUs shared out, or None for one worker."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // jobs) if jobs > 1 else None


def _checked_before_loading(path, name):
    """Return the verdict on a file that fails the checks needing no TensorFlow, else None."""
    start = time.perf_counter()
    try:
        scoring.check_before_loading(path)
    except InvalidSubmission as e:
        return scoring.Report(name, "invalid", message=str(e), resources={
            "seconds": round(time.perf_counter() - start, 3), "refused_before_loading": True})
    return None


def main(argv=None):
    """Grade a .keras file or a folder of them, or write a private test set; return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["gradescope"]:  # a subcommand; a folder so named is graded as ./gradescope
        from grader import gradescope

        return gradescope.bundle_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.make_test_set:
        return make_test_set(args)
    if args.target is None:
        parser.error("give a .keras file or a folder of submissions (or --make-test-set ZIP)")
    if not 0 <= args.memory_limit < 2**20:  # also refuses nan and inf
        parser.error(f"--memory-limit must be a number of GiB, 0 for none; got {args.memory_limit}")
    if not args.timeout > 0 or args.jobs < 1 or not args.points > 0:
        parser.error("--timeout and --points must be above 0, and --jobs at least 1")
    memory_limit = int(args.memory_limit * 2**30)
    target = Path(args.target)
    if not target.exists():
        parser.error(f"{target} does not exist")
    if target.is_file() and target.suffix.lower() == ".zip":
        print(_an_archive_not_a_model(target))
        return 2
    quick = config.quick_mode() if args.quick is None else args.quick
    if target.is_dir() and args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a file; give a folder for the tables and feedback")
    skipped = []
    files = tables.submissions_in(target, skipped) if target.is_dir() else [target]
    if skipped:
        print(f"Not graded ({len(skipped)}): links, and tables or feedback an earlier run wrote: "
              + ", ".join(identity.shown(p.relative_to(target)) for p in skipped))
    entries = [(p, identity.not_a_file_submission(identity.shown(p.relative_to(target))))
               for p in files] if target.is_dir() else []
    if any(what for _, what in entries):
        print("Not graded: LMS entries that are not handed-in files: " + ", ".join(
            f"{identity.shown(p.relative_to(target))} ({what})" for p, what in entries if what))
        files = [p for p, what in entries if not what]
    if not files:
        print(f"No submissions in {target}.")
        return 2
    team = identity.moodle_team_name(identity.shown(p.relative_to(target)) for p in files) \
        if target.is_dir() and not args.moodle_teams else None
    if team:
        print(f"Not graded: {team!r} is how Moodle names the team submissions of students in no "
              "group, so this download is by group, and its numbers are group ids, not "
              "participant ids. Grade it with --moodle-teams.")
        return 2
    try:
        # Before any download, and without importing TensorFlow: each worker checks the
        # Keras it imports again.
        scoring.check_keras_version(scoring.installed_keras_version())
        test_set = testset.load_test_set(quick, args.url)
    except scoring.CannotGrade as e:
        print(e)
        return EXIT_CANNOT_GRADE
    except DataError as e:
        print(f"Cannot grade: the test data is not available.\n{e}")
        return EXIT_CANNOT_GRADE
    print(f"Grading on the {test_set.description()} (SHA-256 {test_set.sha256}).")
    if memory_limit and not sys.platform.startswith("linux"):
        print(f"Note: the memory limit is enforced on Linux only; on {sys.platform} each "
              "submission has the time limit alone.")
    jobs = _jobs(min(args.jobs, len(files)), memory_limit) if target.is_dir() else 1
    with tempfile.TemporaryDirectory(prefix="grading-") as scratch:
        pool = workers.Pool(jobs, test_set.save(Path(scratch) / "test-set.npz"), memory_limit,
                            args.timeout, scratch, threads=_threads(jobs))
        try:
            if target.is_dir():
                return _grade_folder(target, files, pool, test_set, args)
            return _grade_file(target, pool, test_set, args)
        except scoring.CannotGrade as e:
            print(e)
            return EXIT_CANNOT_GRADE


def _an_archive_not_a_model(path):
    """Say what a .zip given as the target is, and what to do: most likely a class's download."""
    import shlex
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = [i.filename for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as e:
        return f"Not graded: {path.name} is not a model, and not a readable zip archive either ({e})."
    models = [n for n in names if PurePosixPath(n).suffix.lower() == ".keras"]
    folder = path.with_suffix("")
    unzip = f"python -m zipfile -e {shlex.quote(str(path))} {shlex.quote(str(folder))}"
    if len(models) == 1 and len(names) == 1:  # one zipped model
        return (f"Not graded: {path.name} is a zip archive holding one model, {models[0]}. Unzip "
                f"it ({unzip}) and grade the .keras file.")
    files = f"{len(names):,} file" + ("" if len(names) == 1 else "s")
    return (f"Not graded: {path.name} is a zip archive of {files}, {len(models):,} of them .keras "
            "files, not a model. A class's download (Canvas: Download Submissions; Moodle: "
            f"Download all submissions) is graded as a folder: unzip it ({unzip}), then grade "
            f"that folder: python -m grader {shlex.quote(str(folder))}")


def _stamp(report, test_set):
    report.test_split = test_set.description()
    report.test_set = test_set.identity()
    return report


def _grade_file(target, pool, test_set, args):
    report = (_checked_before_loading(target, str(target))  # Report makes the name printable
              or pool.grade_one(target, str(target)))
    _stamp(report, test_set)
    print(report.text())
    out = Path(args.json) if args.json else target.with_name(target.name + ".grade.json")
    if tables.write_text(out, json.dumps(asdict(report), indent=1) + "\n"):
        print(f"Verdict written to {identity.shown(out)}")
    return EXIT[report.status]


def _grade_folder(target, files, pool, test_set, args):
    notes = []
    items = identity.submissions(target, files, teams=args.moodle_teams, notes=notes)
    out = Path(args.out) if args.out else target
    try:  # before any grading: the verdicts need somewhere to go
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"Not graded: cannot create {out} ({e}); choose another place with --out")
        return 2
    csv_path = Path(args.csv) if args.csv else out / "grades.csv"
    json_path = Path(args.json) if args.json else out / "grades.json"
    n_students = len({s.student.key for s in items})
    print(f"{len(files)} files from {n_students} students; {pool.jobs} at once, each under "
          f"{args.timeout:g} s and "
          f"{size_text(pool.memory_limit) if pool.memory_limit else 'no memory limit'}.\n"
          f"{identity.RULE}")
    warning = identity.one_student_warning(items)
    if warning:
        print(warning)
    if notes:
        print("Given to the student named by their folder, not to the one their LMS-looking "
              "file name names (the folder holds no other student's such names): "
              + ", ".join(notes) + ".")
    if any(s.student.lms == "moodle" for s in items):
        print("Moodle names: each number is taken for a participant id, the grading worksheet's "
              "'Participant <id>'. If the assignment takes team submissions, the numbers are "
              "group ids: grade with --moodle-teams.")
    reports = [None] * len(files)

    def done(task, report):
        reports[task.index] = _stamp(report, test_set)
        shown = f"{report.grade:7.2f}" if report.grade is not None else "      -"
        print(f"{report.submission:<40} {report.status.upper():<8}{shown}  "
              f"{items[task.index].student.label()}  {report.message}")
        # Written after every submission: an interrupted run keeps the verdicts so far.
        finished = [i for i, r in enumerate(reports) if r is not None]
        tables.write_csv([reports[i] for i in finished], csv_path, [items[i] for i in finished])

    tasks = []
    for i, (path, item) in enumerate(zip(files, items)):
        refused = _checked_before_loading(path, item.relative)
        if refused is not None:
            done(workers.Task(i, path, item.relative), refused)
        else:
            tasks.append(workers.Task(i, path, item.relative))
    pool.run(tasks, done)

    rows = tables.students(list(zip(items, reports)))
    counted = {items.index(row.submission) for row in rows}
    students_path = out / "students.csv"
    written = [path for path, ok in [
        (csv_path, tables.write_csv(reports, csv_path, items, counted)),
        (json_path, tables.write_json(reports, json_path, items, counted)),
        (students_path, tables.write_students(rows, students_path, args.points))] if ok]
    gradebook = tables.canvas_rows(rows)
    anonymous = sum(row.student.lms == "canvas" for row in rows) - len(gradebook)
    if gradebook and tables.write_canvas(rows, out / "canvas-grades.csv", args.points,
                                         args.assignment):
        written.append(out / "canvas-grades.csv")
    if anonymous:
        print(f"Canvas anonymous submissions ({anonymous}): not in canvas-grades.csv, whose "
              "import matches Canvas user ids, which anonymous names hide; their scores are in "
              "students.csv: enter them in SpeedGrader.")
    if any(row.student.lms == "moodle" for row in rows) and tables.write_moodle(
            rows, out / "moodle-grades.csv", args.points):
        written.append(out / "moodle-grades.csv")
    if any(row.student.lms == "moodle-team" for row in rows):
        print("Moodle team submissions: one score per group in students.csv. Moodle's grading "
              "worksheet has a row per participant, and the download does not say who is in "
              "which group, so no worksheet is written: enter each group's score in Moodle's "
              "grader with 'Apply grades and feedback to entire group' on.")
    feedback = tables.write_feedback(rows, out / "feedback", out / "feedback.zip", args.points,
                                     test_set.short())
    counts = {s: sum(r.status == s for r in reports) for s in EXIT}
    ungraded = sum(row.report.status == "invalid" for row in rows)
    print(f"{len(reports)} files: {counts['pass']} pass, {counts['fail']} fail, "
          f"{counts['invalid']} invalid. {len(rows)} students"
          + (f", {ungraded} of them with no gradable file (no score: see their comment)"
             if ungraded else "") + ".")
    print("Written: " + (", ".join(map(str, written)) or "no table")
          + (f"; a feedback file per student in {out / 'feedback'} and {out / 'feedback.zip'}."
             if feedback else "; no feedback files."))
    if pool.replaced:
        print(f"Workers ended early (a timeout, a crash, out of memory or grown too large) and "
              f"replaced: {pool.replaced}.")
    return 0
