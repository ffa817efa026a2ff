"""``edgeprep gate``: compare a report with a stored baseline under the target's [gates]; exit 0, 1 or 2."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeprep.commands._common import EXIT_ERROR, EXIT_FAILED_CHECK, EXIT_OK


@click.command()
@click.argument("report_path", metavar="REPORT", type=click.Path(path_type=Path))
@click.option("-b", "--baseline", type=click.Path(path_type=Path), metavar="PATH",
              help="Baseline file (written by --update-baseline), or a report.json / run directory.")
@click.option("--baseline-ref", metavar="COMMIT_OR_TAG",
              help="Take the baseline from the run history: the latest run of this tag or commit (prefix).")
@click.option("-t", "--target", "target_name", metavar="NAME_OR_PATH",
              help="Apply this profile's [gates] (default: the profile recorded in REPORT).")
@click.option("--update-baseline", is_flag=True,
              help="Write REPORT as the new baseline at --baseline when the gate passes (or none exists yet).")
@click.option("--markdown", type=click.Path(path_type=Path), metavar="PATH",
              help="Write the report and the verdicts as Markdown (a pull-request comment).")
@click.option("--junit", type=click.Path(path_type=Path), metavar="PATH", help="Write JUnit XML for CI systems.")
@click.option("--html", type=click.Path(path_type=Path), metavar="PATH",
              help="Write the HTML report with plots, the comparison and the history trend.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), metavar="PATH",
              help="Write the verdicts as JSON.")
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="PATH",
              help="Run history for --baseline-ref and the trend plot (default: $EDGEPREP_HISTORY or "
                   ".edgeprep/history.sqlite).")
def gate(report_path: Path, baseline: Path | None, baseline_ref: str | None, target_name: str | None,
         update_baseline: bool, markdown: Path | None, junit: Path | None, html: Path | None,
         json_path: Path | None, history_path: Path | None) -> int:
    """Judge REPORT (a report.json or run directory) against a baseline with the target's [gates].

    \b
    Checks, each only when its threshold is set in [gates] (per precision in [gates.int8] etc.):
      max_size_bytes, max_size_growth_pct           size, and growth over the baseline in %
      max_accuracy_drop, min_agreement, min_sqnr_db vs the float model
      max_accuracy_drop_vs_baseline                 top-1 points below the baseline artifact
      max_latency_regression_pct                    median latency over the baseline's; fails only when the
                                                    bootstrap interval of the ratio (latency_confidence, 95 %)
                                                    lies wholly above the threshold
      max_instructions_regression_pct               callgrind instructions per inference over the baseline's
    Artifacts are matched by file name. Exit code 0: every check passed; 1: a regression; 2: the gate could not
    judge (a metric is missing, the baseline is unreadable or of another schema version) — never a pass.
    """
    from edgeprep import history
    from edgeprep.config import from_mapping
    from edgeprep.config.gates import Gates
    from edgeprep.errors import InputError
    from edgeprep.gate import evaluate, require_finite, to_markdown
    from edgeprep.outputs import REPORT_KINDS, OutputError, atomic_path, report_file_out
    from edgeprep.report import load_report, validate
    from edgeprep.report.latencies import read_latencies, with_latencies
    from edgeprep.report.markdown import markdown_summary
    from edgeprep.targets import load_target

    if (baseline is None) == (baseline_ref is None):
        raise InputError("give exactly one of --baseline PATH and --baseline-ref COMMIT_OR_TAG",
                         "see 'edgeprep gate --help'")
    if update_baseline and baseline is None:
        raise InputError("--update-baseline needs --baseline PATH", "name the file to write")
    if update_baseline and baseline.is_dir():
        raise OutputError(f"--baseline {baseline} is a directory; --update-baseline writes a baseline file",
                          f"give a file path, e.g. {baseline.with_name(baseline.name + '.baseline.json')}")
    for option, path, kind in (("--markdown", markdown, "markdown"), ("--junit", junit, "junit"),
                               ("--html", html, "html"), ("--json", json_path, "json"),
                               ("--baseline", baseline if update_baseline else None, "json")):
        if path is not None:
            report_file_out(path, kind, option)   # before any work: never a directory, never someone else's file
    report = load_report(report_path)
    directory = report_path if report_path.is_dir() else report_path.parent
    if report.get("fleet"):
        first = report["fleet"]["targets"][0]["name"]
        raise InputError(f"{report_path} is a fleet report (several devices, each with its own [gates])",
                         f"gate each device's report, e.g. edgeprep gate {directory / first} --baseline ...")
    latencies = read_latencies(report, directory)
    target_meta = report.get("target") or {}
    if target_name:
        gates = load_target(target_name).gates
    elif target_meta.get("profile"):
        gates = from_mapping(Gates, target_meta["profile"].get("gates", {}), f"{report_path} target [gates]")
    else:
        raise InputError(f"{report_path} records no target profile", "pass --target with the [gates] to apply")

    if baseline_ref is not None:
        base = history.find(baseline_ref, history_path, target_meta.get("name"))
        base_dir = Path(".")
    elif not baseline.exists() and update_baseline:
        require_finite(report, latencies, str(report_path))     # never a NaN baseline
        _write_baseline(with_latencies(report, directory), baseline, validate, atomic_path)
        click.echo(f"no baseline yet: wrote {baseline} from {report_path}")
        return EXIT_OK
    else:
        if not baseline.exists():
            raise InputError(f"baseline not found: {baseline}",
                             "create one with --update-baseline, or pick one with --baseline-ref")
        base = load_report(baseline)
        base_dir = baseline if baseline.is_dir() else baseline.parent
    base_latencies = read_latencies(base, base_dir)
    result = evaluate(report, base, gates, latencies, base_latencies)
    result["baseline"] = str(baseline) if baseline is not None else f"history:{baseline_ref}"
    _print(result)
    if markdown:
        with atomic_path(markdown, REPORT_KINDS["markdown"]) as tmp:
            tmp.write_text(markdown_summary(report) + "\n" + to_markdown(result))
    if junit:
        from edgeprep.report.junit import junit_xml

        with atomic_path(junit, REPORT_KINDS["junit"]) as tmp:
            tmp.write_text(junit_xml(report, result))
    if html:
        from edgeprep.report.html import html_report

        try:
            trend = history.trend(history_path, target_meta.get("name"))
        except InputError:      # no readable history: the report still gets its other plots
            trend = []
        with atomic_path(html, REPORT_KINDS["html"]) as tmp:
            tmp.write_text(html_report(report, directory, baseline=base, gate=result, trend=trend))
    if json_path:
        with atomic_path(json_path, REPORT_KINDS["json"]) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
    if result["status"] == "error":
        first = next(v for v in result["verdicts"] if v["status"] == "error")
        click.echo(f"edgeprep: error: the gate could not judge {result['counts']['error']} check(s); first: "
                   f"{first['artifact']} {first['check']}: {first['detail']}", err=True)
        return EXIT_ERROR
    if result["status"] == "failed":
        return EXIT_FAILED_CHECK
    if update_baseline:
        _write_baseline(with_latencies(report, directory), baseline, validate, atomic_path)
        click.echo(f"baseline updated: {baseline}")
    return EXIT_OK


def _write_baseline(report: dict, path: Path, validate, atomic_path) -> None:
    validate(report)
    from edgeprep.outputs import REPORT_KINDS

    with atomic_path(path, REPORT_KINDS["json"]) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")


def _print(result: dict) -> None:
    from rich.table import Table

    from edgeprep.progress import result_console

    c = result["counts"]      # never zero checks: a gate with nothing to check is an error (gate.evaluate)
    table = Table(title=f"gate vs {result.get('baseline')}: {result['status'].upper()} ({c['pass']} passed, "
                        f"{c['fail']} regressed, {c['error']} could not be judged)", title_justify="left")
    for col in ("artifact", "check", "verdict", "detail"):
        table.add_column(col)
    styles = {"fail": "red", "error": "yellow", "pass": None}
    for v in result["verdicts"]:
        table.add_row(v["artifact"], v["check"], v["status"], v["detail"], style=styles[v["status"]])
    result_console().print(table)
