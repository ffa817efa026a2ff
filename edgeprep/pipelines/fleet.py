"""Devices as a fleet: is a device usable, which hardware is it, and benchmarks on several devices at once.

``fan_out(targets, work)`` runs ``work(target)`` for every target, in parallel across devices and one after
another on each device (targets whose transports reach the same hardware — this machine, the emulator on this
machine, one ssh host:port — share a lane: two benchmarks on one CPU would measure each other). A device that
fails or hangs (each benchmark has its timeout) costs only its own lane: the others' results are kept, and its
error is recorded. ``combined_report`` puts every device's artifacts (tagged with the target name) and a
``fleet`` section into one report.
"""

from __future__ import annotations

import re
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

from device_bench.transports.base import stop_all
from edgeprep.config.bench import BenchConfig
from edgeprep.errors import EdgeprepError, InputError, RuntimeUnavailable


@dataclass
class DeviceRun:
    """What one target's lane produced: its report (written to ``<out>/<dir_name>/``) or the error that stopped it."""

    name: str
    dir_name: str
    status: str = "error"               # its report's summary (verified | measured | unmeasured | failed) | error
    seconds: float = 0.0
    report: dict | None = None
    error: str | None = None
    device: dict = field(default_factory=dict)
    lane: str = ""


def parse_targets(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError("--targets names no target", "pass a comma-separated list, e.g. --targets a,b,c")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"--targets lists {', '.join(dupes)} twice", "name each target once")
    return names


def dir_name(target_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", target_name).strip("._") or "target"


def transport_of(config: BenchConfig | None):
    from device_bench.transports import TransportUnavailable, get_transport

    config = config or BenchConfig()
    try:
        return get_transport(config.transport, **config.transport_settings())
    except TransportUnavailable as exc:
        raise RuntimeUnavailable(exc.message, exc.hint) from None


def device_key(config: BenchConfig | None) -> str:
    """The hardware a target's benchmarks run on (``Transport.device_key``)."""
    try:
        return transport_of(config).device_key()
    except RuntimeUnavailable:
        return "this machine"


def check_device(config: BenchConfig | None, runtimes: Iterable[str | None]) -> dict | None:
    """Probe a device that is not this machine before work is sent there: reachable, its Python, numpy and each
    runtime import. Returns what it reported (machine, Python...); ``RuntimeUnavailable`` names what is missing."""
    from device_bench.runners import get_runner
    from device_bench.transports import TransportUnavailable

    config = config or BenchConfig()
    if config.transport == "local":
        return None
    transport = transport_of(config)
    wanted = sorted({r for r in runtimes if r and not get_runner(r).timing_meaningless}) or [None]
    found = None
    try:
        for runtime in wanted:
            found = transport.check(runtime)
    except TransportUnavailable as exc:
        raise RuntimeUnavailable(exc.message, exc.hint) from None
    return {**(found or {}).get("device", {}), **transport.describe()}


def lane_status(summary: dict) -> str:
    """A device's status from its report's summary, in the artifacts' words: "verified" only when every artifact
    was verified; "measured" or "unmeasured" when nothing failed but something went unchecked; "failed"."""
    return "verified" if summary["status"] == "passed" else summary["status"]


Work = Callable[[object], "tuple[dict, dict | None, str | None]"]


def fan_out(targets: list, work: Work, reporter) -> tuple[list[DeviceRun], dict]:
    """Run ``work(target) -> (report, device, error)`` per target: lanes (one per device) in parallel, each lane's
    targets in order. ``error`` (the device could not be used; the report then records it per artifact) or an
    exception marks the target ``error``. Never raises for one target; returns the runs in ``targets`` order and
    the timing."""
    runs = {t.name: DeviceRun(t.name, dir_name(t.name)) for t in targets}
    if len({r.dir_name for r in runs.values()}) != len(runs):
        raise InputError("two targets map to the same directory name", "rename one of the targets")
    lanes: dict[str, list] = {}
    for t in targets:
        key = device_key(t.bench)
        runs[t.name].lane = key
        lanes.setdefault(key, []).append(t)
    lock = threading.Lock()

    def lane(members: list) -> None:
        for t in members:
            run = runs[t.name]
            start = time.perf_counter()
            try:
                run.report, device, run.error = work(t)
                run.device = device or {}
                run.status = "error" if run.error else lane_status(run.report["summary"])
            except EdgeprepError as exc:
                run.error = str(exc)
            except Exception as exc:  # a bug: keep the other devices' results, show the traceback
                run.error = f"internal error ({type(exc).__name__}: {exc}); this is a bug"
                with lock:
                    traceback.print_exc()
            run.seconds = round(time.perf_counter() - start, 3)
            with lock:
                from rich.markup import escape

                reporter.info(escape(f"  {t.name}: {run.status} in {run.seconds:.1f} s"
                                     + (f" — {run.error}" if run.error else "")))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="device") as pool:
        futures = [pool.submit(lane, members) for members in lanes.values()]
        try:
            for f in futures:
                f.result()
        except BaseException:    # Ctrl-C or SIGTERM reach this thread only: stop the lanes' benchmarks, or
            stop_all()           # leaving this block would wait for every one of them to finish
            raise
    timing = {"wall_seconds": round(time.perf_counter() - start, 3), "lanes": len(lanes)}
    return [runs[t.name] for t in targets], timing


def _under(directory: str, path: str) -> str:
    """A path of a device's report as seen from the fleet report (absolute paths stay as they are)."""
    return path if path.startswith("/") else f"{directory}/{path}"


def combined_report(command: str, runs: list[DeviceRun], timing: dict, *, model=None, data=None,
                    reference=None, stages=None) -> dict:
    """One report over every device: each target's artifacts tagged ``device`` (paths under its directory) and a
    ``fleet`` section with each device's status, error, timing and machine."""
    from edgeprep.report import build_report

    artifacts = []
    for run in runs:
        for a in (run.report or {}).get("artifacts", []):
            entry = {**a, "device": run.name, "path": _under(run.dir_name, a["path"]),
                     "files": [_under(run.dir_name, f) for f in a.get("files", [])]}
            if (entry.get("bench") or {}).get("latencies_file"):
                side = f"{run.dir_name}/{entry['bench']['latencies_file']}"
                entry["bench"] = {**entry["bench"], "latencies_file": side}
            artifacts.append(entry)
    fleet = {"targets": [{"name": r.name, "status": r.status, "error": r.error, "seconds": r.seconds,
                          "report": f"{r.dir_name}/report.json" if r.report else None, "lane": r.lane,
                          "device": r.device or None} for r in runs],
             "lanes": timing["lanes"], "wall_seconds": timing["wall_seconds"],
             "sum_seconds": round(sum(r.seconds for r in runs), 3)}
    report = build_report(command=command, model=model, artifacts=artifacts, target=None, data=data,
                          reference=reference, stages=stages or [{"name": "fleet", "seconds": timing["wall_seconds"]}],
                          extra={"fleet": fleet})
    if any(r.status == "error" for r in runs):
        report["summary"]["status"] = "failed"
    return report
