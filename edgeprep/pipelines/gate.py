"""``edgeprep gate``: a report judged against a baseline under the target's [gates], and the files that say so.

The judging itself is ``edgeprep.gate.evaluate`` (pure: values in, verdicts out); this module finds the report,
the gates and the baseline (a file, a run directory or the run history), writes the requested Markdown, JUnit,
HTML and JSON files atomically, and keeps the baseline up to date when asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgeprep import history
from edgeprep.config import from_mapping
from edgeprep.config.bench import BenchConfig
from edgeprep.config.gates import Gates
from edgeprep.errors import InputError
from edgeprep.gate import evaluate, require_finite, to_markdown
from edgeprep.outputs import REPORT_KINDS, atomic_path, report_file_out
from edgeprep.report import load_report, validate
from edgeprep.report.latencies import read_latencies, with_latencies
from edgeprep.report.markdown import markdown_summary
from edgeprep.targets import TargetProfile, load_target


@dataclass(frozen=True)
class GateRequest:
    """What ``edgeprep gate`` was asked: exactly one of ``baseline`` and ``baseline_ref``."""

    report: Path                       # a report.json or run directory
    baseline: Path | None = None       # a baseline file, report.json or run directory
    baseline_ref: str | None = None    # a commit or tag in the run history
    target: str | None = None          # a profile whose [gates] apply instead of the report's own
    update_baseline: bool = False
    markdown: Path | None = None
    junit: Path | None = None
    html: Path | None = None
    json: Path | None = None
    history: Path | None = None
    rebench: bool | None = None        # judge latency by benchmarking both artifacts side by side, now;
                                       # None: whenever the baseline's artifacts are here (see _auto_rebench)
    rebench_seconds: float = 180.0     # per artifact: the budget of the side-by-side rounds
    rebench_mode: str = "in-process"   # a round: one process holding both ("in-process") or one each


@dataclass(frozen=True)
class GateOutcome:
    """The verdicts (None when there was no baseline yet and one was written), and what to tell the user."""

    result: dict | None
    message: str | None = None


def _gates(req: GateRequest, report: dict) -> Gates:
    target_meta = report.get("target") or {}
    if req.target:
        return load_target(req.target).gates
    if target_meta.get("profile"):
        return from_mapping(Gates, target_meta["profile"].get("gates", {}), f"{req.report} target [gates]")
    raise InputError(f"{req.report} records no target profile", "pass --target with the [gates] to apply")


ARTIFACTS_MARK = ".edgeprep-baseline-artifacts"


def baseline_artifacts_dir(path: Path) -> Path:
    """Where ``--update-baseline`` keeps the baseline's artifacts: beside the baseline file, so that the default
    gate can benchmark them side by side with the next candidate (``baseline.json`` -> ``baseline.artifacts/``)."""
    return path.with_name(f"{path.stem}.artifacts")


def _is_baseline_artifacts(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / ARTIFACTS_MARK).is_file()


def _write_baseline(report: dict, path: Path, directory: Path) -> None:
    """The baseline file (``report`` with its latencies inlined) and a copy of its artifacts beside it; entries
    whose files are missing keep their paths (the gate then judges their latency from the stored figures)."""
    import shutil

    from edgeprep.outputs import staged_dir

    baseline = with_latencies(report, directory)
    validate(baseline)
    folder = baseline_artifacts_dir(path)
    with staged_dir(folder, _is_baseline_artifacts, "a folder of baseline artifacts edgeprep wrote") as staging:
        (staging / ARTIFACTS_MARK).write_text("artifacts of the edgeprep baseline beside this folder\n")
        for entry in baseline["artifacts"]:
            sources = [directory / f for f in entry.get("files") or [entry["path"]]]
            if not all(src.exists() for src in sources):
                continue
            for src in sources:
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, staging / src.name)
            entry["path"] = f"{folder.name}/{Path(entry['path']).name}"
            entry["files"] = [f"{folder.name}/{src.name}" for src in sources]
    with atomic_path(path, REPORT_KINDS["json"]) as tmp:
        tmp.write_text(json.dumps(baseline, indent=1) + "\n")


def _report_target(req: GateRequest, report: dict) -> TargetProfile:
    """The profile whose options and [bench] settings the side-by-side benchmark uses: --target, else the one the
    report recorded."""
    if req.target:
        return load_target(req.target)
    meta = report.get("target") or {}
    if not meta.get("profile"):
        raise InputError(f"{req.report} records no target profile", "pass --target with the [bench] settings to use")
    return from_mapping(TargetProfile, {**meta["profile"], "source": meta.get("source", "")},
                        f"{req.report} target profile")


def _artifact(entry: dict, directory: Path, where: str, target: TargetProfile):
    """The artifact a report entry names, checked to be the file the report measured."""
    from edgeprep.stages.convert import open_artifact

    path = directory / entry["path"]
    if not path.exists():
        raise InputError(f"{path} ({where}) is not there",
                         "give run directories (or report.json files beside their artifacts), not a baseline file")
    art = open_artifact(path, target.options_for)
    if art.sha256 != entry["sha256"]:
        raise InputError(f"{path} is not the artifact {where} measured (sha256 differs)",
                         "re-run that report, or restore the artifact it was made from")
    return art


def _pending(req: GateRequest, report: dict, directory: Path, base: dict, base_dir: Path, gates: Gates,
             target: TargetProfile) -> list:
    """The artifacts with a latency threshold that both reports hold, each opened and checked against the sha256
    its report recorded (``InputError`` when one is missing or changed): before the first benchmark."""
    from edgeprep.report.latencies import artifact_key

    base_by_key = {artifact_key(b): b for b in base.get("artifacts", [])}
    pending = []
    for entry in report["artifacts"]:
        key = artifact_key(entry)
        limit = gates.for_precision(entry["precision"]).max_latency_regression_pct
        if limit is not None and key in base_by_key:
            pending.append((key, limit, _artifact(entry, directory, str(req.report), target),
                            _artifact(base_by_key[key], base_dir, str(req.baseline), target),
                            (entry.get("bench") or {}).get("threads") or target.threads))
    return pending


def _auto_rebench(req: GateRequest, report: dict, directory: Path, base: dict, base_dir: Path,
                  gates: Gates) -> tuple[list, str]:
    """The default latency method: side by side (the artifacts to compare, and why) when the baseline's artifacts
    are here and the target benchmarks on this machine; else none to compare and the reason stored latencies judge.
    Stored latencies from two sessions catch a +10 % regression in about 1 trial of 8 on a shared runner (README,
    gate power); side by side, in about 60 of 60."""
    if req.baseline is None:
        return [], "a history baseline has no artifacts to benchmark again"
    try:
        target = _report_target(req, report)
    except InputError as exc:
        return [], str(exc)
    transport = (target.bench or BenchConfig()).transport
    if transport != "local":
        return [], f"the target benchmarks over {transport}; give --rebench to benchmark both there now"
    try:
        pending = _pending(req, report, directory, base, base_dir, gates, target)
    except InputError as exc:
        return [], f"the artifacts cannot be benchmarked again ({exc.message})"
    if not pending:
        return [], "no artifact with a latency threshold is in both reports"
    return pending, "both artifacts are here: benchmarked side by side now"


def _rebench(req: GateRequest, report: dict, pending: list, progress: Callable[[str], None]) -> dict:
    """Side-by-side comparisons (``stages.compare``) of the ``pending`` artifacts, keyed like the gate's verdicts;
    a benchmark that fails gives its reason instead."""
    from device_bench.transports import BenchFailed
    from edgeprep.paired import Sampling
    from edgeprep.stages.compare import compare

    config = _report_target(req, report).bench or BenchConfig()
    sampling = Sampling(max_seconds=req.rebench_seconds)
    out: dict = {}
    for key, limit, cand, old, threads in pending:      # every file checked before the first benchmark
        def step(rounds, ratio, key=key):
            if ratio is not None:
                progress(f"{key}: round {rounds}, x{ratio.ratio:.3f} [{ratio.lower:.3f}, {ratio.upper:.3f}]")
        try:
            out[key] = compare(cand, old, config, threads, 1.0 + limit / 100.0, sampling, step,
                               mode=req.rebench_mode)
        except BenchFailed as exc:
            out[key] = str(exc)
    return out


def is_stdout(path: Path | None) -> bool:
    """``-`` names standard output (``--json -``, ``--markdown -``)."""
    return path is not None and str(path) == "-"


def _write(path: Path, kind: str, text: str) -> None:
    """One output file, written atomically (replacing only an edgeprep report of its kind), or standard output."""
    if is_stdout(path):
        import sys

        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_path(path, REPORT_KINDS[kind]) as tmp:
        tmp.write_text(text)


def gate_report(req: GateRequest, show: Callable[[dict], None] = lambda _result: None,
                progress: Callable[[str], None] = lambda _m: None) -> GateOutcome:
    """Judge ``req.report``; ``show(result)`` is called with the verdicts before any file is written,
    ``progress(message)`` after each side-by-side round (``--rebench``)."""
    if req.rebench and req.baseline is None:
        raise InputError("--rebench needs --baseline naming a run directory: a history entry has no artifacts",
                         "give the baseline's run directory (or its report.json beside the artifacts)")
    for option, path, kind in (("--markdown", req.markdown, "markdown"), ("--junit", req.junit, "junit"),
                               ("--html", req.html, "html"), ("--json", req.json, "json"),
                               ("--baseline", req.baseline if req.update_baseline else None, "json")):
        if path is not None and not is_stdout(path):
            report_file_out(path, kind, option)   # before any work: never a directory, never someone else's file
    if req.update_baseline:
        from edgeprep.outputs import check_replaceable

        check_replaceable(baseline_artifacts_dir(req.baseline), _is_baseline_artifacts,
                          "a folder of baseline artifacts edgeprep wrote")
    report = load_report(req.report)
    directory = req.report if req.report.is_dir() else req.report.parent
    if report.get("fleet"):
        first = report["fleet"]["targets"][0]["name"]
        raise InputError(f"{req.report} is a fleet report (several devices, each with its own [gates])",
                         f"gate each device's report, e.g. edgeprep gate {directory / first} --baseline ...")
    latencies = {} if req.rebench else read_latencies(report, directory)    # --rebench measures them anew
    target_name = (report.get("target") or {}).get("name")
    gates = _gates(req, report)

    if req.baseline_ref is not None:
        base = history.find(req.baseline_ref, req.history, target_name)
        base_dir = Path(".")
    elif not req.baseline.exists() and req.update_baseline:
        require_finite(report, latencies, str(req.report))     # never a NaN baseline
        _write_baseline(report, req.baseline, directory)
        return GateOutcome(None, f"no baseline yet: wrote {req.baseline} from {req.report}")
    else:
        if not req.baseline.exists():
            raise InputError(f"baseline not found: {req.baseline}",
                             "create one with --update-baseline, or pick one with --baseline-ref")
        base = load_report(req.baseline)
        base_dir = req.baseline if req.baseline.is_dir() else req.baseline.parent
    base_latencies = {} if req.rebench else read_latencies(base, base_dir)
    pending, why = [], "no latency threshold"
    if req.rebench:
        try:
            pending = _pending(req, report, directory, base, base_dir, gates, _report_target(req, report))
        except InputError as exc:
            raise InputError(f"--rebench needs the artifacts themselves: {exc.message}", exc.hint) from None
        why = "asked for (--rebench)"
    elif req.rebench is False:
        why = "asked for (--no-rebench)"
    elif any(gates.for_precision(a["precision"]).max_latency_regression_pct is not None for a in report["artifacts"]):
        pending, why = _auto_rebench(req, report, directory, base, base_dir, gates)
        progress(f"latency: {why}" if pending else f"latency judged from the stored latencies: {why}")
    compared = _rebench(req, report, pending, progress) if pending else None
    result = evaluate(report, base, gates, latencies, base_latencies, compared)
    result["latency_method"] = {"method": "side-by-side" if pending else "stored", "why": why}
    if compared:
        result["rebench"] = {k: (c if isinstance(c, str) else c.to_dict()) for k, c in compared.items()}
    result["baseline"] = str(req.baseline) if req.baseline is not None else f"history:{req.baseline_ref}"
    show(result)
    if req.markdown:
        _write(req.markdown, "markdown", markdown_summary(report) + "\n" + to_markdown(result))
    if req.junit:
        from edgeprep.report.junit import junit_xml

        _write(req.junit, "junit", junit_xml(report, result))
    if req.html:
        from edgeprep.report.html import html_report

        try:
            trend = history.trend(req.history, target_name)
        except InputError:      # no readable history: the report still gets its other plots
            trend = []
        _write(req.html, "html", html_report(report, directory, baseline=base, gate=result, trend=trend))
    if req.json:
        _write(req.json, "json", json.dumps(result, indent=2) + "\n")
    if result["status"] not in ("error", "failed") and req.update_baseline:
        _write_baseline(report, req.baseline, directory)
        return GateOutcome(result, f"baseline updated: {req.baseline} (its artifacts in "
                                   f"{baseline_artifacts_dir(req.baseline)})")
    return GateOutcome(result)
