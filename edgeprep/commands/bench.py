"""``edgeprep bench``: benchmark existing artifacts with device_bench, each in a fresh process."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import click

from edgeprep.commands._common import (
    EXIT_FAILED_CHECK,
    EXIT_OK,
    collect_preprocess,
    make_reporter,
    preprocess_options,
    print_table,
)


@click.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-t", "--target", "target_name", metavar="NAME_OR_PATH",
              help="Take [bench] settings, threads, runtime options, preprocessing and [gates] from this profile.")
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
@click.option("--samples", type=click.IntRange(min=1), help="Evaluate on the first N samples of --data only.")
@click.option("-o", "--out", type=click.Path(path_type=Path), metavar="DIR", default=Path("runs/bench"),
              show_default=True, help="Report directory: report.json, latencies.json, summary.md, report.html, "
                                      "junit.xml. Replaced only when every benchmark has run.")
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="PATH",
              help="SQLite run history to record this run in (default: $EDGEPREP_HISTORY or "
                   ".edgeprep/history.sqlite).")
@click.option("--no-history", is_flag=True, help="Do not record this run in the history.")
@preprocess_options
@click.pass_context
def bench(ctx: click.Context, artifacts: tuple[Path, ...], target_name: str | None, data: Path | None,
          model: Path | None, threads: int | None, runs: int | None, repeats: int | None, warmup: int | None,
          min_time: float | None, timeout: float | None, instructions: bool | None, samples: int | None, out: Path,
          history_path: Path | None, no_history: bool, **kw) -> int:
    """Benchmark ARTIFACTS (.tflite, OpenVINO .xml) with device_bench, each in a fresh process.

    Measures size, load time, first inference, latency (mean, std, min, p50, p90, p99) over the timed
    iterations, throughput, and peak RSS with its increase over the runtime alone; with --data also accuracy, and
    with --model also agreement and SQNR against the float model. Writes OUT/report.json (the same schema as
    'edgeprep run', each artifact with a 'bench' object) and the raw latencies that 'edgeprep gate' compares.
    Exit code 1 when a benchmark failed or timed out (the others are still reported) or a [gates] threshold failed.
    """
    from edgeprep import history
    from edgeprep._util import replace
    from edgeprep.config.bench import BenchConfig
    from edgeprep.errors import ConfigError, InputError
    from edgeprep.report import build_report, target_entry
    from edgeprep.report.write import write_all
    from edgeprep.stages.bench import write_latencies
    from edgeprep.stages.convert import open_artifact
    from edgeprep.targets import load_target

    target = load_target(target_name) if target_name else None
    reporter = make_reporter(ctx)
    base = (target.bench if target else None) or BenchConfig()
    overrides = {k: v for k, v in {"runs": runs, "repeats": repeats, "warmup": warmup, "min_seconds": min_time,
                                   "threads": threads, "timeout_seconds": timeout,
                                   "instructions": instructions}.items() if v is not None}
    try:
        config = dataclasses.replace(base, **overrides)
    except ValueError as exc:
        raise ConfigError(f"bench settings: {exc}") from None
    if model is not None and data is None:
        raise InputError("--model needs --data", "pass the evaluation data the float model is compared on")
    arts = [open_artifact(a, target.options_for if target else None) for a in artifacts]
    names = [a.path.name for a in arts]
    if len(set(names)) != len(names):
        raise InputError("two artifacts share a file name", "reports match artifacts by file name; rename one")
    default_threads = target.threads if target else 2
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    start = time.perf_counter()
    try:
        prepared = _prepare_data(data, model, arts, target, collect_preprocess(kw), samples, staging, reporter)
        entries, latencies = _bench_each(arts, config, default_threads, prepared, target, out, reporter)
        report = build_report(command="bench", model=prepared.model, artifacts=entries,
                              target=target_entry(target), data=prepared.described,
                              reference=prepared.reference,
                              stages=[{"name": "bench", "seconds": round(time.perf_counter() - start, 3)}])
        write_latencies(staging, latencies)
        (staging / ".data.npz").unlink(missing_ok=True)
        write_all(report, staging)
        replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print_table(report)
    if not no_history:
        where = history.try_record(report, out / "report.json", history_path, reporter.warn)
        if where:
            click.echo(f"history: {where}")
    click.echo(f"report: {out / 'report.json'}")
    return EXIT_OK if report["summary"]["status"] == "passed" else EXIT_FAILED_CHECK


@dataclasses.dataclass
class _Prepared:
    npz: Path | None = None
    model: dict | None = None
    described: dict | None = None
    reference: dict | None = None
    accuracy: float | None = None


def _prepare_data(data, model, arts, target, cli_preprocess, samples, staging, reporter) -> _Prepared:
    """Preprocess the evaluation data once into an .npz the benchmark processes read (x, y, ref)."""
    import numpy as np

    from edgeprep.data import check_fits, describe, load_data
    from edgeprep.pipeline import load_inputs

    if data is None:
        return _Prepared()
    prepared = _Prepared()
    if model is not None:
        handle, spec = load_inputs(model, data, target, cli_preprocess=cli_preprocess, reporter=reporter)
        prepared.model = handle.describe()
    else:
        handle, spec = None, load_data(data, preprocess_layers=((target.preprocess if target else None),),
                                       cli_preprocess=cli_preprocess)
    evaluation = spec.evaluation
    for art in arts:
        shape = art.inspection.get("inputs", [{}])[0].get("shape") or []
        if len(shape) > 1:
            check_fits(evaluation, tuple(None if d == -1 else d for d in shape[1:]), f"{art.path.name}")
    n = min(evaluation.count, samples or evaluation.count)
    x, y = evaluation.arrays(n)
    arrays = {"x": x.astype(np.float32)}
    if y is not None:
        arrays["y"] = y
    if handle is not None:
        from edgeprep.stages.verify import reference

        with reporter.step("Float reference outputs", total=n) as advance:
            ref = reference(handle, evaluation, n, advance)
        arrays["ref"] = ref.outputs
        prepared.reference = ref.describe()
        prepared.accuracy = ref.accuracy
    prepared.npz = staging / ".data.npz"
    np.savez(prepared.npz, **arrays)
    prepared.described = {"calibration": describe(spec.calibration), "evaluation": describe(evaluation),
                          "manifest": spec.manifest}
    return prepared


def _bench_each(arts, config, default_threads, prepared: _Prepared, target, root: Path, reporter):
    from edgeprep.config.gates import Gates
    from edgeprep.report import artifact_entry
    from edgeprep.stages.bench import artifact_key, attach, bench_artifact
    from edgeprep.stages.verify import check, unverified

    gates = target.gates if target else Gates()
    entries, latencies = [], {}
    for art in arts:
        with reporter.step(f"Benchmarking {art.path.name} ({config.repeats} processes x {config.runs} runs)"):
            outcome = bench_artifact(art, config, default_threads, prepared.npz)
        thresholds = gates.for_precision(art.precision)
        values = outcome.metrics
        if values is None:
            why = ("no evaluation data was given (pass --data)" if prepared.npz is None
                   else "the benchmark did not complete")
            verification = unverified(art, why, thresholds)
        else:
            if values.get("accuracy") is not None and prepared.accuracy is not None:
                values["accuracy_drop"] = round(100.0 * (prepared.accuracy - values["accuracy"]), 4)
            checks = check(values, thresholds, art.size_bytes)
            failed = any(not c["passed"] for c in checks)
            has_ref = values.get("agreement") is not None
            verification = {"status": "failed" if failed else ("verified" if has_ref else "unverified"),
                            "reason": None if has_ref else "no float model was given (--model): accuracy only",
                            "metrics": values, "checks": checks, "executed_by": outcome.bench.get("executed_by")}
        entry = attach(artifact_entry(art, verification, root), outcome)
        if outcome.ok:
            latencies[artifact_key(entry)] = outcome.latencies_ms
        else:
            reporter.warn(f"{art.path.name}: benchmark {outcome.bench['status']}: {outcome.bench['error']}")
        entries.append(entry)
    return entries, latencies
