"""The ``[bench]`` table of a target profile: how ``edgeprep run`` benchmarks each artifact (device_bench).

    [bench]
    runs = 100              # timed iterations per process (at least)
    repeats = 3             # fresh processes per artifact: the gate's statistics need the between-process spread
    warmup = 10             # untimed iterations after the first inference
    min_seconds = 0.0       # ... or keep iterating until this much measured time has passed
    timeout_seconds = 300   # a benchmark still running then is stopped and reported as an error
    instructions = false    # also count instructions per inference with valgrind (callgrind), 1 thread

A profile without ``[bench]`` is not benchmarked by ``edgeprep run``; ``edgeprep bench`` uses these values (or the
defaults) with its command-line options on top.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    runs: int = 100
    repeats: int = 3
    warmup: int = 10
    min_seconds: float = 0.0
    threads: int | None = None          # default: the target's threads
    timeout_seconds: float = 300.0
    transport: str = "local"            # where the benchmark process runs (device_bench.transports)
    instructions: bool = False          # callgrind instruction count per inference (deterministic cost figure)

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError("runs must be >= 1")
        if self.repeats < 1:
            raise ValueError("repeats must be >= 1")
        if self.warmup < 0:
            raise ValueError("warmup must be >= 0")
        if self.min_seconds < 0:
            raise ValueError("min_seconds must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        from device_bench.transports import names

        if self.transport not in names():
            raise ValueError(f"transport must be one of {', '.join(names())}, got {self.transport!r}")
