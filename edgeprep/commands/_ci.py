"""What a command adds under GitHub Actions (``GITHUB_ACTIONS=true``): the job summary and annotations.

- ``$GITHUB_STEP_SUMMARY`` gets the Markdown a pull-request comment would (a run's ``summary.md``; the gate's
  verdicts), appended, so each step's part shows on the run's summary page;
- every failed check gets one ``::error file=…,title=…::message`` line (a workflow command, escaped as GitHub
  asks), naming the model (the file a pull request changed) so it shows in the pull request's checks.

Outside GitHub Actions nothing here prints or writes anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import click


def active() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(file: str | None, title: str, message: str) -> str:
    """One ``::error`` workflow command."""
    props = ([f"file={_escape_property(file)}"] if file else []) + [f"title={_escape_property(title)}"]
    return f"::error {','.join(props)}::{_escape_data(message)}"


def _repo_path(path: str | None) -> str | None:
    """``path`` relative to the workspace (annotations name files in the repository), else as recorded."""
    if not path:
        return None
    root = Path(os.environ.get("GITHUB_WORKSPACE") or Path.cwd()).resolve()
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return path


def append_summary(markdown: str) -> None:
    """Append to ``$GITHUB_STEP_SUMMARY``; a summary that cannot be written is a warning, never a failed run."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    try:
        with open(target, "a", encoding="utf-8") as f:
            f.write(markdown.rstrip("\n") + "\n\n")
    except OSError as exc:
        from edgeprep.progress import Reporter

        Reporter().warn(f"job summary not written to $GITHUB_STEP_SUMMARY ({target}): {exc.strerror or exc}")


def _failed_checks(report: dict):
    """(artifact label, check name, message) for every check that failed when the report was made."""
    for a in report.get("artifacts", []):
        label = f"{a['device']}/" if a.get("device") else ""
        label += f"{a['format']} {a['precision']}"
        for c in (a.get("verification") or {}).get("checks", []):
            if not c["passed"]:
                detail = c.get("detail") or f"{c['name']}: {c.get('value')} vs threshold {c.get('threshold')}"
                yield label, c["name"], f"{Path(a['path']).name}: {detail}"
    for t in (report.get("fleet") or {}).get("targets", []):
        if t.get("error"):
            yield t["name"], "target", t["error"]


def report_to_ci(report: dict) -> None:
    """A report's summary and its failed checks, under GitHub Actions."""
    if not active():
        return
    from edgeprep.report.markdown import markdown_summary

    append_summary(markdown_summary(report))
    model = _repo_path((report.get("model") or {}).get("path"))
    target = (report.get("target") or {}).get("name")
    for label, check, message in _failed_checks(report):
        title = f"edgeprep {report['command']}" + (f" {target}" if target else "") + f": {label} {check}"
        click.echo(annotation(model, title, message))


def gate_to_ci(report: dict, result: dict, err: bool = False) -> None:
    """The gate's verdicts in the job summary, and an annotation per regression or check it could not judge;
    ``err``: on stderr (stdout carries a file, ``--json -``)."""
    if not active():
        return
    from edgeprep.gate import to_markdown

    append_summary(to_markdown(result))
    model = _repo_path((report.get("model") or {}).get("path"))
    target = (report.get("target") or {}).get("name")
    for v in result["verdicts"]:
        if v["status"] == "pass":
            continue
        what = "regression" if v["status"] == "fail" else "could not judge"
        title = "edgeprep gate" + (f" {target}" if target else "") + f": {v['artifact']} {v['check']} ({what})"
        click.echo(annotation(model, title, v.get("detail") or v["check"]), err=err)
