"""The transport protocol: run ``python -m device_bench`` for a job somewhere and return its JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from device_bench.bench import Job


class TransportUnavailable(RuntimeError):
    """The transport cannot be used here (unknown name, missing emulator or SSH client, unreachable host)."""


class BenchFailed(RuntimeError):
    """A benchmark process failed or timed out. ``kind`` is ``timeout``, ``error`` or ``crash``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Completed:
    """What a benchmark process left behind."""

    returncode: int | None        # None when it was killed at the timeout
    stdout: str
    stderr: str
    seconds: float


class Transport:
    """Runs benchmark processes. Subclasses implement ``execute``; ``run`` adds the result handling."""

    name = ""

    def execute(self, job: Job, timeout: float, wrapper: Sequence[str] = ()) -> Completed:
        """Run ``[*wrapper, python, -m, device_bench, *job.argv(...)]`` where the job should run, at most
        ``timeout`` seconds (then kill it and return ``returncode=None``). ``wrapper`` prefixes the command
        (``valgrind --tool=callgrind ...``); files it names with ``{out}`` are for the transport to bring back."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"transport": self.name}

    def run(self, job: Job, timeout: float, wrapper: Sequence[str] = ()) -> dict:
        """The benchmark's JSON result; ``BenchFailed`` on a timeout, an error exit or unreadable output."""
        done = self.execute(job, timeout, wrapper)
        return parse(done, job, timeout)


def parse(done: Completed, job: Job, timeout: float) -> dict:
    label = job.artifact.rsplit("/", 1)[-1]
    if done.returncode is None:
        raise BenchFailed("timeout", f"{label}: the benchmark did not finish within {timeout:g} s and was stopped")
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    if done.returncode != 0:
        said = next((ln for ln in reversed(lines) if "device_bench: error:" in ln), None)
        if said:
            raise BenchFailed("error", said.split("device_bench: error:", 1)[1].strip())
        tail = lines[-1].strip() if lines else "no output"
        raise BenchFailed("crash", f"{label}: the benchmark process exited with code {done.returncode} ({tail})")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise BenchFailed("crash", f"{label}: the benchmark process printed no JSON result") from None
