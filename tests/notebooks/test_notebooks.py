"""Notebooks are source code: clean, parameterised, and using helpers instead of copies."""

import ast
import re
import tomllib

import nbformat
import pytest

from maintainer import run_notebooks
from helpers.config import REPO_DIR

NOTEBOOKS = run_notebooks.find_notebooks()
REPO_URL = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def helper_functions():
    names = set()
    for path in (REPO_DIR / "helpers").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                names.add(node.name)
    return names


def test_the_course_has_its_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS][:1] == ["01_"]


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def nb(request):
    notebook = nbformat.read(request.param, as_version=4)
    notebook.path = request.param
    return notebook


def test_no_cell_carries_outputs_and_checked_cells_record_what_they_print(nb):
    student = run_notebooks.is_student_notebook(nb.path)
    for cell in code_cells(nb):
        assert not cell.outputs and cell.execution_count is None, cell.source[:60]
        recorded = cell.metadata.get(run_notebooks.EXPECTED_KEY)
        if run_notebooks.is_checked(cell):
            assert not student, "the student copy checks nothing"
            assert recorded and recorded.strip(), f"checked cell, nothing recorded: {cell.source[:60]}"
        else:
            assert recorded is None, f"a record on an unchecked cell: {cell.source[:60]}"


def test_one_parameters_cell_near_the_top_with_epochs_if_it_trains(nb):
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert tagged[0] < 10
    # A notebook that trains exposes its epochs; one that only runs a pretrained model
    # (notebook 3) has no EPOCHS to set.
    if any(re.search(r"\.fit\(", c.source) for c in code_cells(nb)):
        assert re.search(r"^EPOCHS = ", nb.cells[tagged[0]].source, re.M)


def test_one_guarded_colab_cell_cloning_this_repository(nb):
    colab = [c for c in code_cells(nb) if "google.colab" in c.source]
    assert len(colab) == 1
    assert 'if "google.colab" in sys.modules:' in colab[0].source
    assert REPO_URL in colab[0].source


def test_badges_point_at_this_notebook_in_this_repository(nb):
    slug = REPO_URL.removeprefix("https://github.com/")
    path = nb.path.relative_to(REPO_DIR).as_posix()
    assert f"https://colab.research.google.com/github/{slug}/blob/main/{path}" in nb.cells[0].source


@pytest.mark.parametrize("notebook, name", [("01_fcn8_camvid.ipynb", "fcn"),
                                            ("02_unet_pets.ipynb", "unet"),
                                            ("03_mask_rcnn_tfhub.ipynb", "mask_rcnn")])
def test_each_lesson_shows_its_figure_and_links_it_for_colab(notebook, name):
    # Colab loads no picture beside the notebook: the markdown shows the committed PNG by its
    # absolute URL in this repository (GitHub and Colab alike), derived from the repository URL
    # as the badges are, and links the file beside the notebook for offline reading.
    owner_repo = REPO_URL.removeprefix("https://github.com/")
    raw = f"https://raw.githubusercontent.com/{owner_repo}/main/notebooks/figures/{name}.png"
    nb = nbformat.read(REPO_DIR / "notebooks" / notebook, as_version=4)
    shown = [c.source for c in nb.cells if c.cell_type == "markdown" and f"]({raw})" in c.source]
    assert len(shown) == 1 and (REPO_DIR / "notebooks" / "figures" / f"{name}.png").is_file()
    assert shown[0].lstrip().startswith("#") and f"![" in shown[0]
    assert f"](figures/{name}.png)" in shown[0]  # offline


def test_no_shell_downloads_installs_or_tmp_paths(nb):
    for cell in code_cells(nb):
        assert not re.search(r"^\s*[!%]\s*(wget|curl|gdown|pip)", cell.source, re.M), cell.source[:80]
        assert "/tmp" not in cell.source


def test_notebooks_do_not_redefine_helpers(nb):
    defined = {node.name for c in code_cells(nb) if "google.colab" not in c.source
               for node in ast.walk(ast.parse(c.source))
               if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert not defined & helper_functions()


def test_strip_outputs_clears_every_cell_and_refresh_records_the_checked_stdout(tmp_path):
    nb = nbformat.v4.new_notebook()
    plain = nbformat.v4.new_code_cell("print(1)", execution_count=3)
    plain.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    checked = nbformat.v4.new_code_cell("print(2)", execution_count=4)
    checked.metadata["tags"] = ["nbval-check-output"]
    checked.outputs = [nbformat.v4.new_output("stream", text="2\n")]
    nb.cells = [plain, checked]
    nbformat.write(nb, tmp_path / "executed.ipynb")
    run_notebooks.strip_outputs(nb)
    assert plain.outputs == [] and plain.execution_count is None
    assert checked.outputs == [] and checked.execution_count is None
    nbformat.write(nb, tmp_path / "source.ipynb")
    run_notebooks.refresh_checked(tmp_path / "source.ipynb", tmp_path / "executed.ipynb")
    plain, checked = nbformat.read(tmp_path / "source.ipynb", as_version=4).cells
    assert checked.metadata[run_notebooks.EXPECTED_KEY] == "2\n" and not checked.outputs
    assert run_notebooks.EXPECTED_KEY not in plain.metadata and not plain.outputs


def setup_cell(nb):
    return code_cells(nb)[0]


def test_every_notebook_starts_with_the_same_short_collapsed_setup_cell():
    sources = {path.name: setup_cell(nbformat.read(path, as_version=4)).source for path in NOTEBOOKS}
    assert len(NOTEBOOKS) >= 5 and "04_m2nist_assignment.ipynb" in sources
    assert len(set(sources.values())) == 1, "the set-up cells differ: copy one to the others"
    source = next(iter(sources.values()))
    assert source.startswith("#@title ") and 'display-mode: "form"' in source.splitlines()[0]
    assert "environment.colab_setup(" in source and len(source.splitlines()) <= 20


def test_the_environment_check_runs_right_after_the_setup_cell(nb):
    check = code_cells(nb)[1].source
    assert f'environment.check("{nb.path.name[:2]}")' in check
    assert len(check.splitlines()) <= 3


def test_no_cell_is_longer_than_25_lines(nb):
    # Text cells too: a screen of reading at a time, split at a paragraph.
    for cell in nb.cells:
        assert len(cell.source.splitlines()) <= 25, (cell.cell_type, cell.source[:80])


def test_notebook_2s_unet_builds_from_its_block_cells():
    from maintainer import notebook_code

    unet = notebook_code.notebook_function("02_unet_pets.ipynb", "unet")
    model = unet((32, 32, 3), 3, 4, 2, 0.0)
    assert model.output_shape == (None, 32, 32, 3)


# A cell that prints or draws a result (or runs an exercise's check)...
SHOWS_A_RESULT = re.compile(r"\bprint\(|plt\.show\(|\.summary\(|display\(|assignment\.check_|"
                            r"viz\.(?:show|plot|prediction|epoch|detection|crops)\w*\(|_browser\(")


def test_every_cell_that_shows_a_result_has_a_what_you_should_see_line(nb):
    # ...has its expected outcome in the markdown right after it, or right after the checked
    # cells (tagged nbval-check-output) that directly follow it; a section's closing check may have
    # it in the "## Check" text just before it.
    missing = []
    cells = nb.cells
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or cell.source.startswith("#@title") or not SHOWS_A_RESULT.search(cell.source):
            continue
        j = i + 1
        while j < len(cells) and cells[j].cell_type == "code" and run_notebooks.is_checked(cells[j]):
            j += 1
        after = cells[j].source if j < len(cells) and cells[j].cell_type == "markdown" else ""
        before = cells[i - 1].source if cells[i - 1].cell_type == "markdown" else ""
        if "What you should see" not in after and not (
                before.startswith("## Check") and "What you should see" in before):
            missing.append(cell.get("id", i))
    assert not missing, f"{nb.path.name}: no 'What you should see' for cells {missing}"


def markdown_words(nb):
    return sum(len(c.source.split()) for c in nb.cells if c.cell_type == "markdown")


def test_each_lesson_is_at_a_learners_length():
    # Notebooks 1-3 and the assignment's student copy: at most 2,800 words of prose each,
    # 10,000 in all (the original course's labs: 640-2,012 each).
    counts = {p.name: markdown_words(nbformat.read(p, as_version=4))
              for p in sorted(run_notebooks.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))}
    assert len(counts) == 4
    assert all(n <= 2800 for n in counts.values()) and sum(counts.values()) <= 10000, counts


def test_what_you_should_see_is_one_short_line_and_every_figure_it_quotes_is_checked(nb):
    from lessons import RANGE, WYS, expected_ranges

    problems = []
    for cell in nb.cells:
        if cell.cell_type != "markdown" or WYS not in cell.source:
            continue
        for paragraph in cell.source.split("\n\n"):
            if WYS not in paragraph:
                continue
            line = " ".join(paragraph.split())
            if not line.startswith(f"**{WYS}:**") or len(line.split()) > 40:
                problems.append(f"not one short '**{WYS}:**' line: {line[:120]}")
            # Every decimal it quotes sits in a low–high range that the lesson test checks.
            loose = re.findall(r"\d+\.\d+", RANGE.sub("", line))
            if loose:
                problems.append(f"figures outside a checked range {loose}: {line[:120]}")
    for i, text, ranges, patterns in expected_ranges(nb):
        if len(ranges) != len(patterns):
            problems.append(f"cell {nb.cells[i].get('id')}: {len(ranges)} ranges, "
                            f"{len(patterns)} 'expect' patterns")
    assert not problems, f"{nb.path.name}:\n" + "\n".join(problems)
