"""Bench stage: each artifact benchmarked by device_bench in a fresh process, as the ``bench`` object of its entry.

``bench_each`` is the one per-artifact bench loop (``edgeprep run``, ``edgeprep bench`` and fleets call it) and
``write_device_data`` the one writer of the device data file: the evaluation inputs, labels and float reference
outputs that a benchmark process evaluates the artifact on (on a device other than this machine, with its kernels).
The per-iteration latencies, which the gate's statistics need, go to a side file (``latencies.json`` beside
report.json, keyed by artifact file name) so the report stays readable. A benchmark that fails or times out is
recorded as such on its artifact (``bench.status = "error"`` and a failed ``bench`` check); the other artifacts'
results are kept. An artifact no runtime here executes (Core ML on Linux) is ``unavailable``, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from device_bench.bench import Job
from device_bench.harness import benchmark, count_instructions
from device_bench.transports import BenchFailed
from edgeprep.artifact import Artifact
from edgeprep.config.bench import BenchConfig
from edgeprep.gate import accuracy_drop
from edgeprep.progress import Reporter
from edgeprep.report.latencies import LATENCIES_FILE, write_latencies

if TYPE_CHECKING:
    from edgeprep.stages.verify import Reference


@dataclass(frozen=True)
class BenchOutcome:
    """One artifact's benchmark: the report's ``bench`` object, its raw latencies and any measured metrics."""

    bench: dict
    latencies_ms: tuple[tuple[float, ...], ...] = ()      # one tuple per benchmark process
    metrics: dict | None = None

    @property
    def ok(self) -> bool:
        return self.bench["status"] == "ok"


def job_for(artifact: Artifact, config: BenchConfig, threads: int | None, data: Path | None = None) -> Job:
    """The device_bench job; ``[bench] runner`` (with its ``options``) replaces the runner that executes the
    artifact here — a Mac runs Core ML itself where this machine has only the reference executor."""
    runtime, options = (config.runner, dict(config.options)) if config.runner else \
        (artifact.runtime, dict(artifact.runtime_options))
    return Job(str(artifact.path), runtime, config.threads or threads, options, config.runs, config.warmup,
               config.min_seconds, str(data) if data else None, profile=config.profile)


def device_entry(result: dict) -> dict:
    """The report's ``bench.device``: the machine the benchmark process saw and the transport that reached it."""
    return {**(result.get("device") or {}), **(result.get("transport") or {})}


def bench_artifact(artifact: Artifact, config: BenchConfig, threads: int | None = None,
                   data: Path | None = None) -> BenchOutcome:
    """Benchmark one artifact (and count its instructions when the config asks); never raises for a benchmark
    that fails — the outcome says what happened."""
    if artifact.runtime is None and not config.runner:
        return BenchOutcome({"status": "unavailable", "error": artifact.unavailable_reason or "no runtime here",
                             "transport": config.transport})
    from device_bench.runners import get_runner

    not_timed = get_runner(config.runner or artifact.runtime).timing_meaningless
    if not_timed:
        return BenchOutcome({"status": "unavailable", "error": f"not benchmarked: {not_timed}",
                             "transport": config.transport})
    job = job_for(artifact, config, threads, data)
    results = []
    for i in range(config.repeats):
        try:   # the evaluation data is read, and the profile taken, once: by the first process
            results.append(benchmark(job if i == 0 else replace(job, data=None, profile=False), config.transport,
                                     config.timeout_seconds, **config.transport_settings()))
        except BenchFailed as exc:
            return BenchOutcome({"status": "error", "error": str(exc), "kind": exc.kind, "runner": job.runtime,
                                 "threads": job.threads, "transport": config.transport})
    bench = {"status": "ok", **combine(results), "transport": config.transport, "latencies_file": LATENCIES_FILE,
             "executed_by": results[0]["runtime"], "device": device_entry(results[0])}
    if results[0].get("profile"):
        bench["profile"] = results[0]["profile"]
    if config.instructions:
        try:
            bench["instructions"] = count_instructions(Job(job.artifact, job.runtime, 1, job.options),
                                                       config.transport, config.timeout_seconds * 3,
                                                       **config.transport_settings())
        except BenchFailed as exc:
            bench["instructions"] = {"error": str(exc)}
    return BenchOutcome(bench, tuple(tuple(r["latencies_ms"]) for r in results), results[0].get("metrics"))


def combine(results: list[dict]) -> dict:
    """One bench object from several processes: latency statistics over all iterations, the median process's
    load and first-inference times, the largest peak RSS, and each process's median latency."""
    import statistics

    from device_bench.measure import latency_stats

    first = results[0]["bench"]
    if len(results) == 1:
        return {**first, "repeats": 1, "process_p50_ms": [first["latency_ms"]["p50"]]}
    pooled = [v for r in results for v in r["latencies_ms"]]
    worst = max(results, key=lambda r: r["bench"]["peak_rss_bytes"])["bench"]
    seconds = sum(r["bench"]["measured_seconds"] for r in results)
    return {**first, "repeats": len(results), "iterations": len(pooled),
            "load_ms": statistics.median(r["bench"]["load_ms"] for r in results),
            "first_inference_ms": statistics.median(r["bench"]["first_inference_ms"] for r in results),
            "measured_seconds": round(seconds, 4), "throughput_ips": round(len(pooled) / seconds, 3),
            "latency_ms": latency_stats(pooled), "peak_rss_bytes": worst["peak_rss_bytes"],
            "runtime_rss_bytes": worst["runtime_rss_bytes"], "rss_delta_bytes": worst["rss_delta_bytes"],
            "process_p50_ms": [r["bench"]["latency_ms"]["p50"] for r in results]}


def profile_line(profile: dict, top: int = 4) -> str:
    """Where one inference's time goes, in a line: the op types with the largest shares."""
    parts = [f"{t['type']} {t['share']:.0%} ({t['count']})" for t in profile["by_type"][:top]]
    return f"time by op type ({profile['total_ms']:.3g} ms counted): " + ", ".join(parts)


def failed_check(outcome: BenchOutcome) -> dict | None:
    """A failed ``bench`` check for an artifact whose benchmark did not complete (so the run is not green)."""
    if outcome.bench["status"] != "error":
        return None
    return {"name": "bench", "value": outcome.bench.get("kind", "error"), "threshold": None, "passed": False,
            "detail": outcome.bench.get("error")}


def attach(entry: dict, outcome: BenchOutcome) -> dict:
    """Add ``outcome`` to a report artifact entry (in place): the bench object and, if it failed, a failed check."""
    entry["bench"] = outcome.bench
    check = failed_check(outcome)
    if check:
        entry["verification"].setdefault("checks", []).append(check)
        entry["verification"]["status"] = "failed"
    return entry


def evaluates_remotely(config: BenchConfig | None, ref: Reference | None) -> bool:
    """Whether a run's artifacts are also evaluated on their device (``bench.metrics``): when it is not this machine
    and there is a float reference to compare with (this machine's figures are the run's verification)."""
    return ref is not None and config is not None and config.transport != "local"


def write_device_data(path: Path, inputs: tuple, ref_outputs=None) -> Path:
    """The device data file a benchmark process evaluates on: ``inputs``, the ``(x, y)`` of
    ``Dataset.arrays(n)`` (``x`` saved as float32, the labels ``y`` when the data has them), and the float model's
    outputs on them (``ref``, when given), so accuracy, agreement and SQNR are computed by the runtime that runs
    the artifact."""
    import numpy as np

    x, y = inputs
    arrays = {"x": x.astype(np.float32)}
    if y is not None:
        arrays["y"] = y
    if ref_outputs is not None:
        arrays["ref"] = ref_outputs
    np.savez(path, **arrays)
    return path


def with_device_metrics(outcome: BenchOutcome, ref) -> BenchOutcome:
    """Put the metrics measured on the device into the bench object (``bench.metrics``), with the drop against
    the float model's accuracy."""
    if not outcome.ok or not outcome.metrics:
        return outcome
    values = dict(outcome.metrics)
    if values.get("accuracy") is not None and ref is not None and ref.accuracy is not None:
        values["accuracy_drop"] = accuracy_drop(ref.accuracy, values["accuracy"])
    return replace(outcome, bench={**outcome.bench, "metrics": values})


@dataclass(frozen=True)
class BenchRequest:
    """How one device benchmarks a list of artifacts."""

    config: BenchConfig
    threads: int | None = None             # the target's threads (``[bench] threads`` wins)
    data: Path | None = None               # the device data file (``write_device_data``), or None
    reference: Reference | None = None     # given: the device's metrics, with the drop against it, in bench.metrics
    unavailable: str | None = None         # the device cannot be used: each artifact records this error instead


@dataclass(frozen=True)
class BenchResults:
    """Each artifact's outcome (in the artifacts' order) and the raw latencies of those that completed, keyed by
    artifact file name (what ``write_latencies`` writes)."""

    outcomes: tuple[BenchOutcome, ...] = ()
    latencies: dict[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)


def unreachable(config: BenchConfig, error: str) -> BenchOutcome:
    """The outcome of an artifact whose device could not be used."""
    return BenchOutcome({"status": "error", "error": error, "kind": "unreachable", "transport": config.transport})


def bench_each(artifacts: Sequence[Artifact], request: BenchRequest, reporter: Reporter, *,
               by_file_name: bool = False) -> BenchResults:
    """The bench loop: benchmark every artifact per ``request``, one after another, each a progress step; a
    benchmark that did not complete is a warning. Steps and warnings name an artifact by its label (the step also
    its transport), or with ``by_file_name`` by its file name (``edgeprep bench``: its artifacts may share a
    format and precision)."""
    config = request.config
    outcomes, latencies = [], {}
    for art in artifacts:
        name = art.path.name if by_file_name else art.label
        if request.unavailable:
            outcome = unreachable(config, request.unavailable)
        else:
            where = "" if by_file_name else f", {config.transport}"
            with reporter.step(f"Benchmarking {name} ({config.repeats} processes x {config.runs} runs{where})"):
                outcome = bench_artifact(art, config, request.threads, request.data)
                if request.reference is not None:
                    outcome = with_device_metrics(outcome, request.reference)
        outcomes.append(outcome)
        if outcome.ok:
            latencies[art.path.name] = outcome.latencies_ms
            if (outcome.bench.get("profile") or {}).get("available"):
                reporter.info(f"{name}: {profile_line(outcome.bench['profile'])}")
        else:
            reporter.warn(f"{name}: benchmark {outcome.bench['status']}: {outcome.bench['error']}")
    return BenchResults(tuple(outcomes), latencies)


SLOWER_MARGIN = 1.05     # an int8 median this much above its fp32 sibling's is flagged as slower


def _slower_cause(int8: dict, fp32: dict) -> str | None:
    """Why the int8 artifact is slower, from what the runtime recorded; None when it says nothing."""
    b8, b32 = int8.get("bench") or {}, fp32.get("bench") or {}
    d8 = (b8.get("executed_by") or {}).get("delegation")
    d32 = (b32.get("executed_by") or {}).get("delegation") or {}
    if d8:
        extra = {op: n - (d32.get("not_delegated") or {}).get(op, 0) for op, n in d8["not_delegated"].items()}
        extra = {op: n for op, n in extra.items() if n > 0}
        if extra:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(extra.items(), key=lambda kv: -kv[1]))
            return (f"the delegate did not take {ops} in int8 ({d8['partitions']} delegate partitions against "
                    f"{d32.get('partitions', '?')} in fp32): those run on the builtin kernels between partitions")
        same = ("the delegate took the same ops in both: its int8 kernels are slower than its fp32 ones for this "
                "model on this CPU")
        if "amx_int8" in ((b8.get("device") or {}).get("matrix_units") or []):
            same += (" (it has AMX, whose int8 tile kernels XNNPACK takes and which lose to AVX-512 on narrow layers: "
                     "an edge CPU without AMX can rank int8 and fp32 the other way)")
        return same
    p8, p32 = b8.get("profile") or {}, b32.get("profile") or {}
    if p8.get("available") and p32.get("available"):
        before = {t["type"]: t["ms"] for t in p32["by_type"]}
        grew = sorted(((t["ms"] - before.get(t["type"], 0.0), t["type"]) for t in p8["by_type"]), reverse=True)
        parts = [f"{name} +{ms:.3g} ms" for ms, name in grew[:3] if ms > 0]
        if parts:
            return "per-op counters, int8 against fp32: " + ", ".join(parts)
    return None


def flag_slower_int8(entries: list[dict], reporter: Reporter | None = None) -> list[dict]:
    """Mark (``bench.slower_than_fp32``) and warn about every int8 artifact whose median latency is above its fp32
    sibling's (the same format, on the same device) by more than ``SLOWER_MARGIN``: a user deploying int8 for speed
    gets a slower model there. Returns the marks."""
    def p50(entry):
        bench = entry.get("bench") or {}
        return (bench.get("latency_ms") or {}).get("p50") if bench.get("status") == "ok" else None

    fp32 = {(e.get("format"), e.get("device")): e for e in entries if e.get("precision") == "fp32" and p50(e)}
    marks = []
    for e in entries:
        base = fp32.get((e.get("format"), e.get("device")))
        if e.get("precision") != "int8" or base is None or not p50(e) or p50(e) < SLOWER_MARGIN * p50(base):
            continue
        slower, faster = e["bench"].get("process_p50_ms") or [], base["bench"].get("process_p50_ms") or []
        mark = {"ratio": round(p50(e) / p50(base), 3), "fp32_p50_ms": p50(base), "int8_p50_ms": p50(e),
                "every_process": bool(slower and faster and min(slower) > max(faster))}
        cause = _slower_cause(e, base)
        if cause:
            mark["cause"] = cause
        e["bench"]["slower_than_fp32"] = mark
        marks.append(mark)
        if reporter is not None:
            label = f"{e.get('format')} int8" + (f" on {e['device']}" if e.get("device") else "")
            reporter.warn(f"{label} is slower than its fp32 sibling: p50 {mark['int8_p50_ms']:.4g} ms vs "
                          f"{mark['fp32_p50_ms']:.4g} ms (x{mark['ratio']:.2f}"
                          + (", in every benchmark process" if mark["every_process"] else "")
                          + "): int8 is no speed-up for this model on this device"
                          + (f"; {cause}" if cause else ""))
    return marks


def bench_entries(artifacts: Sequence[Artifact], entries: list[dict], request: BenchRequest, reporter: Reporter,
                  directory: Path) -> BenchResults:
    """``bench_each`` for artifacts already in a report: each outcome attached to its entry (``attach``), int8
    artifacts slower than their fp32 sibling flagged (``flag_slower_int8``) and the raw latencies written to
    ``directory``/latencies.json."""
    pairs = list(zip(artifacts, entries))
    results = bench_each([art for art, _ in pairs], request, reporter)
    for (_, entry), outcome in zip(pairs, results.outcomes):
        attach(entry, outcome)
    flag_slower_int8(entries, reporter)
    write_latencies(directory, results.latencies)
    return results
