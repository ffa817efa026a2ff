"""Devices as a fleet: is a device usable, which hardware is it, and benchmarks on several devices at once.

``fan_out(targets, work)`` runs ``work(target)`` for every target, in parallel across devices and one after
another on each device (targets whose transports reach the same hardware — this machine, the emulator on this
machine, one ssh host:port — share a lane: two benchmarks on one CPU would measure each other). A device that
fails or hangs (each benchmark has its timeout) costs only its own lane: the others' results are kept, and its
error is recorded. ``combined_report`` puts every device's artifacts (tagged with the target name) and a
``fleet`` section into one report.

``edgeprep run --targets a,b,c`` (``run_fleet``): every target converted and verified here, then its device
benchmarked, the devices in parallel. Conversion, verification and everything else that uses TensorFlow, OpenVINO
or coremltools runs in this thread, one target after another (those toolchains keep process-wide state, and on a
2-core machine running them side by side gains nothing). Benchmarks are subprocesses, emulator runs or ssh
sessions, so they run in parallel, one lane per device. Each target's run directory is then completed with its
benchmarks — ``bench`` objects, ``latencies.json``, the report files — and the fleet report is written over all
of them; the whole output directory appears at once when everything has finished. ``run_target`` is
``edgeprep run`` with one target: its device checked before any work.
"""

from __future__ import annotations

import re
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from device_bench.transports.base import stop_all
from edgeprep.config.bench import BenchConfig
from edgeprep.errors import EdgeprepError, InputError, RuntimeUnavailable
from edgeprep.models import model_name
from edgeprep.outputs import run_dir_out, staged_dir


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


def check_device_step(config: BenchConfig | None, runtimes: Iterable[str | None], reporter) -> dict | None:
    """``check_device`` as a progress step, for a device that is not this machine (None for this machine)."""
    if config is None or config.transport == "local":
        return None
    with reporter.step(f"Checking the device ({config.transport})"):
        return check_device(config, runtimes)


def runtimes(target) -> list[str | None]:
    """The device_bench runner each of a target's formats runs with on its device."""
    from edgeprep.backends import get_backend

    if target.bench is not None and target.bench.runner:
        return [target.bench.runner]
    return [get_backend(f).runtime(target.options_for(f))[0] for f in target.formats]


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


def run_target(model: Path, target, data: Path | None, out: Path | None, *, calibration_path=None,
               cli_preprocess: dict | None = None, reporter=None, split: float | None = None):
    """``edgeprep run`` with one target: the run directory's path and the target's device (when it is not this
    machine) are checked before any other work, then the run pipeline. Returns its ``RunResult``."""
    from edgeprep.backends import require
    from edgeprep.pipelines.run import run as run_pipeline
    from edgeprep.rundir import default_out_dir

    require(target.formats)      # a missing toolchain: one line before any work, not after the first format
    out = run_dir_out(out or default_out_dir(model, target))     # before the device check and any other work
    check_device_step(target.bench, runtimes(target), reporter)
    return run_pipeline(model, target, data, out, calibration_path=calibration_path, cli_preprocess=cli_preprocess,
                        reporter=reporter, split=split)


def _complete(run_dir: Path, report: dict, target, arts: list, data: Path | None, ref, unavailable: str | None):
    """Benchmark ``arts`` on the target's device and rewrite the run directory's report files with the results."""
    from edgeprep.progress import Reporter
    from edgeprep.report.build import settle
    from edgeprep.report.write import write_all
    from edgeprep.stages.bench import BenchRequest, bench_entries

    start = time.perf_counter()
    bench_entries(arts, report["artifacts"], BenchRequest(target.bench, target.threads, data, ref, unavailable),
                  Reporter(quiet=True), run_dir)
    settle(report)      # a failed benchmark added a check: recount, and the summary follows
    report["stages"].append({"name": "bench", "seconds": round(time.perf_counter() - start, 3)})
    write_all(report, run_dir)
    return report


def run_fleet(model: Path, targets: list, data: Path | None, out: Path | None, *, calibration_path=None,
              cli_preprocess: dict | None = None, reporter=None, split: float | None = None):
    """Returns the fleet report, the output directory and each target's report by sub-directory name."""
    from edgeprep.backends import require
    from edgeprep.pipelines.run import run as run_pipeline
    from edgeprep.report.write import write_all
    from edgeprep.stages.bench import evaluates_remotely, write_device_data
    from edgeprep.stages.convert import open_artifact

    require(f for t in targets for f in t.formats)
    out = run_dir_out(out or Path("runs") / f"{model_name(model)}-fleet")
    with staged_dir(out) as staging:
        results, arts, npz = {}, {}, {}
        for t in targets:
            reporter.info(f"== {t.name}: convert and verify")
            res = run_pipeline(model, t, data, staging / dir_name(t.name), calibration_path=calibration_path,
                               cli_preprocess=cli_preprocess, reporter=reporter, bench=False, split=split)
            results[t.name] = res
            arts[t.name] = [open_artifact(res.out_dir / a["path"], t.options_for) for a in res.report["artifacts"]]
            ref = res.reference
            if evaluates_remotely(t.bench, ref):   # the evaluation set the run loaded, not loaded again
                npz[t.name] = write_device_data(staging / f".{dir_name(t.name)}.device-data.npz",
                                                res.data.evaluation.arrays(ref.samples), ref.outputs)

        def work(t):
            res = results[t.name]
            if t.bench is None:
                return res.report, None, None
            device = unavailable = None
            try:
                device = check_device(t.bench, runtimes(t))
            except RuntimeUnavailable as exc:
                unavailable = str(exc)
            report = _complete(res.out_dir, res.report, t, arts[t.name], npz.get(t.name), res.reference,
                               unavailable)
            return report, device, unavailable

        reporter.info(f"Benchmarking on {len(targets)} targets' devices in parallel")
        runs, timing = fan_out(targets, work, reporter)
        for path in npz.values():
            path.unlink(missing_ok=True)
        first = results[targets[0].name].report
        report = combined_report("run", runs, timing, model=first["model"], data=first.get("data"),
                                 reference=first.get("reference"))
        write_all(report, staging)
    return report, out, {r.dir_name: r.report for r in runs if r.report is not None}
