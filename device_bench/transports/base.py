"""The transport protocol: run ``python -m device_bench`` for a job somewhere and return its JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from device_bench.bench import Job


class TransportUnavailable(RuntimeError):
    """The transport cannot be used here (unknown name, missing emulator or SSH client, unreachable host).
    ``hint`` says what to do about it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


class BenchFailed(RuntimeError):
    """A benchmark process failed or timed out. ``kind`` is ``timeout``, ``error``, ``crash``, or for a device
    reached over a network ``unreachable`` (it could not be reached) or ``disconnected`` (lost mid-run)."""

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
    emulated = False              # results come from an emulator: numerics are real, timings are not
    copies_files = False          # the device sees copies under other names: results get the host's paths back

    def execute(self, job: Job, timeout: float, wrapper: Sequence[str] = ()) -> Completed:
        """Run ``[*wrapper, python, -m, device_bench, *job.argv(...)]`` where the job should run, at most
        ``timeout`` seconds (then kill it and return ``returncode=None``). ``wrapper`` prefixes the command
        (``valgrind --tool=callgrind ...``); files it names with ``{out}`` are for the transport to bring back."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"transport": self.name, "emulated": self.emulated}

    def device_key(self) -> str:
        """The hardware benchmarks run on: a fleet runs at most one benchmark per key at a time."""
        return "this machine"

    def check(self, runtime: str | None = None) -> dict:
        """Can benchmarks run there, with ``runtime``? The device's ``device_bench.device.probe`` result, or
        ``TransportUnavailable`` saying what is missing and how to fix it."""
        from device_bench.device import info

        return {"device": info(), "runtime": runtime, "error": None}

    def run(self, job: Job, timeout: float, wrapper: Sequence[str] = ()) -> dict:
        """The benchmark's JSON result; ``BenchFailed`` on a timeout, an error exit or unreadable output."""
        done = self.execute(job, timeout, wrapper)
        result = parse(done, job, timeout)
        if self.copies_files:
            from device_bench.transports.bundle import restore_paths

            restore_paths(result, job)
        result["transport"] = self.describe()
        return result


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


# Every benchmark process group running now, so that an interrupted caller (Ctrl-C, SIGTERM) can stop them all,
# including those that worker threads are waiting on.
_LIVE: set = set()
_LIVE_LOCK = threading.Lock()
_STOPPED = threading.Event()     # set by stop_all(): no new benchmark process starts until accept_new()


def accept_new() -> None:
    """Allow ``run_process`` to start processes again (a command starting afresh in the same interpreter)."""
    _STOPPED.clear()


def stop_all() -> int:
    """Kill every benchmark process group started by ``run_process`` that is still running, and refuse to start
    new ones (worker threads would otherwise go on to their next benchmark); returns how many were running."""
    _STOPPED.set()
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        if proc.poll() is None:
            kill_group(proc)
    return len(live)


def run_process(cmd: Sequence[str], timeout: float, env: dict | None = None, stdin: bytes | None = None) -> Completed:
    """Run ``cmd`` (an argument list, never a shell string) in its own process group, feeding ``stdin`` without
    closing it until the process ends (a remote side reads that end-of-file as "the client is gone"); at
    ``timeout`` the whole group is killed and ``returncode`` is None. An exception in the caller while waiting
    (KeyboardInterrupt, SystemExit) kills the group too: no benchmark outlives the process that started it."""
    start = time.perf_counter()
    with _LIVE_LOCK:
        if _STOPPED.is_set():
            raise BenchFailed("error", "interrupted: no new benchmark process is started")
        proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
        _LIVE.add(proc)
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    def drain(stream, key: str) -> None:
        for block in iter(lambda: stream.read1(65536), b""):
            chunks[key].append(block)

    def feed() -> None:
        try:
            proc.stdin.write(stdin)
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    threads = [threading.Thread(target=drain, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, "err"), daemon=True)]
    if stdin is not None:
        threads.append(threading.Thread(target=feed, daemon=True))
    for t in threads:
        t.start()
    try:
        code: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait()
        code = None
    except BaseException:
        kill_group(proc)
        proc.wait()
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)
        if proc.stdin:
            try:
                proc.stdin.close()
            except OSError:
                pass
    for t in threads[:2]:
        t.join(timeout=10)
    return Completed(code, b"".join(chunks["out"]).decode("utf-8", "replace"),
                     b"".join(chunks["err"]).decode("utf-8", "replace"), time.perf_counter() - start)


def kill_group(proc: subprocess.Popen) -> None:
    """Kill a process and anything it started (a wrapper such as valgrind or ssh runs the work as a child)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
