"""Generate the assignment's student notebook from its solution notebook.

    python -m helpers.student_notebook           # write notebooks/04_m2nist_assignment.ipynb
    python -m helpers.student_notebook --check   # exit 1 if the committed copy is stale

The solution (``notebooks/solutions/04_m2nist_assignment_solution.ipynb``) is the one
source. In the student copy, every statement between ``### START CODE HERE ###`` and
``### END CODE HERE ###`` becomes a placeholder (``x = None``; a call keeps its keyword
names with ``None`` values), cells tagged ``solution-only`` are dropped, outputs are
cleared, and links and the title point at the student notebook.
"""

import argparse
import ast
import copy
import sys

from helpers.notebook_code import END, START, marked_blocks  # noqa: F401 (END: for callers)
from helpers.run_notebooks import CHECK_MARK, NOTEBOOKS_DIR

SOLUTION = NOTEBOOKS_DIR / "solutions" / "04_m2nist_assignment_solution.ipynb"
STUDENT = NOTEBOOKS_DIR / "04_m2nist_assignment.ipynb"
TITLE_SUFFIX = " (solution)"


def _placeholder(node, lines):
    """Return the placeholder source for one solution statement."""
    indent = lines[node.lineno - 1][: node.col_offset]
    if isinstance(node, ast.Assign):
        targets = " = ".join(ast.unparse(t) for t in node.targets)
        return f"{indent}{targets} = None"
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        call = node.value
        args = ["None"] * len(call.args) + [f"{k.arg}=None" for k in call.keywords if k.arg]
        return f"{indent}{ast.unparse(call.func)}({', '.join(args)})"
    raise ValueError(f"line {node.lineno}: a solution between the markers must be assignments "
                     f"or calls, not {type(node).__name__}: {ast.unparse(node)[:60]}")


def blank_exercises(source):
    """Replace each solution statement between the code markers with its placeholder."""
    lines = source.split("\n")
    blocks = marked_blocks(source)
    tree = ast.parse(source)
    replacements = {}
    for start, end in blocks:
        inside = [n for n in ast.walk(tree) if isinstance(n, ast.stmt)
                  and start < n.lineno and n.end_lineno < end]
        def span(node):
            return (node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)

        outermost = [n for n in inside if not any(
            o is not n and span(o)[0] <= span(n)[0] and span(n)[1] <= span(o)[1] for o in inside)]
        lines_used = [n.lineno for n in outermost]
        if len(set(lines_used)) != len(lines_used):
            raise ValueError(f"line {start + 1}: put each solution statement on its own line")
        if not outermost:
            raise ValueError(f"no solution code between the markers at line {start}")
        for node in outermost:
            replacements[node.lineno] = (node.end_lineno, _placeholder(node, lines))
    out, i = [], 1
    while i <= len(lines):
        if i in replacements:
            last, text = replacements[i]
            out.append(text)
            i = last + 1
        else:
            out.append(lines[i - 1])
            i += 1
    return "\n".join(out)


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
        # The solution's checked outputs prove it passes; the student's cells start empty.
        cell.source = "\n".join(line for line in cell.source.split("\n") if CHECK_MARK not in line)
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
            print(f"{STUDENT} is out of date: run python -m helpers.student_notebook")
            return 1
        print(f"{STUDENT.name} matches {SOLUTION.name}")
        return 0
    STUDENT.write_text(text)
    print(f"Wrote {STUDENT} from {SOLUTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
