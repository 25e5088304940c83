"""Benchmark 8: grading a class, ``python -m helpers.grading FOLDER --jobs N``.

Builds a folder of distinct submissions (each a different small FCN, or the solution's
FCN-8, with its own weights, under Canvas-style names), a private test set of 200 images
(as many as M2NIST's test split), and grades the folder with each ``--jobs`` value: wall
time, CPU time (user + sys of the whole process tree, which a shared machine disturbs
less), peak RSS of the largest process, and a check that every job count gave the same
verdicts. It also times the single-file command on a few files (a fresh worker each time:
what grading one file after another costs) and extrapolates both to a class of 200.

    python -m benchmarks.grading                          # 24 small models, --jobs 1 and 2
    python -m benchmarks.grading --files 200 --jobs 2     # a whole class
    python -m benchmarks.grading --kind fcn8              # the solution's FCN-8 instead
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common

CLASS = 200  # a class's size; the aim: graded in <= 5 minutes on 2 cores


def small_fcn(filters, seed):
    """The tests' slim FCN-8 (tests/grading_models.py), ``filters`` wide in its first block."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from grading_models import small_fcn as tests_small_fcn

    return tests_small_fcn(seed, widths=(filters, 2 * filters, 4 * filters, 4 * filters, 4 * filters))


def fcn8(seed):
    """The solution's FCN-8 (2.4 M parameters), as tests/grading/test_model_safety.py builds it."""
    import keras

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "grading"))
    from test_model_safety import solution_fcn8

    keras.utils.set_random_seed(seed)
    return solution_fcn8()


def build_class(folder, count, kind="small"):
    """Save ``count`` distinct submissions into ``folder`` under Canvas names; return their paths."""
    import keras

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        model = small_fcn(8 + 4 * (i % 5), seed=i) if kind == "small" else fcn8(seed=i)
        path = folder / f"student{i:03d}_{10000 + i}_{90000 + i}_model.keras"
        model.save(path)
        paths.append(path)
        keras.backend.clear_session()
    return paths


def measured(command):
    """Run ``command``; return (exit code, wall s, CPU s of its process tree, peak RSS MiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return os.waitstatus_to_exitcode(status), wall, cpu, usage.ru_maxrss / 1024


def grade_folder(folder, url, jobs, out):
    """Grade ``folder`` with ``jobs`` workers into ``out``; return the figures and verdicts."""
    out.mkdir(parents=True)
    code, wall, cpu, peak = measured(
        [sys.executable, "-m", "helpers.grading", str(folder), "--url", url, "--jobs", str(jobs),
         "--csv", str(out / "grades.csv"), "--json", str(out / "grades.json"), "--out", str(out)])
    verdicts = json.loads((out / "grades.json").read_text()) if code == 0 else []
    by_worker = {}
    for v in verdicts:
        if v["resources"].get("data_mib") is not None:
            by_worker.setdefault(v["resources"]["worker"], []).append(v["resources"])
    growth = [max(r["data_mib"] for r in rs) - min(r["data_mib"] for r in rs)
              for rs in by_worker.values()]
    return {"jobs": jobs, "exit": code, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak,
            "files": len(verdicts), "workers": len(by_worker),
            "worker_data_growth_mib": max(growth, default=0.0),
            "files_per_worker": max(map(len, by_worker.values()), default=0),
            "worker_s_per_file": sum(v["resources"].get("seconds", 0) for v in verdicts) / max(1, len(verdicts)),
            "verdicts": {v["submission"]: (v["status"], v["grade"], v["message"]) for v in verdicts}}


def one_file_at_a_time(paths, url):
    """Grade ``paths`` with the single-file command, one after another; return mean (wall, CPU).

    None when ``paths`` is empty (``--single 0``: not timed).
    """
    if not paths:
        return None
    walls, cpus = [], []
    for path in paths:
        _, wall, cpu, _ = measured([sys.executable, "-m", "helpers.grading", str(path), "--url", url,
                                    "--json", str(path) + ".grade.json"])
        walls.append(wall)
        cpus.append(cpu)
    return sum(walls) / len(walls), sum(cpus) / len(cpus)


def report(runs, single, files, kind):
    """Format the figures as a table, with the class-of-200 extrapolation and the aim."""
    rows = []
    for r in runs:
        per_file = r["wall_s"] / files
        rows.append([f"--jobs {r['jobs']}", f"{r['wall_s']:.0f}", f"{r['cpu_s']:.0f}",
                     f"{per_file:.2f}", f"{r['worker_s_per_file']:.2f}", f"{r['peak_rss_mib']:.0f}",
                     f"{r['workers']}; +{r['worker_data_growth_mib']:.0f} MiB over "
                     f"{r['files_per_worker']} files", f"{per_file * CLASS:.0f}"])
    if single is not None:
        wall, cpu = single
        rows.append(["one file per command", f"{wall * files:.0f} (est.)", f"{cpu * files:.0f} (est.)",
                     f"{wall:.2f}", "", "", "1 per file", f"{wall * CLASS:.0f}"])
    same = len({json.dumps(r["verdicts"], sort_keys=True) for r in runs}) == 1
    best = min(r["wall_s"] / files * CLASS for r in runs)
    return "\n".join([
        f"Grading {files} distinct {kind} submissions on a 200-image test set",
        common.table(rows, ["run", "wall s", "CPU s", "s per file", "in worker s/file",
                            "peak RSS MiB", "workers; data memory growth", f"class of {CLASS}, s"]),
        f"Same verdicts with every --jobs value: {'yes' if same else 'NO'}",
        f"Target: a class of {CLASS} in <= 300 s on 2 cores: "
        f"{'met' if best <= 300 else 'NOT met'} ({best:.0f} s extrapolated from the best run)"])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grading", description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=24, help="submissions in the class (default 24)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values to time")
    parser.add_argument("--kind", choices=["small", "fcn8"], default="small")
    parser.add_argument("--single", type=int, default=3, help="files to time one command each")
    args = parser.parse_args(argv)
    from grader import testset

    print(common.machine())
    with common.scratch_dir("course-bench-grading-") as scratch:
        paths = build_class(scratch / "class", args.files, args.kind)
        archive, _, _ = testset.make_private_test_set(scratch / "test-set.zip", 200, seed=0,
                                                      digits="sklearn")
        url = archive.as_uri()
        os.environ["COURSE_DATA_DIR"] = str(scratch / "data")  # the grader's cache, and the workers'
        runs = []
        for jobs in args.jobs:  # each run's figures printed as it ends: a long class can be read early
            runs.append(grade_folder(scratch / "class", url, jobs, scratch / f"jobs-{jobs}"))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "verdicts"}), flush=True)
        single = one_file_at_a_time(paths[:args.single], url)
        text = report(runs, single, args.files, args.kind)
    print(text)
    print(json.dumps({"runs": [{k: v for k, v in r.items() if k != "verdicts"} for r in runs],
                      "single_file": None if single is None else {"wall_s": single[0], "cpu_s": single[1]}}))
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
