"""Pulling functions and exercise blocks out of notebooks."""

import nbformat
import pytest

from maintainer import notebook_code
from maintainer.notebook_code import END, START


def notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_function_cells_maps_each_top_level_function_to_its_cell():
    nb = notebook("!pip install x\ndef skipped(): pass", "def a():\n    def inner(): pass\n\ndef b(): pass",
                  "x = 1", "def a(): return 2")
    cells = notebook_code.function_cells(nb)
    assert set(cells) == {"a", "b"} and cells["a"] == cells["b"] == nb.cells[1].source


def test_define_runs_a_cell_with_keras_at_hand():
    namespace = notebook_code.define("def width(): return layers.Dense(3).units")
    assert namespace["width"]() == 3
    assert notebook_code.define("X = Y + 1", {"Y": 1})["X"] == 2


def test_notebook_function_finds_the_notebooks_model_or_says_it_is_missing():
    assert callable(notebook_code.notebook_function("01_fcn8_camvid.ipynb", "fcn"))
    with pytest.raises(LookupError, match="no function nothing_here"):
        notebook_code.notebook_function("01_fcn8_camvid.ipynb", "nothing_here")


def test_notebook_parameters_reads_the_parameters_cell_in_either_mode():
    quick = notebook_code.notebook_parameters("01_fcn8_camvid.ipynb", quick=True)
    full = notebook_code.notebook_parameters("01_fcn8_camvid.ipynb", quick=False)
    assert (quick["QUICK"], full["QUICK"]) == (True, False)
    assert full["IMAGE_SIZE"] == (192, 256) and quick["IMAGE_SIZE"] != full["IMAGE_SIZE"]


def test_marked_blocks_pairs_the_markers():
    source = f"a\n{START}\nb\n{END}\n  {START}\n  c\n  {END}"
    assert notebook_code.marked_blocks(source) == [(2, 4), (5, 7)]
    with pytest.raises(ValueError, match="unbalanced"):
        notebook_code.marked_blocks(f"{END}\n{START}")
