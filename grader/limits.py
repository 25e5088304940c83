"""The memory a grading process may use, and how a refused allocation reads in a verdict.

Every grading path runs a submission in a worker process (``grader.workers``) that
caps its own memory with ``limit_memory`` before it imports TensorFlow. The cap is
``RLIMIT_DATA``: the process's private writable memory (heap, mmap'd arrays, TensorFlow's
allocations), not address space reserved and never used. Linux enforces it; elsewhere only
the time limit holds.

The process's memory is read from ``/proc`` rather than with ``psutil``: the verdicts need the
data memory that ``RLIMIT_DATA`` counts (``VmData``), the peak resident memory (``VmHWM``) and
resetting that peak between files (``/proc/self/clear_refs``), which psutil does not give on
Linux; elsewhere these read as unknown and only the time limit holds.
"""

import os
import re
import sys
from pathlib import Path

from grader.safety import size_text

# Measured grading in quick mode on CPU: the solution's FCN-8 (2.4 M parameters, 29 MB file)
# ends at VmData 0.73 GiB and grades under a 0.75 GiB limit; a classic U-Net (31 M
# parameters, 373 MB file with Adam's state) ends at VmData 1.2 GiB, grades under 1.5 GiB and
# aborts under 1 GiB. 4 GiB leaves room for bigger honest models while a refused allocation
# stays far from a machine's memory. RLIMIT_AS (address space) is unusable: TensorFlow maps
# 2.9 GiB of it on CPU (CUDA reserves far more), and under a 1.5 GiB RLIMIT_AS grading spun
# for minutes instead of failing.
MEMORY_LIMIT_GB = 4.0
# Phrases of an allocation refused under the memory limit: Python, NumPy, TensorFlow, C++.
# TensorFlow's CPU allocator logs "Allocator (mklcpu) ran out of memory trying to allocate
# 5.25GiB … requested by op …" and the op may then crash the process with SIGSEGV instead
# of raising (seen on a CPU with AMX; another CPU raised std::bad_alloc for the same file).
OUT_OF_MEMORY = re.compile(r"MemoryError|Unable to allocate|OOM when allocating|bad_alloc|"
                           r"Cannot allocate memory|ResourceExhausted|"
                           r"ran out of memory trying to allocate")
# TensorFlow logs "ran out of memory trying to allocate …" also when it recovers, and then
# adds this: such a line is no refused allocation.
_RECOVERED = "caller indicates that this is not a failure"
_memory_limit = None  # bytes, once limit_memory has set one in this process


def says_out_of_memory(text):
    """Return True when a line of ``text`` (an error, a process's output) tells of a refused
    allocation, and not of one TensorFlow recovered from."""
    return any(OUT_OF_MEMORY.search(line) and _RECOVERED not in line for line in text.splitlines())


def limit_memory(n_bytes):
    """Cap this process's data memory at ``n_bytes`` (RLIMIT_DATA); return False where it cannot be."""
    global _memory_limit
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            n_bytes = min(n_bytes, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (n_bytes, hard))
    except (ImportError, AttributeError, ValueError, OSError):
        return False  # e.g. Windows, which has no resource module
    # Only Linux counts mmap'd memory (where large arrays live) against RLIMIT_DATA.
    _memory_limit = n_bytes
    return sys.platform.startswith("linux")


def memory_limit():
    """Return the memory limit ``limit_memory`` set in this process (bytes), or None."""
    return _memory_limit


def memory_message(limit):
    """Return the verdict's words for a submission that ran out of the memory limit."""
    if limit:
        return (f"it ran out of its memory limit of {size_text(limit)} while "
                "being loaded or run (the grader's --memory-limit)")
    return "it ran out of memory while being loaded or run"


def out_of_memory(error):
    """Return True when an exception, or one it came from, is a refused allocation."""
    while error is not None:
        if isinstance(error, MemoryError) or says_out_of_memory(f"{type(error).__name__}: {error}"):
            return True
        error = error.__cause__ or error.__context__
    return False


def _status_kib(field):
    """Return a field of /proc/self/status in KiB (VmData, VmRSS, VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def data_mib():
    """Return this process's data memory (what RLIMIT_DATA counts) in MiB, or None."""
    kib = _status_kib("VmData")
    return None if kib is None else kib / 1024


def rss_mib():
    """Return this process's resident memory in MiB, or None."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


def peak_rss_mib():
    """Return this process's peak resident memory (since start or ``reset_peak``) in MiB, or None."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib / 1024


def reset_peak():
    """Reset the peak resident memory to the current one (Linux 4.0+); return whether it was."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def available_bytes():
    """Return the memory this machine can give new processes (MemAvailable), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
