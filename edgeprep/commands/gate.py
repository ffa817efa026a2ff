"""``edgeprep gate``: compare a report with a stored baseline under the target's [gates]; exit 0, 1 or 2."""

from __future__ import annotations

from pathlib import Path

import click

from edgeprep.commands._common import EXIT_ERROR, EXIT_FAILED_CHECK, EXIT_OK, complete_target, make_reporter


@click.command()
@click.argument("report_path", metavar="REPORT", type=click.Path(path_type=Path))
@click.option("-b", "--baseline", type=click.Path(path_type=Path), metavar="PATH",
              help="Baseline file (written by --update-baseline), or a report.json / run directory.")
@click.option("--baseline-ref", metavar="COMMIT_OR_TAG",
              help="Take the baseline from the run history: the latest run of this tag or commit (prefix).")
@click.option("-t", "--target", "target_name", metavar="NAME_OR_PATH", shell_complete=complete_target,
              help="Apply this profile's [gates] (default: the profile recorded in REPORT).")
@click.option("--update-baseline", is_flag=True,
              help="Write REPORT as the new baseline at --baseline when the gate passes (or none exists yet).")
@click.option("--markdown", type=click.Path(path_type=Path, allow_dash=True), metavar="PATH",
              help="Write the report and the verdicts as Markdown (a pull-request comment); '-': to stdout.")
@click.option("--junit", type=click.Path(path_type=Path, allow_dash=True), metavar="PATH",
              help="Write JUnit XML for CI systems; '-': to stdout.")
@click.option("--html", type=click.Path(path_type=Path, allow_dash=True), metavar="PATH",
              help="Write the HTML report with plots, the comparison and the history trend; '-': to stdout.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, allow_dash=True), metavar="PATH",
              help="Write the verdicts as JSON; '-': to stdout (the table and messages then go to stderr).")
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="PATH",
              help="Run history for --baseline-ref and the trend plot (default: $EDGEPREP_HISTORY or "
                   ".edgeprep/history.sqlite).")
@click.option("--rebench/--no-rebench", default=None,
              help="Judge latency by benchmarking the baseline's artifact and REPORT's side by side now, in "
                   "alternating rounds, until the ratio's interval is wholly above or below the threshold "
                   "(needs both artifacts; the stored latencies are not used). Default: side by side whenever "
                   "both artifacts are here and the target benchmarks on this machine, else the stored "
                   "latencies (the console and the JSON's latency_method say which and why).")
@click.option("--rebench-seconds", type=click.FloatRange(min=1), default=180.0, show_default=True,
              metavar="SECONDS", help="Per artifact: stop adding rounds after this long; still undecided is an "
                                      "error (exit 2), never a pass.")
@click.option("--rebench-mode", type=click.Choice(["in-process", "processes"]), default="in-process",
              show_default=True, help="A round of --rebench: one fresh process holding both artifacts, their "
                                      "iterations alternating (the same machine state for both), or one fresh "
                                      "process each (each alone, as deployed; noisier).")
@click.pass_context
def gate(ctx: click.Context, report_path: Path, baseline: Path | None, baseline_ref: str | None,
         target_name: str | None, update_baseline: bool, markdown: Path | None, junit: Path | None,
         html: Path | None, json_path: Path | None, history_path: Path | None, rebench: bool | None,
         rebench_seconds: float, rebench_mode: str) -> int:
    """Judge REPORT (a report.json or run directory) against a baseline with the target's [gates].

    \b
    Checks, each only when its threshold is set in [gates] (per precision in [gates.int8] etc.):
      max_size_bytes, max_size_growth_pct           size, and growth over the baseline in %
      max_accuracy_drop, min_agreement, min_sqnr_db vs the float model
      max_accuracy_drop_vs_baseline                 top-1 points below the baseline artifact
      max_latency_regression_pct                    median latency over the baseline's. By default, when both
                                                    artifacts are here: benchmarked now, side by side, in
                                                    rounds (one process holding both, iterations alternating)
                                                    until the t interval of the paired ratio (95 % per look)
                                                    is wholly above (fail) or below (pass) it; undecided is
                                                    exit 2. Otherwise (or --no-rebench) the stored latencies:
                                                    fails only when the bootstrap interval of the ratio
                                                    (latency_confidence, 95 %) lies wholly above it
      max_instructions_regression_pct               callgrind instructions per inference over the baseline's
    Artifacts are matched by file name. Exit code 0: every check passed; 1: a regression; 2: the gate could not
    judge (a metric is missing, the baseline is unreadable or of another schema version) — never a pass.
    """
    from edgeprep.commands._ci import gate_to_ci
    from edgeprep.errors import InputError
    from edgeprep.outputs import OutputError
    from edgeprep.pipelines.gate import GateRequest, gate_report, is_stdout
    from edgeprep.report import load_report

    if (baseline is None) == (baseline_ref is None):
        raise InputError("give exactly one of --baseline PATH and --baseline-ref COMMIT_OR_TAG",
                         "see 'edgeprep gate --help'")
    if update_baseline and baseline is None:
        raise InputError("--update-baseline needs --baseline PATH", "name the file to write")
    if update_baseline and baseline.is_dir():
        raise OutputError(f"--baseline {baseline} is a directory; --update-baseline writes a baseline file",
                          f"give a file path, e.g. {baseline.with_name(baseline.name + '.baseline.json')}")
    dashes = [name for name, path in (("--markdown", markdown), ("--junit", junit), ("--html", html),
                                      ("--json", json_path)) if is_stdout(path)]
    if len(dashes) > 1:
        raise InputError(f"{' and '.join(dashes)} all name stdout ('-'): it can carry one of them",
                         "write the others to files")
    to_stderr = bool(dashes)      # stdout carries a file: the table and the messages go to stderr
    reporter = make_reporter(ctx)
    outcome = gate_report(GateRequest(report_path, baseline, baseline_ref, target_name, update_baseline, markdown,
                                      junit, html, json_path, history_path, rebench, rebench_seconds,
                                      rebench_mode),
                          show=lambda result: _print(result, to_stderr), progress=reporter.info)
    result = outcome.result
    if result is not None:
        gate_to_ci(load_report(report_path), result, err=to_stderr)
    if result is not None and result["status"] == "error":
        first = next(v for v in result["verdicts"] if v["status"] == "error")
        click.echo(f"edgeprep: error: the gate could not judge {result['counts']['error']} check(s); first: "
                   f"{first['artifact']} {first['check']}: {first['detail']}", err=True)
        return EXIT_ERROR
    if result is not None and result["status"] == "failed":
        return EXIT_FAILED_CHECK
    if outcome.message:
        click.echo(outcome.message, err=to_stderr)
    return EXIT_OK


def _print(result: dict, to_stderr: bool = False) -> None:
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
    result_console(stderr=to_stderr).print(table)      # reads no markup: "[bench]" in a detail stays
