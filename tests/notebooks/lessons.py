"""Run a lesson notebook end to end in quick mode, once, and check what it printed.

Each lesson has a test file of its own (``test_lesson_NN.py``), so that pytest-xdist's
``--dist loadfile`` runs the notebooks side by side. The notebook is executed with papermill
(the environment's quick mode, data and loopback URLs come from the root ``conftest.py``);
then:

- cells tagged ``nbval-check-output`` must print what their metadata's ``expected_stdout``
  records (the committed notebooks carry no outputs);
- every range a "What you should see" line quotes (``0.30–0.50``) must hold for the number
  that the code cell before it printed: the cell's metadata ``expect`` lists one regular
  expression per range, in the order the line quotes them, each capturing that number from
  the cell's text output.
"""

import re
from pathlib import Path

import nbformat

from maintainer.run_notebooks import CHECKED_TAG, EXPECTED_KEY

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
WYS = "What you should see"
# 0.30–0.50, 60–75, 1.5–3 (an en dash, or a hyphen between two numbers)
RANGE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*[–-]\s*(\d+(?:\.\d+)?)(?![\w.])")


def execute(name, out_dir):
    """Execute notebook ``name`` (a path under notebooks/) in this environment; return it run."""
    import papermill

    source = NOTEBOOKS / name
    target = Path(out_dir) / Path(name).name
    papermill.execute_notebook(str(source), str(target), cwd=str(source.parent),
                               kernel_name="python3", progress_bar=False)
    return nbformat.read(target, as_version=4)


def text_output(cell):
    """Return what a code cell printed as text: stdout and plain-text results."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            parts.append(output.get("text", ""))
        elif output.get("output_type") in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def stdout(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def expectation_after(cells, i):
    """Return the 'What you should see' markdown that follows code cell ``i`` (or "")."""
    j = i + 1
    while j < len(cells) and cells[j].cell_type == "code" and CHECKED_TAG in cells[j].metadata.get("tags", []):
        j += 1
    if j < len(cells) and cells[j].cell_type == "markdown" and WYS in cells[j].source:
        return cells[j].source
    return ""


def expected_ranges(nb):
    """Yield (cell index, expectation text, [(low, high)], [regex]) for cells with ``expect``."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        patterns = cell.metadata.get("expect", [])
        text = expectation_after(nb.cells, i)
        ranges = [(float(a), float(b)) for a, b in RANGE.findall(text)]
        if patterns or ranges:
            yield i, text, ranges, patterns


def check_checked_cells(source, executed):
    """Return the differences between the checked cells' recorded and executed stdout."""
    problems = []
    for committed, ran in zip(source.cells, executed.cells):
        if committed.cell_type == "code" and CHECKED_TAG in committed.metadata.get("tags", []):
            expected = committed.metadata.get(EXPECTED_KEY)
            if expected is None or expected.strip() != stdout(ran).strip():
                problems.append(f"cell {committed.get('id')}: expected\n{expected}\n"
                                f"got\n{stdout(ran)}")
    return problems


def check_expectations(executed):
    """Return every quoted range that the executed notebook's printed number falls outside."""
    problems = []
    for i, text, ranges, patterns in expected_ranges(executed):
        cell = executed.cells[i]
        if len(ranges) != len(patterns):
            problems.append(f"cell {cell.get('id')}: {len(ranges)} ranges quoted, "
                            f"{len(patterns)} patterns in its 'expect' metadata")
            continue
        printed = text_output(cell)
        for (low, high), pattern in zip(ranges, patterns):
            found = re.search(pattern, printed)
            if found is None:
                problems.append(f"cell {cell.get('id')}: {pattern!r} not found in\n{printed}")
                continue
            value = float(found.group(1))
            if not low <= value <= high:
                problems.append(f"cell {cell.get('id')}: printed {value} outside the quoted "
                                f"{low:g}–{high:g} ({pattern!r})")
    return problems


def check_lesson(name, tmp_path):
    """Run lesson ``name`` and assert its checked cells and quoted ranges hold."""
    source = nbformat.read(NOTEBOOKS / name, as_version=4)
    executed = execute(name, tmp_path)
    problems = check_checked_cells(source, executed) + check_expectations(executed)
    assert not problems, f"{name}:\n" + "\n".join(problems)
    return executed
