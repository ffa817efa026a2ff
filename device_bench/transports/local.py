"""The local transport: a fresh Python process on this machine, with this package importable."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

from device_bench.bench import Job
from device_bench.transports import register
from device_bench.transports.base import Completed, Transport, run_process

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])   # the directory holding device_bench/


@register("local")
class LocalTransport(Transport):
    def __init__(self, python: str | None = None, env: dict | None = None):
        self.python = python or sys.executable
        self.env = dict(env or {})

    def execute(self, job: Job, timeout: float, wrapper: Sequence[str] = ()) -> Completed:
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(
            os.pathsep) if p])
        cmd = [*wrapper, self.python, "-m", "device_bench", *job.argv(lambda p: str(Path(p).resolve()))]
        return run_process(cmd, timeout, env)

    def describe(self) -> dict:
        return {"transport": "local", "emulated": False, "python": self.python}
