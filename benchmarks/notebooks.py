"""Benchmarks 3 and 4 (part): wall time and peak memory of the quick-mode test suite.

    python -m benchmarks.notebooks                       # the whole suite, as CI runs it
    python -m benchmarks.notebooks tests/notebooks/test_lesson_01.py   # some test paths only

Runs ``python -m pytest`` once (quick mode, as README says) and reports:

- the suite's wall time;
- each notebook's time (its end-to-end test, ``tests/notebooks/test_lesson_NN.py``, from
  pytest's JUnit report), and the other tests' time per test file;
- peak memory: the largest single process (``ru_maxrss`` of the reaped children: pytest or a
  notebook kernel) and the largest total RSS of the whole process tree at once (sampled every
  0.2 s from /proc on Linux).

Targets on 2 cores: each notebook <= 3 min; the suite <= 6 min, never over 10.
"""

import argparse
import os
import re
import resource
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_LIMIT_S = 180
SUITE_LIMIT_S = 360
# The test that runs a lesson end to end: its time is the notebook's.
LESSON_TEST = re.compile(r"(^|/)test_lesson_\d\d\.py$")


def _tree_rss_mib(pid):
    """Return the total RSS of ``pid`` and its descendants in MiB (0 where /proc is missing)."""
    children = defaultdict(list)
    rss = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            proc = int(stat.parent.name)
            children[int(fields[1])].append(proc)
            rss[proc] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        proc = todo.pop()
        total += rss.get(proc, 0)
        todo.extend(children.get(proc, []))
    return total / 2**20


def run_measured(command, cwd=ROOT, env=None):
    """Run a command; return (exit code, wall seconds, largest process MiB, largest tree MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env)
    peak_tree = 0.0
    done = threading.Event()

    def sample():
        nonlocal peak_tree
        while not done.wait(0.2):
            peak_tree = max(peak_tree, _tree_rss_mib(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = process.wait()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return code, wall, largest, peak_tree


def times_by_file(junit_xml):
    """Return {test file: seconds} from a pytest JUnit report."""
    totals = defaultdict(float)
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        name = case.get("file") or case.get("classname", "?")  # "file": junit_family=xunit1
        totals[name] += float(case.get("time", 0))
    return dict(totals)


def report(code, wall, largest, tree, per_file):
    """Return the benchmark's printed report."""
    from benchmarks import common

    notebooks = {k: v for k, v in per_file.items() if LESSON_TEST.search(k)}
    others = {k: v for k, v in per_file.items() if k not in notebooks}
    rows = [[Path(k).name, f"{v:.0f}", "ok" if v <= NOTEBOOK_LIMIT_S else "OVER 3 min"]
            for k, v in sorted(notebooks.items())]
    rows += [[k, f"{v:.0f}", ""] for k, v in sorted(others.items())]
    slow = [k for k, v in notebooks.items() if v > NOTEBOOK_LIMIT_S]
    return "\n".join([
        f"Quick-mode test suite: exit code {code}, wall time {wall:.0f} s "
        f"({'within' if wall <= SUITE_LIMIT_S else 'OVER'} the 6 min target)",
        f"Machine: {common.machine()}",
        common.table(rows, ["test file", "seconds", "target"]),
        f"Peak RSS: largest process {largest:.0f} MiB; whole process tree at once {tree:.0f} MiB",
        f"Target each notebook <= 3 min: {'met' if not slow else 'NOT met: ' + ', '.join(slow)}; "
        f"suite <= 6 min: {'met' if wall <= SUITE_LIMIT_S else 'NOT met'}",
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="test paths for pytest (default: the whole suite)")
    args = parser.parse_args(argv)

    from benchmarks import common

    with common.scratch_dir() as folder:
        junit = folder / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={junit}", "-o", "junit_family=xunit1", *args.paths]
        code, wall, largest, tree = run_measured(command)
        per_file = times_by_file(junit) if junit.exists() else {}
    print(report(code, wall, largest, tree, per_file))
    return {"exit_code": code, "wall_s": wall, "largest_rss_mib": largest, "tree_rss_mib": tree,
            "per_file_s": per_file}


if __name__ == "__main__":
    if not __package__:  # run as a file: make `benchmarks` and `helpers` importable
        sys.path.insert(0, str(ROOT))
    main()
