"""Grading workers: processes that start TensorFlow once and grade file after file, each
file under a time and a memory limit, so that no submission can hang or exhaust the machine.

Every grading path uses them, one file or a class (``--jobs N`` of them at once). The main
process never imports TensorFlow: it hands a worker one file at a time and waits for its
verdict. A worker

- caps its own memory (``RLIMIT_DATA``, ``grader.limits``) before it imports
  TensorFlow, so a file that needs more is refused an allocation and gets the verdict "ran
  out of its memory limit";
- is killed when a file takes longer than the time limit, and replaced; a crash (a signal,
  an abort in native code) likewise costs only that file's verdict, whose message is the
  end of what the worker wrote while grading it, without TensorFlow's log lines;
- hides any GPU from TensorFlow: grading 200 test images runs on the CPU in seconds, and a
  GPU is often held by the notebook that trained the model.

**What "each file under its memory limit" means for a reused worker.** The limit is the
worker process's, and a worker that has graded files holds more memory than a fresh one
(TensorFlow's caches, a fragmented heap; measured: +140 MiB after its first file, then a
few MiB a file). So every file may use the limit minus what the worker holds when the file
starts, and two rules keep that fair: a worker whose memory after a file has grown by more
than ``RECYCLE_GROWTH_MIB`` since its first file is replaced before the next one, and a file
that runs out of memory (or crashes) in a worker that had graded others is graded again in a
fresh worker, whose verdict stands. A memory verdict therefore always comes from a fresh
worker, exactly as if every file had a process of its own.
"""

import argparse
import gc
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers import config, environment
from grader import limits, scoring, testset
from grader.safety import size_text

TIMEOUT = 600  # seconds one submission may take
START_TIMEOUT = 300  # seconds a worker may take to import TensorFlow (slow on a busy machine)
RECYCLE_GROWTH_MIB = 256
EXIT_CANNOT_GRADE = 3
# Log lines a verdict should not carry: TensorFlow's C++ info and warning lines, Python-side
# TensorFlow warnings (retracing), the start-up and runtime lines the notebooks hide from
# learners (helpers.environment's patterns, CUDA's "no GPU" lines included: workers run on the
# CPU), and the lines that follow the CPU allocator's out-of-memory warning.
_NOISE = re.compile(r"[IW]\d{4} \d\d:\d\d:|WARNING:tensorflow:|"
                    f"(?:.*(?:{environment.session_noise(gpu_attached=False).pattern}))|"
                    r"If the cause is memory fragmentation|Current allocation summary follows")


def _tail(text, size=300):
    """Return the end of a worker's output as one line, without log noise, cut at a word."""
    kept = " ".join(" ".join(line for line in text.splitlines() if not _NOISE.match(line)).split())
    if len(kept) <= size:
        return kept
    cut = kept[-size:]
    return cut[cut.find(" ") + 1:] if " " in cut else cut


def crash_message(returncode, output, memory_limit):
    """Return the verdict's message for a worker that died on a file, from what it wrote."""
    if limits.says_out_of_memory(output):  # e.g. std::bad_alloc aborted the process
        return limits.memory_message(memory_limit)
    tail = _tail(output)
    tail = f": {tail}" if tail else ""  # it may have written nothing but log lines
    if returncode < 0 and memory_limit:
        # Native code that finds no memory often crashes instead of saying so.
        return (f"the grader's process was killed by signal {-returncode} on this file "
                f"(possibly out of its memory limit of {size_text(memory_limit)}){tail}")
    return f"the grader's process died on this file (exit code {returncode}){tail}"


@dataclass
class Task:
    """One file to grade: its place in the caller's list, its path and the name its verdict shows."""

    index: int
    path: Path
    name: str
    retry: bool = False  # graded again in a fresh worker after a memory or crash verdict


class Worker:
    """One grading process and the pipes to it (used by Pool)."""

    def __init__(self, pool, number):
        self.number = number
        self.scratch = pool.scratch / f"worker-{number}"
        self.scratch.mkdir()
        self.log = open(self.scratch / "output", "w+b")
        command = [*pool.command, "--test-set", str(pool.test_file),
                   "--memory-limit", str(pool.memory_limit)]
        env = {**os.environ, **pool.env,
               # Its temporary files (a stripped copy of the submission) go in this folder,
               # which is removed even when the worker is killed mid-load.
               "TMPDIR": str(self.scratch), "TEMP": str(self.scratch), "TMP": str(self.scratch),
               "PYTHONPATH": os.pathsep.join([str(config.PACKAGE_DIR.parent),
                                              os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        # Its output goes to a file, not to this process's memory; only the end is read back.
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, env=env, cwd=self.scratch)
        self.task = None
        self.ready = False
        self.graded = 0
        self.first_data_mib = None
        self.deadline = time.monotonic() + START_TIMEOUT
        self.output_start = 0
        self.reader = threading.Thread(target=self._read, args=(pool.messages,), daemon=True)
        self.reader.start()

    def _read(self, messages):
        for line in self.process.stdout:
            messages.put((self, line))
        messages.put((self, None))

    def assign(self, task, timeout):
        self.task = task
        self.output_start = os.fstat(self.log.fileno()).st_size
        self.deadline = time.monotonic() + timeout
        request = {"path": os.path.abspath(task.path), "name": task.name}
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except OSError:
            pass  # it has just died: its reader reports that, and the task is handled there

    def output(self, start=0, size=64 << 10):
        """Return what the worker wrote since ``start`` (its last ``size`` bytes) as text."""
        end = os.fstat(self.log.fileno()).st_size
        with open(self.log.name, "rb") as f:
            f.seek(max(start, end - size))
            return f.read().decode(errors="replace")

    def stop(self, kill=False):
        """End the worker (asking it to, unless ``kill``) and remove its scratch folder."""
        if self.process.poll() is None:
            try:
                if kill:
                    self.process.kill()
                else:
                    self.process.stdin.close()  # the worker's loop ends
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.log.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


class Pool:
    """Up to ``jobs`` workers grading files against the test set saved at ``test_file``.

    ``memory_limit`` is in bytes (0: none), ``timeout`` in seconds per file; ``scratch`` is a
    folder the caller removes; ``threads``, TensorFlow's threads per worker; ``command``
    starts a worker (``serve`` below). ``run`` grades tasks and calls ``on_report(task,
    report)`` as each verdict arrives (in any order when jobs > 1).
    """

    def __init__(self, jobs, test_file, memory_limit, timeout, scratch, threads=None,
                 command=(sys.executable, "-m", "grader.workers")):
        self.jobs, self.test_file, self.command = jobs, Path(test_file), list(command)
        self.memory_limit, self.timeout, self.scratch = memory_limit, timeout, Path(scratch)
        # TensorFlow's warnings go to a worker's output file, whatever TF_CPP_MIN_LOG_LEVEL
        # the grader runs with: the CPU allocator's "ran out of memory trying to allocate" is
        # one, and it may be all that a crash leaves to say why (crash_message, whose verdicts
        # drop such log lines). Its INFO lines (an allocator dump) stay off.
        self.env = {"TF_CPP_MIN_LOG_LEVEL": "1", "CUDA_VISIBLE_DEVICES": "-1"}
        if threads:
            self.env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads))
        self.messages = queue.Queue()
        self.workers = []
        self.started = 0
        self.replaced = 0  # workers ended after a timeout, a crash or too much memory

    def run(self, tasks, on_report):
        """Grade every task; raise scoring.CannotGrade if a worker cannot grade at all."""
        pending = deque(tasks)
        try:
            while pending or any(w.task for w in self.workers):
                self._dispatch(pending)
                self._wait(pending, on_report)
        finally:
            for worker in self.workers:
                worker.stop(kill=True)
            self.workers = []

    def grade_one(self, path, name):
        """Grade a single file; return its Report."""
        reports = []
        self.run([Task(0, Path(path), name)], lambda task, report: reports.append(report))
        return reports[0]

    def _start(self):
        self.started += 1
        worker = Worker(self, self.started)
        self.workers.append(worker)
        return worker

    def _retire(self, worker, kill=False):
        self.workers.remove(worker)
        worker.stop(kill=kill)

    def _dispatch(self, pending):
        fresh = any(w.graded == 0 and w.task is None for w in self.workers)
        if pending and pending[0].retry and not fresh:
            # A retried task waits for a worker that has graded nothing yet: make room for one.
            idle = next((w for w in self.workers if w.task is None), None)
            if len(self.workers) >= self.jobs and idle is not None:
                self._retire(idle)
            if len(self.workers) < self.jobs:
                self._start()
        busy = sum(1 for w in self.workers if w.task)
        while len(self.workers) < min(self.jobs, len(pending) + busy):
            self._start()
        for worker in self.workers:
            if worker.ready and worker.task is None and pending:
                task = next((t for t in pending if not t.retry or worker.graded == 0), None)
                if task is not None:
                    pending.remove(task)
                    worker.assign(task, self.timeout)

    def _wait(self, pending, on_report):
        deadline = min((w.deadline for w in self.workers), default=float("inf"))
        wait = min(max(0.0, deadline - time.monotonic()), 5.0)
        try:
            worker, line = self.messages.get(timeout=wait)
        except queue.Empty:
            worker = line = None
        if worker is not None and worker in self.workers:  # else: a worker already ended
            if line is None:
                self._died(worker, pending, on_report)
            else:
                self._message(worker, line, pending, on_report)
        for late in [w for w in self.workers if time.monotonic() >= w.deadline]:
            self._expired(late, on_report)

    def _message(self, worker, line, pending, on_report):
        try:
            message = json.loads(line)
        except ValueError:
            return  # not the worker's: its replies are whole JSON lines
        if "cannot_grade" in message:
            raise scoring.CannotGrade(message["cannot_grade"])
        if "ready" in message:
            worker.ready, worker.deadline = True, float("inf")
        elif "report" in message and worker.task is not None:
            self._verdict(worker, message, pending, on_report)

    def _verdict(self, worker, message, pending, on_report):
        task, worker.task, worker.deadline = worker.task, None, float("inf")
        worker.graded += 1
        report = scoring.Report(**message["report"])
        resources = message.get("resources", {})
        report.resources = {**resources, "worker": worker.number,
                            "worker_files_before": worker.graded - 1}
        if resources.get("seconds", 0) > self.timeout:  # by the worker's clock, not the pipe's
            report = scoring.Report(task.name, "invalid", resources=report.resources,
                                    message=f"grading took longer than {self.timeout:g} s")
        data_mib = resources.get("data_mib")
        out_of_memory = report.message == limits.memory_message(self.memory_limit)
        if out_of_memory and worker.graded > 1:
            self._retry(worker, task, pending)
            return
        on_report(task, report)
        if worker.graded == 1:
            worker.first_data_mib = data_mib
        grown = (data_mib is not None and worker.first_data_mib is not None
                 and data_mib > worker.first_data_mib + RECYCLE_GROWTH_MIB)
        if out_of_memory or grown:
            self.replaced += 1
            self._retire(worker)

    def _retry(self, worker, task, pending):
        self.replaced += 1
        self._retire(worker, kill=True)
        task.retry = True
        pending.appendleft(task)

    def _died(self, worker, pending, on_report):
        returncode = worker.process.wait()
        if not worker.ready:
            output = _tail(worker.output(), 1000)
            hint = (f" If it ran out of the memory limit ({size_text(self.memory_limit)}), raise "
                    "--memory-limit: TensorFlow alone needs about 0.6 GiB of it."
                    if self.memory_limit else "")
            raise scoring.CannotGrade(f"Cannot grade: a grading worker stopped while starting "
                                      f"(exit code {returncode}).{hint}\n{output}".rstrip())
        task = worker.task
        if task is None:
            self._retire(worker)
            return
        if worker.graded > 0 and not task.retry:
            self._retry(worker, task, pending)
            return
        message = crash_message(returncode, worker.output(worker.output_start), self.memory_limit)
        self.replaced += 1
        self._retire(worker, kill=True)
        on_report(task, scoring.Report(task.name, "invalid", message=message))

    def _expired(self, worker, on_report):
        if not worker.ready:
            self._retire(worker, kill=True)
            raise scoring.CannotGrade(f"Cannot grade: a grading worker did not start within "
                                      f"{START_TIMEOUT} s (importing TensorFlow); is the machine "
                                      "overloaded?")
        task = worker.task
        self.replaced += 1
        self._retire(worker, kill=True)
        on_report(task, scoring.Report(task.name, "invalid",
                                       message=f"grading took longer than {self.timeout:g} s"))


def _end_with_parent():
    """On Linux, have the kernel end this worker if the grader that started it dies."""
    parent = os.getppid()
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the worker still ends when its stdin closes
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _rounded(mib):
    return None if mib is None else round(mib, 1)


def serve(argv=None):
    """A worker's loop: read {"path", "name"} lines on stdin, answer each with a JSON verdict line."""
    parser = argparse.ArgumentParser(prog="python -m grader.workers")
    parser.add_argument("--test-set", required=True, help="the .npz the main process saved")
    parser.add_argument("--memory-limit", type=int, default=0, help="bytes; 0 for none")
    args = parser.parse_args(argv)
    # Replies go to the real stdout; whatever else writes there (TensorFlow, Keras) goes to
    # the output file with stderr, so a stray print cannot break a reply.
    replies = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)

    def send(**message):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    _end_with_parent()
    if args.memory_limit:
        limits.limit_memory(args.memory_limit)  # before TensorFlow allocates anything
    try:
        scoring.check_keras_version()  # imports Keras, and with it TensorFlow
    except scoring.CannotGrade as e:
        send(cannot_grade=str(e))
        return EXIT_CANNOT_GRADE
    import keras

    test_data = testset.load_arrays(args.test_set)
    send(ready={"data_mib": limits.data_mib()})
    for line in sys.stdin:
        request = json.loads(line)
        peak_reset = limits.reset_peak()
        rss_before = limits.rss_mib()
        start, cpu = time.perf_counter(), time.process_time()
        try:
            report = scoring.grade_file(request["path"], test_data, request["name"])
        except scoring.CannotGrade as e:
            send(cannot_grade=str(e))
            return EXIT_CANNOT_GRADE
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        keras.backend.clear_session()  # nothing of this model stays for the next one
        gc.collect()
        send(report=asdict(report), resources={
            "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
            "rss_before_mib": _rounded(rss_before), "peak_rss_mib": _rounded(limits.peak_rss_mib()),
            "peak_since_file_start": peak_reset, "data_mib": _rounded(limits.data_mib())})
    return 0


if __name__ == "__main__":
    sys.exit(serve())
