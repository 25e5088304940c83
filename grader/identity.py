"""Whose file is it: student identities from a folder of submissions, as LMSs write them.

A folder of submissions comes in one of these forms (each file is matched in this order):

- **Moodle**, "Download all submissions": ``<Full Name>_<id>_assignsubmission_file_<file>``
  when downloaded flat, or a folder per student, ``<Full Name>_<id>_assignsubmission_file/``
  (Moodle 4.1 and later; ``..._file_/`` before) holding the files as handed in. ``<id>`` is
  the assignment's participant id, the one its grading worksheet calls "Participant <id>";
  Moodle replaces "_" in names with spaces, so the name never holds one. An assignment with
  **team submissions** is downloaded by group instead, ``<Group name>_<group id>_assign…``
  (``Default group_assign…``, no id, for students in no group): the number is then a group's
  id, not a participant's, which the names alone cannot tell apart; the grader takes that
  form only when told (``--moodle-teams``), and stops at an id-less ``Default group`` name
  without it.
- **Canvas**, "Download Submissions": ``<lastfirst>_<user id>_<file id>_<file name>``, with
  ``LATE_`` (older Canvas: ``late_``) before the user id for a late submission and
  ``anon_<id>`` in place of name and user id when grading is anonymous. ``<lastfirst>`` is
  the sortable name in lower case without spaces or punctuation; ``<file id>`` is the
  uploaded file's id; a file handed in twice under one name gets ``-1``, ``-2`` before its
  extension.
- **A folder per student**, ``<student>/<any file>`` (the student is the first folder), or
  **a file per student**, ``<student>.keras`` (the student is the file's name). An LMS-looking
  *file* name inside a student's folder (``alice/Bob Lee_46_assignsubmission_file_m.keras``)
  stays that student's unless the folder holds such names of several students: an LMS
  download unzipped into a folder. So does a Canvas-looking name among files named after
  students (``alice.keras``, ``smith_2024_1_fcn.keras``).

Several files from one student: each is graded and **the best grade counts** (``RULE``). An
LMS's download holds only each student's latest submission, so its files are all parts of
one attempt; file times after unzipping say nothing reliable about which came last; and
every file's verdict stays in the full table.
"""

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

RULE = ("Several files from one student: each is graded and the best grade counts "
        "(every file's verdict is in the full table).")
_MOODLE = re.compile(r"(?P<name>[^_]+)_(?P<id>\d+)_assignsubmission_(?P<plugin>[a-z]+)"
                     r"(?:_(?P<file>.*))?")
# A team submission of students in no group: Moodle's "Default group", and no id.
_MOODLE_NO_ID = re.compile(r"(?P<name>[^_]+)_assignsubmission_(?P<plugin>[a-z]+)(?:_(?P<file>.*))?")
# Canvas keeps any letter of a name, combining marks included (Devanagari, Thai, decomposed
# accents), which Python's \\w does not match: hence the non-ASCII class beside it.
_NAME = r"(?:\w|[^\x00-\x7f\s])+?"
_CANVAS = re.compile(rf"(?P<name>{_NAME})_(?:(?P<late>late)_)?(?P<id>\d+)_(?P<file_id>\d+)_(?P<file>.+)",
                     re.IGNORECASE)
# Canvas' online-text and website-URL entries: no file id, nothing to grade.
_CANVAS_ENTRY = re.compile(rf"(?:(?P<name>{_NAME})_(?:(?P<late>late)_)?(?P<id>\d+)"
                           r"|(?:late_)?anon_[A-Za-z0-9]+)_(?:text|link)\.html?", re.IGNORECASE)
_CANVAS_ANONYMOUS = re.compile(r"(?:(?P<late>late)_)?anon_(?P<id>[A-Za-z0-9]+)_(?P<file_id>\d+)_"
                               r"(?P<file>.+)", re.IGNORECASE)


@dataclass(frozen=True)
class Student:
    """A student as the folder names them."""

    key: str  # unique in a class: "canvas:12345", "moodle:678", "moodle-group:17", "name:alice"
    name: str  # "smithjane" (Canvas), "Jane Smith" (Moodle), "Team Rocket" (a Moodle team), "alice"
    lms: str = ""  # "canvas", "moodle", "moodle-team", or "" for a folder or file name
    id: str = ""  # Canvas user id ("anon_..." when anonymous), Moodle participant or group id

    def label(self):
        """Return the student as a person reads it: "Jane Smith (Moodle participant 678)"."""
        what = {"canvas": "Canvas user", "moodle": "Moodle participant",
                "moodle-team": "Moodle group"}.get(self.lms)
        return f"{self.name} ({what} {self.id})" if what and self.id else self.name


@dataclass(frozen=True)
class Submission:
    """One handed-in file and whose it is."""

    path: Path
    relative: str  # its path in the folder, with "/"
    student: Student
    file_id: str = ""  # Canvas: the uploaded file's id, which its re-upload matches on
    late: bool = False  # Canvas marked it late


def not_a_file_submission(relative):
    """Return what an LMS entry that is not a handed-in file is ("online text"…), or None.

    Moodle's other submission plugins (``assignsubmission_onlinetext``…) and Canvas'
    online-text and URL entries (``<name>_<id>_text.html``, ``_link.html``) are part of a
    download but hold no model: the grader lists them and grades the files beside them.
    """
    parts = PurePosixPath(relative).parts
    for part in parts:
        found = _moodle(part, teams=True)
        if found:
            return None if found["plugin"] == "file" else f"Moodle {found['plugin']} entry"
    if _CANVAS.fullmatch(parts[-1]):  # a file id: a handed-in file, whatever it is called
        return None
    found = _CANVAS_ENTRY.fullmatch(parts[-1])
    return f"Canvas {parts[-1].rsplit('_', 1)[-1].split('.')[0]} entry" if found else None


def _moodle(part, teams):
    """Match a Moodle name, ``<name>_<id>_assignsubmission_<plugin>…``; with ``teams``, also a
    team's without an id."""
    return _MOODLE.fullmatch(part) or (_MOODLE_NO_ID.fullmatch(part) if teams else None)


def moodle_team_name(relatives):
    """Return the first id-less Moodle name (``Default group_assignsubmission_file``) among the
    paths ``relatives``, or None: the sign of a download of team submissions."""
    for relative in relatives:
        for part in PurePosixPath(relative).parts:
            if _MOODLE_NO_ID.fullmatch(part):
                return part
    return None


def identify(relative, teams=False):
    """Return (Student, Canvas file id, late) for a file at ``relative`` (a path in the folder);
    ``teams``: Moodle's names are of groups (team submissions), not of participants."""
    parts = PurePosixPath(relative).parts
    for part in parts:
        found = _moodle(part, teams)
        if found:
            number = found.groupdict().get("id") or ""
            if teams:  # a group: its id, or its name where Moodle gives none
                return (Student(f"moodle-group:{number or found['name']}", found["name"],
                                "moodle-team", number), "", False)
            return Student(f"moodle:{number}", found["name"], "moodle", number), "", False
    found = _CANVAS_ANONYMOUS.fullmatch(parts[-1])
    if found:
        user = f"anon_{found['id']}"
        return Student(f"canvas:{user}", user, "canvas", user), found["file_id"], bool(found["late"])
    found = _CANVAS.fullmatch(parts[-1])
    if found:
        return (Student(f"canvas:{found['id']}", found["name"], "canvas", found["id"]),
                found["file_id"], bool(found["late"]))
    name = parts[0] if len(parts) > 1 else PurePosixPath(parts[0]).stem
    return Student(f"name:{name}", name), "", False


def _named_by_file(relative, student):
    """Whether the LMS name is the file's own, in a folder that is neither the LMS's own nor
    named after that student."""
    folders = relative.parts[:-1]
    if not folders or student.lms == "":
        return False
    if any(_moodle(p, teams=True) for p in folders):
        return False  # Moodle's folder per student
    return student.name.lower() not in {part.lower() for part in folders}


def submissions(folder, files, teams=False, notes=None):
    """Return a Submission for each file in ``files`` (paths under ``folder``), in their order;
    ``teams``: a Moodle download of team submissions (see ``identify``); ``notes`` (a list)
    gets each file whose LMS-looking name the rule below gave to its folder instead.

    A Canvas- or Moodle-looking file name inside a subfolder counts as the LMS's only where
    that folder holds such names of several students (a download unzipped into a folder;
    Canvas: each file with its own file id), or is named after the student; otherwise the
    folder is the student's, and ``fcn_8_20_epochs.keras`` in it is just a file name. The same
    holds for a Canvas-looking name at the top, beside ``.keras`` files named after students
    (``alice.keras``, ``smith_2024_1_fcn.keras``): there it is the student ``smith_2024_1_fcn``.
    """
    folder = Path(folder)
    found = []
    for path in files:
        relative = PurePosixPath(shown(Path(path).relative_to(folder)))
        student, file_id, late = identify(relative, teams)
        by_file = _named_by_file(relative, student)
        found.append([Path(path), relative, student, file_id, late, by_file])
    # A Canvas download holds only Canvas names. Beside files named after students
    # ("alice.keras"), a Canvas-looking name ("smith_2024_1_fcn.keras") is a student's own
    # unless the folder holds such names of several students, as in a subfolder.
    if any(len(item[1].parts) == 1 and item[2].lms == "" and item[1].suffix.lower() == ".keras"
           for item in found):
        for item in found:
            # "anon_<id>_<file id>_…" is Canvas's alone: no student names a file so.
            if len(item[1].parts) == 1 and item[2].lms == "canvas" and not item[2].id.startswith("anon_"):
                item[5] = True
    seen = {}  # per folder and LMS: the ids, names and Canvas file ids its files' names carry
    for _, relative, student, file_id, _, by_file in found:
        if by_file:
            key = (relative.parent, student.lms)
            ids, names, file_ids = seen.setdefault(key, (set(), set(), []))
            ids.add(student.id)
            names.add(student.name.lower())
            file_ids.append(file_id)
    result = []
    for path, relative, student, file_id, late, by_file in found:
        if by_file:
            ids, names, file_ids = seen[(relative.parent, student.lms)]
            # An LMS download: several students, and (Canvas) every file its own: file ids are
            # unique across Canvas. "fcn_8_20_epochs.keras" and "fcn_16_20_epochs.keras" share
            # a "file id" and a name: one student's own file names.
            own_ids = student.lms != "canvas" or len(set(file_ids)) == len(file_ids)
            if not (len(ids) >= 2 and len(names) >= 2 and own_ids):
                if notes is not None:
                    notes.append(f"{relative.as_posix()} ({student.label()} by its name)")
                name = relative.parts[0] if len(relative.parts) > 1 else relative.stem
                student, file_id, late = Student(f"name:{name}", name), "", False
        result.append(Submission(path, relative.as_posix(), student, file_id, late))
    return result


def printable(text):
    """Return ``text`` with what cannot be encoded as UTF-8 replaced by U+FFFD: the surrogates
    by which Python keeps a file name that is not valid UTF-8 (from a zip unpacked without
    its UTF-8 flag), which no table or terminal can take."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def shown(path):
    """Return a path as text that can be printed and written (see ``printable``)."""
    return printable(PurePosixPath(path).as_posix())


def best(reports):
    """Return the index of the report that counts among one student's: the best grade, a graded
    file before an invalid one, the first in the folder's order on a tie."""
    return max(range(len(reports)), key=lambda i: (reports[i].status != "invalid",
                                                    reports[i].grade or 0.0, -i))


def one_student_warning(items):
    """Return a warning when every file of several went to one student named by a folder, or None.

    That is what a folder of submissions wrapped in one more folder looks like.
    """
    keys = {s.student.key for s in items}
    if len(items) > 1 and len(keys) == 1 and next(iter(keys)).startswith("name:"):
        name = items[0].student.name
        return (f"Warning: all {len(items)} files were attributed to one student, {name!r}, the "
                f"folder they are in. If {name}/ holds the class's files, grade that folder.")
    return None
