"""Lesson 02 (`notebooks/02_unet_pets.ipynb`) runs end to end in quick mode and prints what it says."""

from lessons import check_lesson


def test_the_lesson_runs_and_every_quoted_figure_holds(tmp_path):
    check_lesson("02_unet_pets.ipynb", tmp_path)
