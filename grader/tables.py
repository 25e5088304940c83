"""What grading a class writes: tables for the instructor and the LMS, feedback for each student.

- ``grades.csv`` and ``grades.json``: one row per **file** (status, grade, the ten IoUs and
  Dice scores, the message, whose file it is, whether its grade is the one that counts, the
  seconds it took and the test set).
- ``students.csv``: one row per **student**: score, maximum, status, a short comment.
- ``canvas-grades.csv`` (when files carry Canvas names): Canvas' gradebook import format,
  the columns ``Student, ID, SIS User ID, SIS Login ID, Section`` and one assignment column,
  then a ``Points Possible`` row. Canvas matches a row to a student by ``ID``, its user id,
  the number in the file names; the SIS columns may stay empty. Canvas reads any further
  column as another assignment, so the comment is not in this table: it reaches students
  in their feedback file (``feedback.zip``, Canvas' "Re-Upload Submissions").
- ``moodle-grades.csv`` (when files carry Moodle names): the assignment's grading worksheet,
  the columns its "Upload grading worksheet" reads: ``Identifier`` ("Participant <id>", the
  id in the file names), ``Grade``, ``Last modified (grade)`` (Moodle skips a row whose grade
  was changed in Moodle after that time), ``Feedback comments``, and for people ``Full
  name`` and ``Maximum Grade``. These are Moodle's English column names.
  Not for team submissions (``--moodle-teams``): the worksheet has a row per participant and
  the download names groups, so each group's score is in ``students.csv`` only.
- ``feedback/``: one text file per student, named so that the LMS files it back with the
  student (Canvas: the submission's own ``<name>_<user id>_<file id>_`` prefix; Moodle:
  ``<Full Name>_<id>_assignsubmission_file_``; a Moodle team: ``<Group name>_<group
  id>.feedback.txt``, to hand out), and ``feedback.zip`` holding them, to upload.

Everything written here carries a signature (a header line, a zip comment) by which
``our_output`` recognises it, so a folder graded again never grades its own tables.
"""

import csv
import io
import json
import re
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from grader import identity
from grader.scoring import DIGITS, PASS_MARK

_OUR_FILES = {"grades.csv", "grades.json"}
CSV_COLUMNS = (["submission", "status", "grade"] + [f"iou_{d}" for d in DIGITS]
               + [f"dice_{d}" for d in DIGITS] + ["message"])
_STUDENT_COLUMNS = ["student", "student_id", "lms"]
FULL_COLUMNS = CSV_COLUMNS + _STUDENT_COLUMNS + ["counted", "seconds", "test_set"]
STUDENT_COLUMNS = _STUDENT_COLUMNS + ["score", "maximum", "status", "comment", "counted_file", "files"]
CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
MOODLE_COLUMNS = ["Identifier", "Full name", "Grade", "Maximum Grade", "Last modified (grade)",
                  "Feedback comments"]
FEEDBACK_TITLE = "M2NIST assignment: feedback"
FEEDBACK_ZIP_COMMENT = b"M2NIST assignment feedback files, written by python -m grader"
# The first bytes of each table this module writes, by which a later run knows it.
_HEADERS = [",".join(c).encode() for c in (CSV_COLUMNS, FULL_COLUMNS, STUDENT_COLUMNS)] + [
    ",".join(CANVAS_COLUMNS).encode() + b",", ",".join(MOODLE_COLUMNS).encode()]


@dataclass
class StudentRow:
    """One student's result: their files' reports, and which one counts."""

    student: identity.Student
    items: list  # [(Submission, Report)] in the folder's order
    counted: int  # index into items

    @property
    def report(self):
        return self.items[self.counted][1]

    @property
    def submission(self):
        return self.items[self.counted][0]

    def score(self, points):
        """Return the score on the LMS's scale (``points`` for a perfect model), or None."""
        grade = self.report.grade if self.report.status != "invalid" else None
        return None if grade is None else round(grade * points / 100, 2)

    def comment(self, points):
        """Return a short comment for the LMS: the grade and verdict, or why there is none."""
        report, more = self.report, len(self.items) - 1
        others = f" (the best of {len(self.items)} files)" if more else ""
        if report.status == "invalid":
            none = f"none of the {len(self.items)} files could be graded; the first" if more else "the file"
            return (f"Not graded: {none} was refused: {report.message[:300]} "
                    "See your feedback file.")
        return (f"Score {self.score(points):g} of {points:g}: grade {report.grade:.2f} "
                f"(10 x the sum of the digit IoUs; pass above {PASS_MARK:.0f}), "
                f"{report.status.upper()}{others}. Per-digit IoU and Dice: see your feedback file.")


def students(items):
    """Group (Submission, Report) pairs by student; return StudentRows sorted by name, then key."""
    groups = {}
    for item in items:
        groups.setdefault(item[0].student.key, []).append(item)
    rows = [StudentRow(group[0][0].student, group, identity.best([r for _, r in group]))
            for group in groups.values()]
    return sorted(rows, key=lambda row: (row.student.name.lower(), row.student.key))


def _cell(value):
    """Return a CSV cell that a spreadsheet shows as text, never runs as a formula.

    A name or message starting with ``= + - @`` (or a tab or carriage return) would be a
    formula in Excel or LibreOffice: it gets a leading apostrophe, the usual guard. Numbers
    are left as they are, and neither LMS reads the text columns it could reach (Canvas
    matches rows on ``ID``; Moodle reads Identifier, Grade, Last modified and Feedback
    comments, which start with "Participant", a digit, "Score" or "Not graded").
    """
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(value)
            return value
        except ValueError:
            return "'" + value
    return value


def _csv_text(header, rows):
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow([_cell(v) for v in header])
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()


def _number(value, digits=2):
    return "" if value is None else f"{value:.{digits}f}"


def write_csv(reports, path, items=None, counted=()):
    """Write one row per file: status, grade, IoUs, Dice, message, and (with ``items``, the
    Submissions in the same order) whose file it is and whether it counts."""
    rows = []
    for i, r in enumerate(reports):
        row = ([r.submission, r.status, _number(r.grade)]
               + [f"{r.iou[str(d)]:.4f}" if r.iou else "" for d in DIGITS]
               + [f"{r.dice[str(d)]:.4f}" if r.dice else "" for d in DIGITS] + [r.message])
        if items is not None:
            student = items[i].student
            seconds = r.resources.get("seconds")
            test_set = r.test_set
            row += [student.name, student.id, student.lms, "yes" if i in counted else "no",
                    _number(seconds, 1),
                    f"{test_set['name']} ({test_set['images']} images, SHA-256 {test_set['sha256']})"
                    if test_set else ""]
        rows.append(row)
    return write_text(path, _csv_text(FULL_COLUMNS if items is not None else CSV_COLUMNS, rows))


def write_json(reports, path, items=None, counted=()):
    """Write every file's verdict as a JSON list (with whose file it is, given ``items``)."""
    rows = []
    for i, r in enumerate(reports):
        row = asdict(r)
        if items is not None:
            row["student"] = asdict(items[i].student)
            row["counted"] = i in counted
        rows.append(row)
    return write_text(path, json.dumps(rows, indent=1) + "\n")


def write_students(rows, path, points):
    """Write one row per student: name, id, LMS, score, maximum, status, comment, file."""
    return write_text(path, _csv_text(STUDENT_COLUMNS, [
        [row.student.name, row.student.id, row.student.lms, _number(row.score(points)),
         f"{points:g}", row.report.status, row.comment(points), row.submission.relative,
         len(row.items)] for row in rows]))


def canvas_rows(rows):
    """Return the rows Canvas' gradebook import can take: those with a Canvas user id (an
    anonymous submission's name hides it)."""
    return [row for row in rows if row.student.lms == "canvas" and row.student.id.isdigit()]


def write_canvas(rows, path, points, assignment):
    """Write the Canvas gradebook import table for the rows with a Canvas user id."""
    rows = canvas_rows(rows)
    table = [["Points Possible", "", "", "", "", f"{points:g}"]]
    table += [[row.student.name, row.student.id, "", "", "", _number(row.score(points))]
              for row in rows]
    return write_text(path, _csv_text(CANVAS_COLUMNS + [assignment], table))


def write_moodle(rows, path, points, when=None):
    """Write the Moodle grading worksheet for the rows with a Moodle participant id."""
    when = when or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = [row for row in rows if row.student.lms == "moodle"]
    return write_text(path, _csv_text(MOODLE_COLUMNS, [
        [f"Participant {row.student.id}", row.student.name, _number(row.score(points)),
         f"{points:g}", when, row.comment(points)] for row in rows]))


def _safe(name, instead="_"):
    return re.sub(r"[\\/:*?\"<>|\x00-\x1f]", instead, name).strip(" .") or "student"


def feedback_name(row):
    """Return the feedback file's name, in the form the student's LMS files back with them."""
    student, submission = row.student, row.submission
    if student.lms == "moodle":
        # Not "_": Moodle splits the name on it to find the participant id.
        return f"{_safe(student.name, ' ')}_{student.id}_assignsubmission_file_grade-feedback.txt"
    if student.lms == "canvas" and submission.file_id:
        late = "LATE_" if submission.late else ""
        if student.id.startswith("anon_"):
            return f"{late}{student.id}_{submission.file_id}_grade-feedback.txt"
        return f"{_safe(student.name)}_{late}{student.id}_{submission.file_id}_grade-feedback.txt"
    if student.lms == "moodle-team" and student.id:
        return f"{_safe(student.name)}_{student.id}.feedback.txt"
    return f"{_safe(student.name)}.feedback.txt"


def feedback_text(row, points, test_set, rule=identity.RULE):
    """Return a student's feedback: what was graded on what, per-digit scores, grade, verdict."""
    lines = [FEEDBACK_TITLE, "", f"Student: {row.student.label()}",
             f"Test set: {test_set}", ""]
    score = row.score(points)
    lines.append(f"Score: {score:g} of {points:g}" if score is not None
                 else "Score: none (no file could be graded)")
    if len(row.items) > 1:
        lines += ["", f"You handed in {len(row.items)} files. {rule}"]
    for i, (submission, report) in enumerate(row.items):
        counts = " (this one counts)" if i == row.counted and len(row.items) > 1 else ""
        lines += ["", f"File: {submission.relative}{counts}"]
        lines += report.text().splitlines()[1:]
        if report.status == "invalid":
            lines.append("What to do: save the model from the assignment notebook with "
                         "model.save('model.keras'), check it with "
                         "python -m grader model.keras, and hand that file in.")
    return "\n".join(lines) + "\n"


def write_feedback(rows, folder, zip_path, points, test_set):
    """Write one feedback file per student into ``folder``, and all of them into ``zip_path``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"Could not write the feedback files into {folder} ({e}); choose another place with --out")
        return []
    names = {}
    for row in rows:
        name = feedback_name(row)
        # Two names that differ only in characters files cannot hold, or only in case (one
        # file on macOS and Windows).
        if name.lower() in {n.lower() for n in names}:
            name = f"{Path(name).stem}-{len(names)}.txt"
        names[name] = feedback_text(row, points, test_set)
    for stale in folder.glob("*.txt"):  # an earlier run's, for a student no longer here
        if stale.name not in names and our_output(stale):
            stale.unlink()
    for name, text in names.items():
        write_text(folder / name, text)
    try:
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.comment = FEEDBACK_ZIP_COMMENT
            for name, text in names.items():
                zf.writestr(name, text)
    except OSError as e:
        print(f"Could not write {zip_path} ({e})")
        return []
    return list(names)


def write_text(path, text):
    """Write ``text`` to ``path``; return False (saying so) where it cannot be written."""
    path = Path(path)
    try:
        if path.is_symlink():  # replaced, not followed: a link planted in a class folder
            path.unlink()
        # Bytes, not text mode: the CSV text already ends its lines in \r\n, which text mode
        # on Windows would turn into \r\r\n (a blank row after every row).
        path.write_bytes(text.encode("utf-8"))
        return True
    except OSError as e:  # e.g. a read-only folder: the verdicts printed above still stand
        print(f"Could not write {path} ({e}); choose another place with --out, --json or --csv")
        return False


def our_output(path, by_name=True):
    """Whether ``path`` is a table, verdict or feedback an earlier run wrote, whatever its name.

    ``by_name``: whether its name alone (``grades.csv``, ``*.grade.json``) says so, as at the
    top of a graded folder; deeper, in a student's files, only its content does.
    """
    path = Path(path)
    if by_name and (path.name in _OUR_FILES or path.name.endswith(".grade.json")):
        return True
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json", ".txt", ".zip"):
        return False
    try:
        if suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                return zf.comment == FEEDBACK_ZIP_COMMENT
        with open(path, "rb") as f:
            head = f.read(max(map(len, _HEADERS)) + 2)
    except (OSError, zipfile.BadZipFile):
        return False
    if suffix == ".csv":
        first = head.split(b"\r\n")[0].split(b"\n")[0]
        return any(first == h or (h.endswith(b",") and first.startswith(h)) for h in _HEADERS)
    if suffix == ".txt":
        return head.startswith(FEEDBACK_TITLE.encode())
    # What write_json and a single file's verdict (json.dumps(..., indent=1)) write first.
    return head.startswith((b'[\n {\n  "submission": ', b'{\n "submission": '))


# What operating systems leave in a folder that no student handed in: macOS's zip folder of
# resource forks (its "._name" files are hidden anyway) and Windows' thumbnail caches.
SYSTEM_FILES = {"__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini"}


def submissions_in(folder, skipped=None):
    """List the files of a submissions folder (recursively, sorted), skipping hidden files,
    what operating systems leave there (``SYSTEM_FILES``), links and what an earlier run
    wrote; ``skipped`` (a list) gets the links and outputs."""
    folder = Path(folder)
    files = []
    for p in sorted(folder.rglob("*")):
        parts = p.relative_to(folder).parts
        if any(part.startswith(".") or part.lower() in SYSTEM_FILES for part in parts) \
                or not (p.is_file() or p.is_symlink()):
            continue
        if p.is_symlink() or our_output(p, by_name=len(parts) == 1):
            if skipped is not None:
                skipped.append(p)
            continue
        files.append(p)
    return files
