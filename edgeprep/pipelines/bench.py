"""``edgeprep bench``: existing artifacts benchmarked by device_bench, each in a fresh process, on one target's
device or (``--targets``) on several devices in parallel.

With evaluation data, the benchmark processes also evaluate each artifact (the device data file: inputs, labels
and, with the float model, its outputs), and those metrics are the artifact's verification: accuracy alone is
"measured", agreement and SQNR against the float model checked against the target's [gates] can be "verified".
The report directory is staged and published only when every benchmark has run.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from edgeprep.config.bench import BenchConfig
from edgeprep.errors import ConfigError, InputError, RuntimeUnavailable
from edgeprep.outputs import run_dir_out, staged_dir
from edgeprep.pipelines.fleet import check_device_step, combined_report, dir_name, fan_out, parse_targets
from edgeprep.progress import Reporter
from edgeprep.stages.bench import (
    BenchOutcome,
    BenchRequest,
    attach,
    bench_each,
    flag_slower_int8,
    write_device_data,
)
from edgeprep.targets import TargetProfile


@dataclasses.dataclass(frozen=True)
class BenchInputs:
    """What ``edgeprep bench`` benchmarks, where, and with which settings (refused at construction when the
    options contradict each other)."""

    artifacts: tuple[Path, ...]
    target: str | Path | TargetProfile | None = None     # a name, profile path or profile: its [bench], threads,
    #                                                      options and [gates]
    targets: str | None = None              # "a,b,c": several targets' devices in parallel
    data: Path | None = None                # evaluation data: accuracy (labels)
    model: Path | None = None               # the float model: agreement, SQNR and accuracy drop (needs data)
    preprocess: dict = dataclasses.field(default_factory=dict)     # preprocessing given on the command line
    samples: int | None = None              # evaluate on the first N samples only
    overrides: dict = dataclasses.field(default_factory=dict)      # [bench] settings given on the command line

    def __post_init__(self):
        if self.target and self.targets:
            raise InputError("give --target or --targets, not both", "--targets a,b,c benchmarks on several devices")
        if self.model is not None and self.data is None:
            raise InputError("--model needs --data", "pass the evaluation data the float model is compared on")


@dataclasses.dataclass(frozen=True)
class BenchRun:
    """The report (a fleet report with ``--targets``), where it was written, and each device's report by its
    sub-directory (``""`` for one target)."""

    report: dict
    out_dir: Path
    reports: tuple[tuple[str, dict], ...]


def run_bench(inputs: BenchInputs, out: Path, reporter: Reporter) -> BenchRun:
    """Benchmark ``inputs.artifacts`` into the report directory ``out`` (checked before any work)."""
    from edgeprep.targets import load_target

    out = run_dir_out(out)
    with staged_dir(out) as staging:
        if inputs.targets:
            targets = [load_target(n) for n in parse_targets(inputs.targets)]
            report, reports = _fleet(targets, inputs, staging, reporter)
        else:
            target = inputs.target
            plan = _plan(load_target(target) if isinstance(target, (str, Path)) else target, inputs)
            _check_device(plan, reporter)
            report = _execute(plan, inputs, staging, reporter)
            reports = [("", report)]
    return BenchRun(report, out, tuple(reports))


@dataclasses.dataclass(frozen=True)
class _Plan:
    target: object
    config: BenchConfig
    arts: list
    threads: int


def _plan(target, inputs: BenchInputs) -> _Plan:
    """The bench settings and the opened artifacts for one target (or none)."""
    from edgeprep.stages.convert import open_artifact

    base = (target.bench if target else None) or BenchConfig()
    try:
        config = dataclasses.replace(base, **inputs.overrides)
    except ValueError as exc:
        raise ConfigError(f"bench settings: {exc}") from None
    arts = [open_artifact(a, target.options_for if target else None) for a in inputs.artifacts]
    names = [a.path.name for a in arts]
    if len(set(names)) != len(names):
        raise InputError("two artifacts share a file name", "reports match artifacts by file name; rename one")
    return _Plan(target, config, arts, target.threads if target else 2)


def _check_device(plan: _Plan, reporter) -> dict | None:
    """Probe the device before anything is sent there (raises, exit code 2, when it is not usable)."""
    return check_device_step(plan.config, [plan.config.runner or a.runtime for a in plan.arts], reporter)


@dataclasses.dataclass
class _Prepared:
    npz: Path | None = None
    model: dict | None = None
    described: dict | None = None
    reference: dict | None = None
    accuracy: float | None = None


def _execute(plan: _Plan, inputs: BenchInputs, staging: Path, reporter, unavailable: str | None = None,
             prepared: _Prepared | None = None) -> dict:
    """Benchmark every artifact of ``plan`` and write the report files into ``staging``; returns the report."""
    from edgeprep.report import build_report, target_entry
    from edgeprep.report.latencies import write_latencies
    from edgeprep.report.write import write_all

    start = time.perf_counter()
    if prepared is None:
        prepared = _prepare_data(inputs, plan.arts, plan.target, staging, reporter)
    results = bench_each(plan.arts, BenchRequest(plan.config, plan.threads, prepared.npz, unavailable=unavailable),
                         reporter, by_file_name=True)
    entries = _entries(plan, results.outcomes, prepared, staging)
    flag_slower_int8(entries, reporter)
    report = build_report(command="bench", model=prepared.model, artifacts=entries,
                          target=target_entry(plan.target), data=prepared.described, reference=prepared.reference,
                          stages=[{"name": "bench", "seconds": round(time.perf_counter() - start, 3)}])
    write_latencies(staging, results.latencies)
    (staging / ".data.npz").unlink(missing_ok=True)
    write_all(report, staging)
    return report


def _fleet(targets: list, inputs: BenchInputs, staging: Path, reporter):
    """Every target's plan and data in this thread (TensorFlow stays here), then the devices in parallel."""
    from edgeprep.report.write import write_all

    plans, data = {}, {}
    for t in targets:
        plans[t.name] = _plan(t, inputs)
        (staging / dir_name(t.name)).mkdir()
        data[t.name] = _prepare_data(inputs, plans[t.name].arts, t, staging / dir_name(t.name), reporter)

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


def _prepare_data(inputs: BenchInputs, arts, target, staging: Path, reporter) -> _Prepared:
    """Preprocess the evaluation data once into the device data file the benchmark processes read (x, y, ref)."""
    from edgeprep.data import check_fits, check_labels, describe, load_data, read_warnings
    from edgeprep.pipelines.run import load_inputs

    if inputs.data is None:
        return _Prepared()
    prepared = _Prepared()
    if inputs.model is not None:
        handle, spec = load_inputs(inputs.model, inputs.data, target, cli_preprocess=inputs.preprocess,
                                   reporter=reporter)
        prepared.model = handle.describe()
    else:
        handle, spec = None, load_data(inputs.data, preprocess_layers=((target.preprocess if target else None),),
                                       cli_preprocess=inputs.preprocess)
    evaluation = spec.evaluation
    for warning in read_warnings(evaluation) if inputs.model is None else ():    # load_inputs warned already
        reporter.warn(warning)
    for art in arts:
        shape = art.inspection.get("inputs", [{}])[0].get("shape") or []
        if len(shape) > 1:
            check_fits(evaluation, tuple(None if d == -1 else d for d in shape[1:]), f"{art.path.name}")
        out_shape = (art.inspection.get("outputs") or [{}])[0].get("shape") or []
        if len(out_shape) > 1:      # labels the artifact's outputs cannot name would be silent misses
            check_labels(evaluation, tuple(None if d == -1 else d for d in out_shape[1:]), f"{art.path.name}")
    n = min(evaluation.count, inputs.samples or evaluation.count)
    arrays = evaluation.arrays(n)
    ref_outputs = None
    if handle is not None:
        from edgeprep.stages.verify import reference

        with reporter.step("Float reference outputs", total=n) as advance:
            ref = reference(handle, evaluation, n, advance)
        ref_outputs = ref.outputs
        prepared.reference = ref.describe()
        prepared.accuracy = ref.accuracy
    prepared.npz = write_device_data(staging / ".data.npz", arrays, ref_outputs)
    prepared.described = {"calibration": describe(spec.calibration), "evaluation": describe(evaluation),
                          "manifest": spec.manifest}
    return prepared


def _entries(plan: _Plan, outcomes: tuple[BenchOutcome, ...], prepared: _Prepared, root: Path) -> list[dict]:
    """Each artifact's report entry: its verification from the metrics its benchmark measured, and its bench."""
    from edgeprep.config.gates import Gates
    from edgeprep.report import artifact_entry

    gates = plan.target.gates if plan.target else Gates()
    return [attach(artifact_entry(art, _verification(art, outcome, prepared, gates.for_precision(art.precision)),
                                  root), outcome)
            for art, outcome in zip(plan.arts, outcomes)]


def _verification(art, outcome: BenchOutcome, prepared: _Prepared, thresholds) -> dict:
    """The metrics measured by the benchmark process checked against ``thresholds``: accuracy alone (no float
    model) is at best "measured"; no metrics (no data, or the benchmark did not complete) is "unmeasured"."""
    from edgeprep.gate import accuracy_drop
    from edgeprep.stages.verify import check, judge, unmeasured

    if outcome.metrics is None:
        why = ("no evaluation data was given (pass --data)" if prepared.npz is None
               else "the benchmark did not complete")
        return unmeasured(art, why, thresholds)
    values = dict(outcome.metrics)
    if values.get("accuracy") is not None and prepared.accuracy is not None:
        values["accuracy_drop"] = accuracy_drop(prepared.accuracy, values["accuracy"])
    checks = check(values, thresholds, art.size_bytes)
    has_ref = values.get("agreement") is not None
    status = judge(True, checks)
    if status == "verified" and not has_ref:    # accuracy alone: nothing compared with the float model
        status = "measured"
    return {"status": status, "reason": None if has_ref else "no float model was given (--model): accuracy only",
            "metrics": values, "checks": checks, "executed_by": outcome.bench.get("executed_by")}
