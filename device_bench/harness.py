"""The host side: each benchmark in a fresh process through a transport, and deterministic instruction counts.

    from device_bench.bench import Job
    from device_bench.harness import benchmark, count_instructions
    result = benchmark(Job("m.int8.tflite", "litert", threads=2, runs=200), timeout=300)
    cost = count_instructions(Job("m.int8.tflite", "litert", threads=1))

``count_instructions`` runs the same job twice under ``valgrind --tool=callgrind`` with different iteration
counts and divides the difference of the instruction totals by the difference of iterations, so process start,
imports, model loading and the first inference cancel out: what is left is the instructions one inference
executes. It is a cost figure that does not move with the load of a shared CI runner (wall time does). Valgrind
runs multi-threaded programs one thread at a time and reports x86-64 code paths up to AVX2 (it does not emulate
AVX-512), so count with ``threads=1`` and compare counts only with counts.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import replace

from device_bench.bench import Job
from device_bench.transports import BenchFailed, get_transport
from device_bench.transports.base import parse

# Fixed hash seed and single-threaded BLAS: Python's string hashing and numpy's idle BLAS threads otherwise move
# the process's instruction total by millions from run to run.
CALLGRIND = ("env", "PYTHONHASHSEED=0", "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1",
             "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--cache-sim=no", "--branch-sim=no")
_PID = re.compile(r"^==(\d+)==", re.M)
_COLLECTED = re.compile(r"^==(\d+)== Collected\s*:\s*([\d,]+)", re.M)


def benchmark(job: Job, transport: str = "local", timeout: float = 600.0, **settings) -> dict:
    """Run ``job`` in a fresh process; its JSON result, or ``BenchFailed`` (timeout, error, crash)."""
    return get_transport(transport, **settings).run(job, timeout)


def _instructions(stderr: str) -> int | None:
    """The instruction total of the benchmark process itself (valgrind also reports forked helpers)."""
    first = _PID.search(stderr)
    totals = {pid: int(n.replace(",", "")) for pid, n in _COLLECTED.findall(stderr)}
    return totals.get(first.group(1)) if first else None


def count_instructions(job: Job, transport: str = "local", timeout: float = 900.0, runs: tuple[int, int] = (5, 45),
                       **settings) -> dict:
    """Instructions per inference of ``job`` (its threads, options; no data) measured with callgrind."""
    if transport == "local" and shutil.which("valgrind") is None:
        raise BenchFailed("error", "valgrind is not installed (apt-get install valgrind)")
    low, high = runs
    if not 0 < low < high:
        raise ValueError("runs must be two increasing iteration counts, e.g. (5, 45)")
    tr = get_transport(transport, **settings)
    totals = []
    for n in (low, high):
        one = replace(job, runs=n, warmup=0, min_seconds=0.0, data=None)
        done = tr.execute(one, timeout, CALLGRIND)
        parse(done, one, timeout)            # raises on timeout or error, like a timed benchmark
        total = _instructions(done.stderr)
        if total is None:
            raise BenchFailed("crash", "callgrind printed no instruction total (is valgrind working here?)")
        totals.append(total)
    per = (totals[1] - totals[0]) / (high - low)
    return {"instructions_per_inference": int(round(per)), "tool": "valgrind --tool=callgrind",
            "valgrind": _valgrind_version(), "threads": job.threads, "iterations": [low, high],
            "totals": totals}

def _valgrind_version() -> str | None:
    import subprocess

    try:
        return subprocess.run(["valgrind", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None

__all__ = ["benchmark", "count_instructions", "Job", "BenchFailed", "CALLGRIND"]
