"""``edgeprep bench``: benchmark existing artifacts with device_bench, each in a fresh process."""

from __future__ import annotations

import dataclasses
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
              help="Take [bench] settings (where it runs: this machine, the ARM64 emulator, an ssh device), "
                   "threads, runtime options, preprocessing and [gates] from this profile.")
@click.option("--targets", "targets_csv", metavar="A,B,C",
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
          samples: int | None, out: Path, history_path: Path | None, no_history: bool, **kw) -> int:
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
    from edgeprep import history
    from edgeprep.errors import InputError
    from edgeprep.outputs import run_dir_out, staged_dir
    from edgeprep.report import exit_ok
    from edgeprep.targets import load_target

    if target_name and targets_csv:
        raise InputError("give --target or --targets, not both", "--targets a,b,c benchmarks on several devices")
    if model is not None and data is None:
        raise InputError("--model needs --data", "pass the evaluation data the float model is compared on")
    reporter = make_reporter(ctx)
    overrides = {k: v for k, v in {"runs": runs, "repeats": repeats, "warmup": warmup, "min_seconds": min_time,
                                   "threads": threads, "timeout_seconds": timeout,
                                   "instructions": instructions}.items() if v is not None}
    inputs = _Inputs(artifacts, data, model, collect_preprocess(kw), samples)
    out = run_dir_out(out)
    with staged_dir(out) as staging:
        if targets_csv:
            from edgeprep.pipelines.fleet import parse_targets

            targets = [load_target(n) for n in parse_targets(targets_csv)]
            report, reports = _fleet(targets, overrides, inputs, staging, reporter)
        else:
            plan = _plan(load_target(target_name) if target_name else None, overrides, inputs)
            _check_device(plan, reporter)
            report = _execute(plan, inputs, staging, reporter)
            reports = [("", report)]
    print_table(report)
    if not no_history:
        where = None
        for sub, one in reports:
            where = history.try_record(one, out / sub / "report.json", history_path, reporter.warn)
        if where:
            click.echo(f"history: {where}")
    click.echo(f"report: {out / 'report.json'}")
    return EXIT_OK if exit_ok(report["summary"]) else EXIT_FAILED_CHECK


@dataclasses.dataclass(frozen=True)
class _Inputs:
    artifacts: tuple[Path, ...]
    data: Path | None
    model: Path | None
    preprocess: dict
    samples: int | None


@dataclasses.dataclass(frozen=True)
class _Plan:
    target: object
    config: object
    arts: list
    threads: int


def _plan(target, overrides: dict, inputs: _Inputs) -> _Plan:
    """The bench settings and the opened artifacts for one target (or none)."""
    from edgeprep.config.bench import BenchConfig
    from edgeprep.errors import ConfigError, InputError
    from edgeprep.stages.convert import open_artifact

    base = (target.bench if target else None) or BenchConfig()
    try:
        config = dataclasses.replace(base, **overrides)
    except ValueError as exc:
        raise ConfigError(f"bench settings: {exc}") from None
    arts = [open_artifact(a, target.options_for if target else None) for a in inputs.artifacts]
    names = [a.path.name for a in arts]
    if len(set(names)) != len(names):
        raise InputError("two artifacts share a file name", "reports match artifacts by file name; rename one")
    return _Plan(target, config, arts, target.threads if target else 2)


def _runtimes(plan: _Plan) -> list[str | None]:
    return [plan.config.runner or a.runtime for a in plan.arts]


def _check_device(plan: _Plan, reporter) -> dict | None:
    """Probe the device before anything is sent there (raises, exit code 2, when it is not usable)."""
    from edgeprep.pipelines.fleet import check_device

    if plan.config.transport == "local":
        return None
    with reporter.step(f"Checking the device ({plan.config.transport})"):
        return check_device(plan.config, _runtimes(plan))


def _execute(plan: _Plan, inputs: _Inputs, staging: Path, reporter, unavailable: str | None = None,
             prepared: "_Prepared | None" = None) -> dict:
    """Benchmark every artifact of ``plan`` and write the report files into ``staging``; returns the report."""
    from edgeprep.report import build_report, target_entry
    from edgeprep.report.latencies import write_latencies
    from edgeprep.report.write import write_all

    start = time.perf_counter()
    if prepared is None:
        prepared = _prepare_data(inputs.data, inputs.model, plan.arts, plan.target, inputs.preprocess,
                                 inputs.samples, staging, reporter)
    entries, latencies = _bench_each(plan.arts, plan.config, plan.threads, prepared, plan.target, staging, reporter,
                                     unavailable)
    report = build_report(command="bench", model=prepared.model, artifacts=entries,
                          target=target_entry(plan.target), data=prepared.described, reference=prepared.reference,
                          stages=[{"name": "bench", "seconds": round(time.perf_counter() - start, 3)}])
    write_latencies(staging, latencies)
    (staging / ".data.npz").unlink(missing_ok=True)
    write_all(report, staging)
    return report


def _fleet(targets: list, overrides: dict, inputs: _Inputs, staging: Path, reporter):
    """Every target's plan and data in this thread (TensorFlow stays here), then the devices in parallel."""
    from edgeprep.errors import RuntimeUnavailable
    from edgeprep.pipelines.fleet import combined_report, dir_name, fan_out
    from edgeprep.progress import Reporter
    from edgeprep.report.write import write_all

    plans, data = {}, {}
    for t in targets:
        plans[t.name] = _plan(t, overrides, inputs)
        (staging / dir_name(t.name)).mkdir()
        data[t.name] = _prepare_data(inputs.data, inputs.model, plans[t.name].arts, t, inputs.preprocess,
                                     inputs.samples, staging / dir_name(t.name), reporter)

    def work(target):
        plan, unavailable, device = plans[target.name], None, None
        try:
            device = _check_device(plan, Reporter(quiet=True))
        except RuntimeUnavailable as exc:
            unavailable = str(exc)
        report = _execute(plan, inputs, staging / dir_name(target.name), Reporter(quiet=True), unavailable,
                          data[target.name])
        return report, device, unavailable

    reporter.info(f"Benchmarking on {len(targets)} devices in parallel: {', '.join(t.name for t in targets)}")
    runs, timing = fan_out(targets, work, reporter)
    first = next(iter(data.values()))
    report = combined_report("bench", runs, timing, model=first.model, data=first.described,
                             reference=first.reference)
    write_all(report, staging)
    return report, [(r.dir_name, r.report) for r in runs if r.report is not None]


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

    from edgeprep.data import check_fits, check_labels, describe, load_data, read_warnings
    from edgeprep.pipelines.run import load_inputs

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
    for warning in read_warnings(evaluation) if model is None else ():    # load_inputs warned already
        reporter.warn(warning)
    for art in arts:
        shape = art.inspection.get("inputs", [{}])[0].get("shape") or []
        if len(shape) > 1:
            check_fits(evaluation, tuple(None if d == -1 else d for d in shape[1:]), f"{art.path.name}")
        out_shape = (art.inspection.get("outputs") or [{}])[0].get("shape") or []
        if len(out_shape) > 1:      # labels the artifact's outputs cannot name would be silent misses
            check_labels(evaluation, tuple(None if d == -1 else d for d in out_shape[1:]), f"{art.path.name}")
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


def _bench_each(arts, config, default_threads, prepared: _Prepared, target, root: Path, reporter,
                unavailable: str | None = None):
    """Benchmark each artifact (or, when the device is ``unavailable``, record that for each) into report entries."""
    from edgeprep.config.gates import Gates
    from edgeprep.report import artifact_entry
    from edgeprep.report.latencies import artifact_key
    from edgeprep.stages.bench import BenchOutcome, attach, bench_artifact
    from edgeprep.stages.verify import check, judge, unmeasured

    gates = target.gates if target else Gates()
    entries, latencies = [], {}
    for art in arts:
        if unavailable:
            outcome = BenchOutcome({"status": "error", "error": unavailable, "kind": "unreachable",
                                    "transport": config.transport})
        else:
            with reporter.step(f"Benchmarking {art.path.name} ({config.repeats} processes x {config.runs} runs)"):
                outcome = bench_artifact(art, config, default_threads, prepared.npz)
        thresholds = gates.for_precision(art.precision)
        values = outcome.metrics
        if values is None:
            why = ("no evaluation data was given (pass --data)" if prepared.npz is None
                   else "the benchmark did not complete")
            verification = unmeasured(art, why, thresholds)
        else:
            if values.get("accuracy") is not None and prepared.accuracy is not None:
                values["accuracy_drop"] = round(100.0 * (prepared.accuracy - values["accuracy"]), 4)
            checks = check(values, thresholds, art.size_bytes)
            has_ref = values.get("agreement") is not None
            status = judge(True, checks)
            if status == "verified" and not has_ref:    # accuracy alone: nothing compared with the float model
                status = "measured"
            verification = {"status": status,
                            "reason": None if has_ref else "no float model was given (--model): accuracy only",
                            "metrics": values, "checks": checks, "executed_by": outcome.bench.get("executed_by")}
        entry = attach(artifact_entry(art, verification, root), outcome)
        if outcome.ok:
            latencies[artifact_key(entry)] = outcome.latencies_ms
        else:
            reporter.warn(f"{art.path.name}: benchmark {outcome.bench['status']}: {outcome.bench['error']}")
        entries.append(entry)
    return entries, latencies
