"""Measurement primitives (numpy and the standard library only): a timing loop, latency statistics, memory.

Latency is wall time per ``invoke`` measured with ``time.perf_counter_ns`` around a single call on an input that
is already in the artifact's dtype (quantization of float input happens once, outside the loop), so the figure is
what the runtime spends, as the vendors' own benchmark tools report it.

Peak memory is the process's resident-set high-water mark: ``VmHWM`` from ``/proc/self/status`` on Linux and
Android, ``ru_maxrss`` elsewhere (kilobytes on Linux, bytes on macOS).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Timing:
    """The outcome of one timing loop: the first call, the warm-up calls and the measured ones (milliseconds)."""

    first_ms: float
    warmup_ms: tuple[float, ...]
    samples_ms: tuple[float, ...]
    seconds: float              # wall time of the measured iterations alone
    wall_ms: tuple[float, ...] = ()   # wall time per call, when samples_ms is the runtime's own timing

    @property
    def iterations(self) -> int:
        return len(self.samples_ms)

    @property
    def throughput(self) -> float:
        """Inferences per second over the measured loop (one request at a time)."""
        return self.iterations / self.seconds if self.seconds > 0 else 0.0


def time_calls(call: Callable[[], object], *, runs: int, warmup: int = 5, min_seconds: float = 0.0,
               max_runs: int = 1_000_000, own: Callable[[], float | None] | None = None) -> Timing:
    """Call ``call`` once (first inference), ``warmup`` more times, then until both ``runs`` calls and
    ``min_seconds`` of measured time have passed (at most ``max_runs`` calls).

    ``own``, when given, returns the runtime's own timing of the call just made (ms): the samples are then those,
    as the vendor's benchmark tool reports them, and the wall times are kept beside them."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    clock = time.perf_counter_ns
    first: list[float] = []
    warm: list[float] = []
    _sample(call, None, first, [])
    for _ in range(warmup):
        _sample(call, None, warm, [])
    samples: list[float] = []
    walls: list[float] = []
    start = clock()
    deadline = start + int(min_seconds * 1e9)
    while len(samples) < max_runs and (len(samples) < runs or clock() < deadline):
        _sample(call, own, samples, walls)
    seconds = (clock() - start) / 1e9
    return Timing(first[0], tuple(warm), tuple(samples), seconds, tuple(walls) if own else ())


def time_pair(a: tuple[Callable[[], object], Callable[[], float | None] | None],
              b: tuple[Callable[[], object], Callable[[], float | None] | None], *, runs: int, warmup: int = 5,
              min_seconds: float = 0.0, max_runs: int = 1_000_000, block: int = 20,
              settle: int = 2) -> tuple[Timing, Timing]:
    """``time_calls`` for two calls (each with its ``own`` timer or None) in blocks alternating A B B A, so a drift
    of the machine during the loop falls on both alike. Each block starts with ``settle`` untimed calls: on one
    machine, alternating call by call let each model evict the other's weights from the caches (MobileNetV3Small
    fp32 took 0.65 ms beside its int8 sibling against 0.44 ms alone, pulling their ratio from 2.0 to 1.3-1.5; on
    another it made no difference); in blocks of 20 each takes what it takes alone. Each gets ``runs`` samples at
    least, and together they run for ``min_seconds`` at least. Each ``Timing``'s ``seconds`` is half the loop's
    (its throughput an approximation: the latencies are what a comparison uses)."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    if block < 1 or settle < 0:
        raise ValueError("block must be >= 1 and settle >= 0")
    clock = time.perf_counter_ns
    calls = (a, b)
    first: tuple[list[float], list[float]] = ([], [])
    warm: tuple[list[float], list[float]] = ([], [])
    for i, (call, _own) in enumerate(calls):
        _sample(call, None, first[i], [])
    for _ in range(warmup):
        for i, (call, _own) in enumerate(calls):
            _sample(call, None, warm[i], [])
    samples: tuple[list[float], list[float]] = ([], [])
    walls: tuple[list[float], list[float]] = ([], [])
    start = clock()
    deadline = start + int(min_seconds * 1e9)
    step = 0
    while len(samples[1]) < max_runs and (min(map(len, samples)) < runs or clock() < deadline):
        i = (0, 1, 1, 0)[step % 4]
        call, own = calls[i]
        for _ in range(settle):
            call()
        for _ in range(min(block, max_runs - len(samples[i]))):
            _sample(call, own, samples[i], walls[i])
        step += 1
    seconds = (clock() - start) / 1e9
    return tuple(Timing(first[i][0], tuple(warm[i]), tuple(samples[i]), seconds / 2,
                        tuple(walls[i]) if calls[i][1] else ()) for i in (0, 1))


def _sample(call: Callable[[], object], own: Callable[[], float | None] | None, samples: list[float],
            walls: list[float]) -> None:
    """Time one ``call`` (wall, ms) into ``walls`` and its sample into ``samples``: the runtime's own timing of
    it (``own``) where it keeps one, else the wall time."""
    t = time.perf_counter_ns()
    call()
    wall = (time.perf_counter_ns() - t) / 1e6
    mine = own() if own else None
    samples.append(wall if mine is None else mine)
    walls.append(wall)


def percentile(values, q: float) -> float:
    """The q-th percentile with linear interpolation between order statistics (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_stats(samples_ms) -> dict:
    """mean, std (sample), min, max and the p50/p90/p99 of per-iteration latencies, in milliseconds."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    out = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
           "min": float(a.min()), "max": float(a.max())}
    for q in PERCENTILES:
        out[f"p{q}"] = percentile(a, q)
    return {k: round(v, 6) for k, v in out.items()}


def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024   # "VmHWM:   123456 kB"
    except OSError:
        return None
    return None


def peak_rss_bytes() -> tuple[int, str]:
    """(peak resident set size of this process so far, where it was read)."""
    hwm = _proc_status("VmHWM")
    if hwm is not None:
        return hwm, "VmHWM"
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (maxrss if sys.platform == "darwin" else maxrss * 1024), "ru_maxrss"


def rss_bytes() -> int | None:
    """Current resident set size (Linux/Android), or None where it cannot be read."""
    return _proc_status("VmRSS")


def sample_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A deterministic float32 input in [0, 1) of ``shape`` (dynamic axes, -1, become 1)."""
    concrete = tuple(1 if d in (-1, None) else int(d) for d in shape)
    return np.random.default_rng(seed).random(concrete, dtype=np.float32)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
