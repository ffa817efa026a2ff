"""A baseline artifact and a candidate benchmarked side by side, in rounds, until their latency ratio is known.

``compare`` runs rounds through device_bench (the same job, transport and settings as ``edgeprep bench``): by default
one fresh process per round holding both artifacts, their iterations alternating (``device_bench`` ``versus``), or
one fresh process of each per round; the order alternates between rounds (B C, C B, ...). After every round it asks
``edgeprep.paired.next_step`` whether the interval of the ratio now lies wholly on one side of the limit. A
baseline measured yesterday on another runner carries that runner's speed; measured in the same rounds, both
artifacts see the same machine, and in one process the same frequency and placement too. ``edgeprep gate
--rebench`` judges latency with it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from typing import Callable

from device_bench.harness import benchmark
from edgeprep.artifact import Artifact
from edgeprep.config.bench import BenchConfig
from edgeprep.paired import PairedRatio, Sampling, next_step
from edgeprep.stages.bench import job_for

MODES = ("in-process", "processes")


@dataclass(frozen=True)
class Comparison:
    """The outcome of ``compare``: the decision, the ratio's interval and what it cost."""

    decision: str                                  # "regression" | "within" | "undecided"
    ratio: PairedRatio | None
    limit: float
    seconds: float
    candidate_ms: tuple[float, ...]                # each round's median, in rounds order
    baseline_ms: tuple[float, ...]
    mode: str = "in-process"
    round_seconds: float = 0.0                     # the least measured time of a round

    def to_dict(self) -> dict:
        return {"decision": self.decision, "mode": self.mode, **(self.ratio.to_dict() if self.ratio else {}),
                "limit": self.limit, "round_seconds": self.round_seconds,
                "seconds": round(self.seconds, 2), "candidate_p50_ms": [round(v, 5) for v in self.candidate_ms],
                "baseline_p50_ms": [round(v, 5) for v in self.baseline_ms]}


def compare(candidate: Artifact, baseline: Artifact, config: BenchConfig, threads: int | None, limit: float,
            sampling: Sampling = Sampling(), progress: Callable[[int, PairedRatio | None], None] | None = None,
            clock: Callable[[], float] = time.perf_counter, mode: str = "in-process") -> Comparison:
    """Benchmark ``baseline`` and ``candidate`` in rounds until ``paired.next_step`` decides against ``limit``
    (the largest acceptable candidate/baseline ratio) or ``sampling``'s budget is spent. A round is one fresh
    process holding both, iterations alternating (``mode`` "in-process", the default: the two see the same
    machine state), or one fresh process each, in alternating order ("processes": each as deployed, alone).
    ``progress(rounds, ratio)`` is called after each round. A benchmark that fails raises ``BenchFailed``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    jobs = {"candidate": round_job(candidate, config, threads, sampling),
            "baseline": round_job(baseline, config, threads, sampling)}
    medians: dict[str, list[float]] = {"candidate": [], "baseline": []}
    start = clock()
    while True:
        first, second = ("baseline", "candidate") if len(medians["baseline"]) % 2 == 0 else ("candidate", "baseline")
        if mode == "in-process":
            got = dict(zip((first, second), in_process_round(jobs[first], jobs[second], config)))
        else:
            got = {side: _bench(jobs[side], config)["latencies_ms"] for side in (first, second)}
        for side, latencies in got.items():
            medians[side].append(statistics.median(latencies))
        step, ratio = next_step(medians["candidate"], medians["baseline"], limit, sampling, clock() - start)
        if progress:
            progress(len(medians["candidate"]), ratio)
        if step != "continue":
            return Comparison(step, ratio, limit, clock() - start, tuple(medians["candidate"]),
                              tuple(medians["baseline"]), mode, jobs["candidate"].min_seconds)


def round_job(artifact: Artifact, config: BenchConfig, threads: int | None, sampling: Sampling = Sampling()):
    """The device_bench job of one artifact in a round: ``edgeprep bench``'s, timing only, for at least
    ``sampling.round_seconds``."""
    job = job_for(artifact, config, threads)
    return replace(job, data=None, profile=False, min_seconds=max(job.min_seconds, sampling.round_seconds))


def in_process_round(first, second, config: BenchConfig) -> tuple[list[float], list[float]]:
    """One fresh process holding both jobs' artifacts (``first`` loaded first), iterations alternating: each one's
    latencies."""
    result = _bench(replace(first, versus=second.artifact), config)
    return result["latencies_ms"], result["versus"]["latencies_ms"]


def _bench(job, config: BenchConfig) -> dict:
    return benchmark(job, config.transport, config.timeout_seconds, **config.transport_settings())
