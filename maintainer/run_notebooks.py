"""Execute the course notebooks headlessly and keep executed copies.

    python -m maintainer.run_notebooks                 # all notebooks, quick mode
    python -m maintainer.run_notebooks --full 01       # notebook 01 on the real data
    python -m maintainer.run_notebooks -p EPOCHS 5     # override a parameters-cell knob

Executed copies go to ``executed/`` (git-ignored). The committed notebooks carry no outputs.
A cell whose printed output the tests check is tagged ``nbval-check-output`` and keeps what it
must print in its metadata (``EXPECTED_KEY``, invisible to learners); maintainers refresh those
with ``--refresh-checked``.
"""

import argparse
import ast
import os
import sys
import time
from pathlib import Path

from helpers.config import REPO_DIR

NOTEBOOKS_DIR = REPO_DIR / "notebooks"
CHECKED_TAG = "nbval-check-output"
EXPECTED_KEY = "expected_stdout"  # a checked cell's metadata: what it must print


def is_checked(cell):
    """Return True for a code cell whose printed output the tests compare."""
    return cell.cell_type == "code" and CHECKED_TAG in cell.metadata.get("tags", [])


def find_notebooks(selectors=()):
    """Return the course notebooks (and solutions) whose file names start with any of ``selectors``."""
    notebooks = (sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
                 + sorted((NOTEBOOKS_DIR / "solutions").glob("[0-9][0-9]_*.ipynb")))
    if selectors:
        notebooks = [p for p in notebooks if any(p.name.startswith(s) for s in selectors)]
    return notebooks


def is_student_notebook(path):
    """Return True for an assignment notebook generated from a solution (its exercises are blank)."""
    return (NOTEBOOKS_DIR / "solutions" / f"{Path(path).stem}_solution.ipynb").is_file()


def strip_outputs(nb):
    """Remove every cell's outputs and execution count (checked cells keep ``EXPECTED_KEY``)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    nb.metadata.pop("papermill", None)
    return nb


def refresh_checked(source, executed):
    """Record what the checked cells of an executed notebook printed in its source's metadata."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    done = nbformat.read(executed, as_version=4)
    by_source = {c.source: c for c in done.cells if c.cell_type == "code"}
    for cell in nb.cells:
        if is_checked(cell):
            # Library log lines on stderr vary by machine; the tests compare stdout.
            cell.metadata[EXPECTED_KEY] = "".join(
                o.get("text", "") for o in by_source[cell.source].outputs
                if o.get("output_type") == "stream" and o.get("name") == "stdout")
    nbformat.write(strip_outputs(nb), source)


def _value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook name prefixes, e.g. 01 (default: all)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="small generated data (default)")
    mode.add_argument("--full", dest="quick", action="store_false", help="the real datasets")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="override a parameters-cell variable")
    parser.add_argument("--output", default=str(REPO_DIR / "executed"), help="folder for executed copies")
    parser.add_argument("--refresh-checked", action="store_true",
                        help="copy the checked cells' outputs back into the source notebooks")
    args = parser.parse_args(argv)

    import papermill

    os.environ["COURSE_QUICK"] = "1" if args.quick else "0"
    parameters = {name: _value(value) for name, value in args.parameter}
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = find_notebooks(args.notebooks)
    for skipped in [p for p in notebooks if is_student_notebook(p)]:
        print(f"Skipping {skipped.name}: its exercises are blank; run its solution instead")
        notebooks.remove(skipped)
    if not notebooks:
        parser.error(f"no notebook in {NOTEBOOKS_DIR} matches {args.notebooks}")
    failed = []
    for source in notebooks:
        target = out_dir / source.name
        start = time.time()
        print(f"Running {source.name} ({'quick' if args.quick else 'full'} mode) -> {target}")
        try:
            papermill.execute_notebook(str(source), str(target), parameters=parameters,
                                       cwd=str(source.parent), kernel_name="python3",
                                       progress_bar=False)
        except papermill.PapermillExecutionError as e:
            failed.append(source.name)
            print(f"  FAILED after {time.time() - start:.0f} s: {e.ename}: {e.evalue}")
            continue
        print(f"  done in {time.time() - start:.0f} s")
        if args.refresh_checked:
            refresh_checked(source, target)
            print(f"  refreshed the checked outputs of {source.name}")
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
