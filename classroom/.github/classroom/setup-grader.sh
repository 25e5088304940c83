#!/usr/bin/env bash
# Sets up the M2NIST grader in .grader/venv for the autograding workflow: exactly the packages
# it needs on a CPU, at the course's pinned versions (requirements-grader.txt), and the grader
# from the course repository at COURSE_REF. Run by the workflow's first grading step, from the
# repository's root; hidden folders (.grader/) are never graded.
set -euo pipefail

# The course repository and the tag or commit whose grader grades this assignment: set it
# to the one you graded your reference model with, so that a later change cannot move grades.
COURSE_REPOSITORY="https://github.com/segmentation-course/segmentation-course"
COURSE_REF="main"

python3 -m venv .grader/venv
.grader/venv/bin/python -m pip install --prefer-binary -r .github/classroom/requirements-grader.txt
# The grader itself, without its dependencies (the notebooks' packages): those above suffice.
.grader/venv/bin/python -m pip install --no-deps "git+${COURSE_REPOSITORY}@${COURSE_REF}"
.grader/venv/bin/python -c 'import grader.classroom, keras; print("grader ready: Keras", keras.__version__)'
