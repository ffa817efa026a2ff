"""``edgeprep bench``: benchmark existing artifacts with device_bench, each in a fresh process."""

from __future__ import annotations

from pathlib import Path

import click

from edgeprep.commands._common import (
    EXIT_FAILED_CHECK,
    EXIT_OK,
    collect_preprocess,
    complete_target,
    make_reporter,
    preprocess_options,
    print_table,
    record_history,
)


@click.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-t", "--target", "target_name", shell_complete=complete_target, metavar="NAME_OR_PATH",
              help="Take [bench] settings (where it runs: this machine, the ARM64 emulator, an ssh device), "
                   "threads, runtime options, preprocessing and [gates] from this profile.")
@click.option("--targets", "targets_csv", shell_complete=complete_target, metavar="A,B,C",
              help="Benchmark on several targets' devices in parallel (one benchmark per device at a time): "
                   "OUT/report.json covers them all, OUT/<target>/ holds each device's own report.")
@click.option("-d", "--data", type=click.Path(path_type=Path), metavar="PATH",
              help="Evaluation data (manifest, .npz, .npy or image folder): adds accuracy (labels) to the report.")
@click.option("-m", "--model", type=click.Path(path_type=Path), metavar="MODEL",
              help="The float model the artifacts came from: adds agreement, SQNR and accuracy drop (needs --data).")
@click.option("--threads", type=click.IntRange(min=1), help="Runtime threads (default: [bench] threads, else the "
                                                            "target's, else 2).")
@click.option("--runs", type=click.IntRange(min=1), help="Timed iterations per artifact (default: [bench] runs, 100).")
@click.option("--repeats", type=click.IntRange(min=1),
              help="Fresh processes per artifact (default: [bench] repeats, 3); the gate's statistics use the "
                   "spread between them.")
@click.option("--warmup", type=click.IntRange(min=0), help="Untimed iterations after the first (default 10).")
@click.option("--min-time", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Iterate until this much measured time has passed, if longer than --runs (default 0).")
@click.option("--timeout", type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="Stop a benchmark still running after this long and report it as an error (default 300).")
@click.option("--instructions", is_flag=True, default=None,
              help="Also count instructions per inference with valgrind's callgrind (1 thread; slow).")
@click.option("--profile", is_flag=True, default=None,
              help="Also record where the time goes per op type and the slowest nodes, from the runtime's own "
                   "per-node counters (OpenVINO); LiteRT reports which ops XNNPACK did not take instead.")
@click.option("--samples", type=click.IntRange(min=1), help="Evaluate on the first N samples of --data only.")
@click.option("-o", "--out", type=click.Path(path_type=Path), metavar="DIR", default=Path("runs/bench"),
              show_default=True, help="Report directory: report.json, latencies.json, summary.md, report.html, "
                                      "junit.xml. New, empty or an earlier edgeprep run directory (replaced "
                                      "only when every benchmark has run); anything else is refused.")
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="PATH",
              help="SQLite run history to record this run in (default: $EDGEPREP_HISTORY or "
                   ".edgeprep/history.sqlite).")
@click.option("--no-history", is_flag=True, help="Do not record this run in the history.")
@preprocess_options
@click.pass_context
def bench(ctx: click.Context, artifacts: tuple[Path, ...], target_name: str | None, targets_csv: str | None,
          data: Path | None, model: Path | None, threads: int | None, runs: int | None, repeats: int | None,
          warmup: int | None, min_time: float | None, timeout: float | None, instructions: bool | None,
          profile: bool | None, samples: int | None, out: Path, history_path: Path | None, no_history: bool,
          **kw) -> int:
    """Benchmark ARTIFACTS (.tflite, OpenVINO .xml, Core ML .mlpackage) with device_bench, each in a fresh process.

    Measures size, load time, first inference, latency (mean, std, min, p50, p90, p99) over the timed
    iterations, throughput, and peak RSS with its increase over the runtime alone; with --data also accuracy, and
    with --model also agreement and SQNR against the float model. Writes OUT/report.json (the same schema as
    'edgeprep run', each artifact with a 'bench' object) and the raw latencies that 'edgeprep gate' compares.
    The target's [bench] transport says where: this machine, the ARM64 emulator (make emulator) or a device
    over ssh; a device that cannot be reached is refused up front (exit code 2), or with --targets recorded as
    that device's error while the others run. Exit code 1 when a benchmark failed or timed out (the others are
    still reported) or a [gates] threshold failed. Without --data the numerics are "unmeasured"; without a
    target's [gates] (or without --model, accuracy only) they are "measured", never "verified".
    """
    from edgeprep.pipelines.bench import BenchInputs, run_bench
    from edgeprep.report import exit_ok

    reporter = make_reporter(ctx)
    overrides = {k: v for k, v in {"runs": runs, "repeats": repeats, "warmup": warmup, "min_seconds": min_time,
                                   "threads": threads, "timeout_seconds": timeout,
                                   "instructions": instructions, "profile": profile}.items() if v is not None}
    result = run_bench(BenchInputs(artifacts, target_name, targets_csv, data, model, collect_preprocess(kw), samples,
                                   overrides), out, reporter)
    print_table(result.report)
    if not no_history:
        record_history([(one, result.out_dir / sub / "report.json") for sub, one in result.reports], history_path,
                       reporter)
    click.echo(f"report: {result.out_dir / 'report.json'}")
    return EXIT_OK if exit_ok(result.report["summary"]) else EXIT_FAILED_CHECK
