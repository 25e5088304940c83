"""Grade M2NIST segmentation models: the assignment's rules, for learners and instructors.

    python -m helpers.grading model.keras                 # one submission
    python -m helpers.grading submissions/ --jobs 2       # a class's folder (Canvas, Moodle, ...)
    python -m helpers.grading model.keras --url URL       # the test split from another archive
    python -m helpers.grading --make-test-set private.zip # a private test set, for --url

A submission is a ``.keras`` file. It is loaded with Keras ``safe_mode=True`` and no custom
objects, after the checks of ``helpers.grader.safety``: a model carrying serialized Python
code (a ``Lambda`` layer, a lambda activation), a function other than Keras' own losses,
metrics and activations, or a class from outside the Keras modules a plain model's
configuration uses is rejected without running any of it; so is a file that declares more
than a course model can need (zip entries, parameters, weights arrays), before anything is
allocated. The model must map (64, 84, 1) images scaled to [-1, 1] to (64, 84, 11)
per-pixel class scores. It is scored on the course's fixed M2NIST test split (from
``--url``, else ``COURSE_M2NIST_URL``, else the official archive), or on every image of a
private test set, with the course's IoU (``helpers.metrics``): grade = 10 x the sum of the
ten digit IoUs; pass: grade above 60, decided on the grade rounded to 2 decimals as printed.

Every file, a single one included, is graded in a worker process under a time limit
(``--timeout``) and a memory limit (``--memory-limit``), so one that crashes, hangs or
exhausts memory costs only its own verdict (``helpers.grader.workers``). Exit codes for one
submission: 0 pass, 1 fail, 2 invalid submission. For a folder: 0 once every file has a
verdict (in its tables, with a feedback file per student), 2 if the folder holds no files or
is refused before grading (a Moodle team download without ``--moodle-teams``); 2 also for a
wrong command line (argparse's).
Either way, 3 when the grader cannot grade at all: the test data cannot be had, or the
installed Keras is older than 3.11 (its safe_mode can be bypassed, so no submission is
loaded).

This module is the grader's public face, as notebook 4 uses it: ``score_model``, ``grade``,
``passed``, ``PASS_MARK``, ``grade_file`` (in this process) and ``main``. Everything else
is in ``helpers.grader``. Taught in notebook 4.
"""

import sys

from helpers.grader.cli import EXIT, EXIT_CANNOT_GRADE, main
from helpers.grader.limits import MEMORY_LIMIT_GB
from helpers.grader.safety import InvalidSubmission
from helpers.grader.scoring import (DIGITS, INPUT_SHAPE, MIN_KERAS, OUTPUT_SHAPE, PASS_MARK,
                                    CannotGrade, Report, check_keras_version, fixed_test_split,
                                    grade, grade_file, load_submission, passed,
                                    report_for_scores, score_model)
from helpers.grader.tables import submissions_in, write_csv
from helpers.grader.workers import TIMEOUT

__all__ = ["DIGITS", "EXIT", "EXIT_CANNOT_GRADE", "INPUT_SHAPE", "MEMORY_LIMIT_GB", "MIN_KERAS",
           "OUTPUT_SHAPE", "PASS_MARK", "TIMEOUT", "CannotGrade", "InvalidSubmission", "Report",
           "check_keras_version", "fixed_test_split", "grade", "grade_file", "load_submission",
           "main", "passed", "report_for_scores", "score_model", "submissions_in", "write_csv"]

if __name__ == "__main__":
    sys.exit(main())
