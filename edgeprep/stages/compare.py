"""A baseline artifact and a candidate benchmarked side by side, in rounds, until their latency ratio is known.

``compare`` runs one fresh benchmark process of each per round through device_bench (the same job, transport and
settings as ``edgeprep bench``), the order alternating between rounds (B C, C B, B C, ...), and after every round
asks ``edgeprep.paired.next_step`` whether the interval of the ratio now lies wholly on one side of the limit. A
baseline measured yesterday on another runner carries that runner's speed; measured in the same rounds, both
artifacts see the same machine. ``edgeprep gate --rebench`` judges latency with it.
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


@dataclass(frozen=True)
class Comparison:
    """The outcome of ``compare``: the decision, the ratio's interval and what it cost."""

    decision: str                                  # "regression" | "within" | "undecided"
    ratio: PairedRatio | None
    limit: float
    seconds: float
    candidate_ms: tuple[float, ...]                # each round's process median, in rounds order
    baseline_ms: tuple[float, ...]
    latencies: dict                                # "candidate" / "baseline": one tuple per process

    def to_dict(self) -> dict:
        return {"decision": self.decision, **(self.ratio.to_dict() if self.ratio else {}), "limit": self.limit,
                "seconds": round(self.seconds, 2), "candidate_p50_ms": [round(v, 5) for v in self.candidate_ms],
                "baseline_p50_ms": [round(v, 5) for v in self.baseline_ms]}


def compare(candidate: Artifact, baseline: Artifact, config: BenchConfig, threads: int | None, limit: float,
            sampling: Sampling = Sampling(), progress: Callable[[int, PairedRatio | None], None] | None = None,
            clock: Callable[[], float] = time.perf_counter) -> Comparison:
    """Benchmark ``baseline`` and ``candidate`` in alternating rounds until ``paired.next_step`` decides against
    ``limit`` (the largest acceptable candidate/baseline ratio) or ``sampling``'s budget is spent.
    ``progress(rounds, ratio)`` is called after each round. A benchmark that fails raises ``BenchFailed``."""
    jobs = {"candidate": job_for(candidate, config, threads), "baseline": job_for(baseline, config, threads)}
    runs: dict[str, list[tuple[float, ...]]] = {"candidate": [], "baseline": []}
    start = clock()
    while True:
        order = ("baseline", "candidate") if len(runs["baseline"]) % 2 == 0 else ("candidate", "baseline")
        for side in order:
            result = benchmark(replace(jobs[side], data=None), config.transport, config.timeout_seconds,
                               **config.transport_settings())
            runs[side].append(tuple(result["latencies_ms"]))
        cand = [statistics.median(p) for p in runs["candidate"]]
        base = [statistics.median(p) for p in runs["baseline"]]
        step, ratio = next_step(cand, base, limit, sampling, clock() - start)
        if progress:
            progress(len(cand), ratio)
        if step != "continue":
            return Comparison(step, ratio, limit, clock() - start, tuple(cand), tuple(base),
                              {k: tuple(v) for k, v in runs.items()})
