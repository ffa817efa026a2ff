"""The local transport: a fresh Python process on this machine, with this package importable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from device_bench.bench import Job
from device_bench.transports import register
from device_bench.transports.base import Completed, Transport

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
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            code = None
        return Completed(code, out, err, time.perf_counter() - start)

    def describe(self) -> dict:
        return {"transport": "local", "python": self.python}


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the benchmark and anything it started (a wrapper such as valgrind runs it as a child)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
