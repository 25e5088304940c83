"""Lesson 03 (`notebooks/03_mask_rcnn_tfhub.ipynb`) runs end to end in quick mode and prints what it says."""

from lessons import check_lesson


def test_the_lesson_runs_and_every_quoted_figure_holds(tmp_path):
    check_lesson("03_mask_rcnn_tfhub.ipynb", tmp_path)
