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
from edgeprep.config.gates import Gates
from edgeprep.errors import InputError
from edgeprep.gate import evaluate, require_finite, to_markdown
from edgeprep.outputs import REPORT_KINDS, atomic_path, report_file_out
from edgeprep.report import load_report, validate
from edgeprep.report.latencies import read_latencies, with_latencies
from edgeprep.report.markdown import markdown_summary
from edgeprep.targets import load_target


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


def _write_baseline(report: dict, path: Path) -> None:
    validate(report)
    with atomic_path(path, REPORT_KINDS["json"]) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")


def gate_report(req: GateRequest, show: Callable[[dict], None] = lambda _result: None) -> GateOutcome:
    """Judge ``req.report``; ``show(result)`` is called with the verdicts before any file is written."""
    for option, path, kind in (("--markdown", req.markdown, "markdown"), ("--junit", req.junit, "junit"),
                               ("--html", req.html, "html"), ("--json", req.json, "json"),
                               ("--baseline", req.baseline if req.update_baseline else None, "json")):
        if path is not None:
            report_file_out(path, kind, option)   # before any work: never a directory, never someone else's file
    report = load_report(req.report)
    directory = req.report if req.report.is_dir() else req.report.parent
    if report.get("fleet"):
        first = report["fleet"]["targets"][0]["name"]
        raise InputError(f"{req.report} is a fleet report (several devices, each with its own [gates])",
                         f"gate each device's report, e.g. edgeprep gate {directory / first} --baseline ...")
    latencies = read_latencies(report, directory)
    target_name = (report.get("target") or {}).get("name")
    gates = _gates(req, report)

    if req.baseline_ref is not None:
        base = history.find(req.baseline_ref, req.history, target_name)
        base_dir = Path(".")
    elif not req.baseline.exists() and req.update_baseline:
        require_finite(report, latencies, str(req.report))     # never a NaN baseline
        _write_baseline(with_latencies(report, directory), req.baseline)
        return GateOutcome(None, f"no baseline yet: wrote {req.baseline} from {req.report}")
    else:
        if not req.baseline.exists():
            raise InputError(f"baseline not found: {req.baseline}",
                             "create one with --update-baseline, or pick one with --baseline-ref")
        base = load_report(req.baseline)
        base_dir = req.baseline if req.baseline.is_dir() else req.baseline.parent
    base_latencies = read_latencies(base, base_dir)
    result = evaluate(report, base, gates, latencies, base_latencies)
    result["baseline"] = str(req.baseline) if req.baseline is not None else f"history:{req.baseline_ref}"
    show(result)
    if req.markdown:
        with atomic_path(req.markdown, REPORT_KINDS["markdown"]) as tmp:
            tmp.write_text(markdown_summary(report) + "\n" + to_markdown(result))
    if req.junit:
        from edgeprep.report.junit import junit_xml

        with atomic_path(req.junit, REPORT_KINDS["junit"]) as tmp:
            tmp.write_text(junit_xml(report, result))
    if req.html:
        from edgeprep.report.html import html_report

        try:
            trend = history.trend(req.history, target_name)
        except InputError:      # no readable history: the report still gets its other plots
            trend = []
        with atomic_path(req.html, REPORT_KINDS["html"]) as tmp:
            tmp.write_text(html_report(report, directory, baseline=base, gate=result, trend=trend))
    if req.json:
        with atomic_path(req.json, REPORT_KINDS["json"]) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
    if result["status"] not in ("error", "failed") and req.update_baseline:
        _write_baseline(with_latencies(report, directory), req.baseline)
        return GateOutcome(result, f"baseline updated: {req.baseline}")
    return GateOutcome(result)
