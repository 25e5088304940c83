"""Generate the assignment's student notebook from its solution notebook.

    python -m maintainer.student_notebook           # write notebooks/04_m2nist_assignment.ipynb
    python -m maintainer.student_notebook --check   # exit 1 if the committed copy is stale

The solution (``notebooks/solutions/04_m2nist_assignment_solution.ipynb``) is the one
source. In the student copy, everything between ``### START CODE HERE ###`` and
``### END CODE HERE ###`` becomes one placeholder that shows nothing of the answer, not even
its length, as nbgrader does: ``# YOUR CODE HERE`` and ``raise NotImplementedError()`` inside
a function; outside one, where later cells read the names the solution assigns,
``# YOUR CODE HERE`` and ``name = other = None``. Cells tagged ``solution-only`` are dropped,
outputs are cleared, and links and the title point at the student notebook.
"""

import argparse
import ast
import copy
import sys

from maintainer.notebook_code import END, START, marked_blocks  # noqa: F401 (END: for callers)
from maintainer.run_notebooks import CHECKED_TAG, EXPECTED_KEY, NOTEBOOKS_DIR

SOLUTION = NOTEBOOKS_DIR / "solutions" / "04_m2nist_assignment_solution.ipynb"
STUDENT = NOTEBOOKS_DIR / "04_m2nist_assignment.ipynb"
TITLE_SUFFIX = " (solution)"
YOUR_CODE = "# YOUR CODE HERE"
NOT_IMPLEMENTED = "raise NotImplementedError()"


def _assigned_names(statements):
    """Return the names the statements assign at their own level, in order, each once."""
    names = []
    for node in statements:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name) and leaf.id not in names:
                    names.append(leaf.id)
    return names


def _placeholder(tree, start, end, indent):
    """Return the placeholder lines for the block between marker lines ``start`` and ``end``."""
    inside = [n for n in ast.walk(tree) if isinstance(n, ast.stmt)
              and start < n.lineno and n.end_lineno < end]
    if not inside:
        raise ValueError(f"no solution code between the markers at line {start}")
    crossing = [n for n in ast.walk(tree) if isinstance(n, ast.stmt) and not isinstance(
        n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.With, ast.AsyncWith))
        and n.lineno < start < n.end_lineno]
    if crossing:
        raise ValueError(f"line {start}: a marker sits inside a statement; put the markers "
                         "around whole statements")
    last = max(n.end_lineno for n in inside)
    in_function = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.lineno < start and last <= n.end_lineno for n in ast.walk(tree))
    if in_function:
        return [indent + YOUR_CODE, indent + NOT_IMPLEMENTED]
    outermost = [n for n in inside if not any(
        o is not n and o.lineno <= n.lineno and n.end_lineno <= o.end_lineno for o in inside)]
    names = _assigned_names(outermost)
    if not names:
        raise ValueError(f"line {start}: outside a function, the code between the markers "
                         "must assign the names that later cells use")
    return [indent + YOUR_CODE, indent + " = ".join(names) + " = None"]


def blank_exercises(source):
    """Replace the code between each pair of markers with its placeholder."""
    lines = source.split("\n")
    tree = ast.parse(source)
    out, done = [], 0  # ``done``: lines already copied
    for start, end in marked_blocks(source):
        marker = lines[start - 1]
        indent = marker[: len(marker) - len(marker.lstrip())]
        out += lines[done:start]  # up to and including the START marker
        out += _placeholder(tree, start, end, indent)
        done = end - 1  # the END marker is copied next
    return "\n".join(out + lines[done:])


def student_version(solution):
    """Return the student notebook generated from the solution notebook (a NotebookNode)."""
    nb = copy.deepcopy(solution)
    nb.cells = [c for c in nb.cells if "solution-only" not in c.metadata.get("tags", [])]
    solution_path = f"notebooks/solutions/{SOLUTION.name}"
    student_path = f"notebooks/{STUDENT.name}"
    for cell in nb.cells:
        cell.source = cell.source.replace(solution_path, student_path)
        if cell.cell_type != "code":
            continue
        if START in cell.source:
            cell.source = blank_exercises(cell.source)
        # The solution's recorded outputs prove it passes; the student's cells check nothing.
        tags = cell.metadata.get("tags", [])
        if CHECKED_TAG in tags:
            tags.remove(CHECKED_TAG)
        cell.metadata.pop(EXPECTED_KEY, None)
        cell.outputs = []
        cell.execution_count = None
    first = nb.cells[0]
    first.source = first.source.replace(TITLE_SUFFIX, "", 1)
    return nb


def render(nb):
    """Return a notebook as the text nbformat writes."""
    import nbformat

    return nbformat.writes(nb) + "\n"


def main(argv=None):
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the student notebook is out of date")
    args = parser.parse_args(argv)
    text = render(student_version(nbformat.read(SOLUTION, as_version=4)))
    if args.check:
        if not STUDENT.is_file() or STUDENT.read_text() != text:
            print(f"{STUDENT} is out of date: run python -m maintainer.student_notebook")
            return 1
        print(f"{STUDENT.name} matches {SOLUTION.name}")
        return 0
    STUDENT.write_text(text)
    print(f"Wrote {STUDENT} from {SOLUTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
