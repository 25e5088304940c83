"""Lesson 04's solution (`notebooks/solutions/04_m2nist_assignment_solution.ipynb`) runs end to
end in quick mode and prints what it says (the student copy: tests/notebooks/test_assignment.py)."""

from lessons import check_lesson


def test_the_solution_runs_and_every_quoted_figure_holds(tmp_path):
    check_lesson("solutions/04_m2nist_assignment_solution.ipynb", tmp_path)
