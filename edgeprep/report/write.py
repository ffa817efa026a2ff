"""Write a report directory's files: report.json (validated first) and summary.md, each atomically."""

from __future__ import annotations

import json
from pathlib import Path

from edgeprep.outputs import REPORT_KINDS, atomic_path
from edgeprep.report.build import validate
from edgeprep.report.markdown import markdown_summary


def write_report(report: dict, directory: Path) -> Path:
    validate(report)  # a report that breaks its own schema is a bug: fail loudly before writing it
    directory = Path(directory)
    with atomic_path(directory / "report.json", REPORT_KINDS["json"]) as tmp:
        tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    with atomic_path(directory / "summary.md", REPORT_KINDS["markdown"]) as tmp:
        tmp.write_text(markdown_summary(report))
    return directory / "report.json"


def write_all(report: dict, directory: Path, *, baseline: dict | None = None, gate: dict | None = None,
              trend: list[dict] | None = None) -> list[Path]:
    """report.json and summary.md, plus junit.xml (CI systems) and report.html (plots), each atomically."""
    from edgeprep.report.html import html_report
    from edgeprep.report.junit import junit_xml

    directory = Path(directory)
    written = [write_report(report, directory)]
    with atomic_path(directory / "junit.xml", REPORT_KINDS["junit"]) as tmp:
        tmp.write_text(junit_xml(report, gate))
    written.append(directory / "junit.xml")
    with atomic_path(directory / "report.html", REPORT_KINDS["html"]) as tmp:
        tmp.write_text(html_report(report, directory, baseline=baseline, gate=gate, trend=trend))
    written.append(directory / "report.html")
    return written
