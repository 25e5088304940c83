"""GitHub Classroom: the grading steps of the starter repository's workflow (``classroom/``).

The workflow (``classroom/.github/workflows/classroom.yml``, which the instructor copies into
the assignment's starter repository) runs on each push, in the learner's repository:

- ``python -m grader.classroom grade``: grades the committed ``.keras`` file(s) exactly as
  the Gradescope autograder grades an upload (``grader.gradescope.grade_upload``: each file
  in a worker under the command line's time and memory limits, never running its code, the
  best counting), on the course's public M2NIST test split unless ``--url`` names another,
  and writes the verdict to ``.grader/verdict.json``. Exit 0 when a file was graded (pass or
  fail), 1 when none could be, 3 when the grader could not grade at all.
- ``python -m grader.classroom check --above N``: exit 0 when the grade that counts is above N
  (decided on the grade rounded to 2 decimals, as the pass mark is): one such step per band
  of points, since Classroom's command grader awards a step's points whole or not at all.
- ``python -m grader.classroom summary``: the learner's feedback as Markdown, for the run's
  summary page (``$GITHUB_STEP_SUMMARY``).

A learner's repository is the learner's: whatever runs there, they can change, and any test
set it reads they can read. Points from this workflow are feedback; the grade of record
comes from the instructor's own run (``python -m grader`` on the class's files, or
Gradescope) on a private test set. See ``docs/grading-on-gradescope-and-classroom.md``.
"""

import argparse
import json
import sys
from pathlib import Path

# The grading modules are imported where they are used: a check step reads the verdict only,
# and starts in a fraction of the time that importing them takes.
VERDICT = Path(".grader") / "verdict.json"
COMMIT_HINT = ("What to commit: the one file that model.save('model.keras') writes in the "
               "assignment notebook. Check it on your machine first with "
               "python -m grader model.keras, then commit and push that .keras file.")
DATA_DIR = Path(".grader") / "data"


def grade(args):
    from grader import gradescope, limits, scoring, workers

    timeout = workers.TIMEOUT if args.timeout is None else args.timeout
    memory = limits.MEMORY_LIMIT_GB if args.memory_limit is None else args.memory_limit
    max_files = gradescope.MAX_FILES if args.max_files is None else args.max_files
    Path(args.verdict).unlink(missing_ok=True)  # a verdict committed or left over never counts
    try:
        test_set = gradescope.load_test_set(args.url, quick=None, data_dir=Path(args.data_dir))
        print(f"Grading on the {test_set.description()} (SHA-256 {test_set.sha256}).")
        upload = gradescope.grade_upload(args.folder, test_set, timeout=timeout,
                                         memory_limit_gib=memory, max_files=max_files,
                                         hint=COMMIT_HINT)
    except scoring.CannotGrade as e:
        print(e)
        _write(args.verdict, {"cannot_grade": str(e)})
        return workers.EXIT_CANNOT_GRADE
    _write(args.verdict, upload.as_dict())
    print(gradescope.feedback(upload, hint=COMMIT_HINT))
    report = upload.report
    return 0 if report is not None and report.status != "invalid" else 1


def _write(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def _read(path):
    """Return what a grade step wrote (a dict), or the reason there is none (a str)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return (f"No verdict at {path} ({type(e).__name__}): the grading step did not finish. "
                "See its log in this run.")
    return data.get("cannot_grade", data) if isinstance(data, dict) else f"{path} is no verdict"


def check(args):
    data = _read(args.verdict)
    counted = data.get("counted") if isinstance(data, dict) else None
    report = data["reports"][counted] if counted is not None else {}
    if report.get("status") not in ("pass", "fail") or report.get("grade") is None:
        print(f"Grade above {args.above:g}: no - no file was graded.")
        return 1
    above = round(report["grade"], 2) > args.above
    print(f"Grade above {args.above:g}: {'yes' if above else 'no'} "
          f"(grade {report['grade']:.2f}, {report['submission']}).")
    return 0 if above else 1


def summary_markdown(upload):
    """Return the learner's feedback (an Upload, or why there is none) as Markdown."""
    from grader import gradescope, scoring

    if not isinstance(upload, gradescope.Upload):
        return ("## M2NIST assignment: not graded\n\nThe grader could not grade this commit; "
                f"this is not a verdict on your file.\n\n```\n{upload}\n```\n")
    report = upload.report
    title = ("not graded" if report is None or report.status == "invalid"
             else f"{report.status.upper()}, grade {report.grade:.2f}")
    lines = [f"## M2NIST assignment: {title}", "", "```",
             gradescope.feedback(upload, hint=COMMIT_HINT), "```"]
    if report is not None and report.status != "invalid":
        lines += ["", "| digit | IoU | Dice |", "| --- | --- | --- |"]
        lines += [f"| {d} | {report.iou[str(d)]:.3f} | {report.dice[str(d)]:.3f} |"
                  for d in scoring.DIGITS]
    lines += ["", "Points in this run come from the course's public test split; your "
                  "instructor's grade may come from a private test set."]
    return "\n".join(lines) + "\n"


def summary(args):
    from grader import gradescope

    data = _read(args.verdict)
    print(summary_markdown(gradescope.Upload.from_dict(data) if isinstance(data, dict) else data),
          end="")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m grader.classroom",
        description="The grading steps of the GitHub Classroom workflow (classroom/).")
    commands = parser.add_subparsers(dest="command", required=True)
    g = commands.add_parser("grade", help="grade the .keras file(s) in a folder (default: .)")
    g.add_argument("folder", nargs="?", default=".")
    g.add_argument("--verdict", default=str(VERDICT), help=f"where to write it (default {VERDICT})")
    g.add_argument("--url", help="the test set: a private test set or M2NIST archive (URL or "
                                 "path); default: the course's public test split")
    g.add_argument("--data-dir", default=str(DATA_DIR),
                   help=f"where test data is cached (default {DATA_DIR})")
    g.add_argument("--timeout", type=float,
                   help="seconds one file may take (default: python -m grader's)")
    g.add_argument("--memory-limit", type=float, metavar="GIB",
                   help="GiB one file's grading may use (default: python -m grader's)")
    g.add_argument("--max-files", type=int,
                   help=".keras files graded (default: the Gradescope bundle's)")
    g.set_defaults(run=grade)
    c = commands.add_parser("check", help="exit 0 when the grade is above a mark")
    c.add_argument("--above", type=float, required=True)
    c.add_argument("--verdict", default=str(VERDICT))
    c.set_defaults(run=check)
    s = commands.add_parser("summary", help="the feedback as Markdown")
    s.add_argument("--verdict", default=str(VERDICT))
    s.set_defaults(run=summary)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
