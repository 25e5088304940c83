"""Lesson 01 (`notebooks/01_fcn8_camvid.ipynb`) runs end to end in quick mode and prints what it says."""

from lessons import check_lesson


def test_the_lesson_runs_and_every_quoted_figure_holds(tmp_path):
    check_lesson("01_fcn8_camvid.ipynb", tmp_path)
