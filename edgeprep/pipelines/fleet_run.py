"""``edgeprep run --targets a,b,c``: every target converted and verified here, then its device benchmarked, the
devices in parallel.

Conversion, verification and everything else that uses TensorFlow, OpenVINO or coremltools runs in this thread,
one target after another (those toolchains keep process-wide state, and on a 2-core machine running them side by
side gains nothing). Benchmarks are subprocesses, emulator runs or ssh sessions, so they run in parallel, one
lane per device (``fleet.fan_out``). Each target's run directory is then completed with its benchmarks —
``bench`` objects, ``latencies.json``, the report files — and the fleet report is written over all of them; the
whole output directory appears at once when everything has finished.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgeprep.errors import RuntimeUnavailable
from edgeprep.models import model_name
from edgeprep.outputs import run_dir_out, staged_dir
from edgeprep.pipelines.fleet import check_device, combined_report, dir_name, fan_out


def runtimes(target) -> list[str | None]:
    """The device_bench runner each of a target's formats runs with on its device."""
    from edgeprep.backends import get_backend

    if target.bench is not None and target.bench.runner:
        return [target.bench.runner]
    return [get_backend(f).runtime(target.options_for(f))[0] for f in target.formats]


def _complete(run_dir: Path, report: dict, target, arts: list, data: Path | None, ref, unavailable: str | None):
    """Benchmark ``arts`` on the target's device and rewrite the run directory's report files with the results."""
    from edgeprep.report.build import settle
    from edgeprep.report.latencies import artifact_key, write_latencies
    from edgeprep.report.write import write_all
    from edgeprep.stages.bench import BenchOutcome, attach, bench_artifact, with_device_metrics

    config, start, latencies = target.bench, time.perf_counter(), {}
    for art, entry in zip(arts, report["artifacts"]):
        if unavailable:
            outcome = BenchOutcome({"status": "error", "error": unavailable, "kind": "unreachable",
                                    "transport": config.transport})
        else:
            outcome = with_device_metrics(bench_artifact(art, config, target.threads, data), ref)
        attach(entry, outcome)
        if outcome.ok:
            latencies[artifact_key(entry)] = outcome.latencies_ms
    settle(report)      # a failed benchmark added a check: recount, and the summary follows
    report["stages"].append({"name": "bench", "seconds": round(time.perf_counter() - start, 3)})
    write_latencies(run_dir, latencies)
    write_all(report, run_dir)
    return report


def run_fleet(model: Path, targets: list, data: Path | None, out: Path | None, *, calibration_path=None,
              cli_preprocess: dict | None = None, reporter=None, split: float | None = None):
    """Returns the fleet report, the output directory and each target's report by sub-directory name."""
    import numpy as np

    from edgeprep.pipelines.run import run as run_pipeline
    from edgeprep.report.write import write_all
    from edgeprep.stages.convert import open_artifact

    out = run_dir_out(out or Path("runs") / f"{model_name(model)}-fleet")
    with staged_dir(out) as staging:
        results, arts, npz = {}, {}, {}
        for t in targets:
            reporter.info(f"== {t.name}: convert and verify")
            res = run_pipeline(model, t, data, staging / dir_name(t.name), calibration_path=calibration_path,
                               cli_preprocess=cli_preprocess, reporter=reporter, bench=False, split=split)
            results[t.name] = res
            arts[t.name] = [open_artifact(res.out_dir / a["path"], t.options_for) for a in res.report["artifacts"]]
            ref = res.reference
            if t.bench is not None and t.bench.transport != "local" and ref is not None:
                from edgeprep.data import load_data

                evaluation = load_data(data, preprocess_layers=(t.preprocess,), cli_preprocess=cli_preprocess,
                                       calibration=calibration_path, split=split).evaluation
                x, y = evaluation.arrays(ref.samples)
                npz[t.name] = staging / f".{dir_name(t.name)}.device-data.npz"
                np.savez(npz[t.name], x=x.astype(np.float32), ref=ref.outputs, **({"y": y} if y is not None else {}))

        def work(t):
            res = results[t.name]
            if t.bench is None:
                return res.report, None, None
            device = unavailable = None
            try:
                device = check_device(t.bench, runtimes(t))
            except RuntimeUnavailable as exc:
                unavailable = str(exc)
            report = _complete(res.out_dir, res.report, t, arts[t.name], npz.get(t.name), res.reference,
                               unavailable)
            return report, device, unavailable

        reporter.info(f"Benchmarking on {len(targets)} targets' devices in parallel")
        runs, timing = fan_out(targets, work, reporter)
        for path in npz.values():
            path.unlink(missing_ok=True)
        first = results[targets[0].name].report
        report = combined_report("run", runs, timing, model=first["model"], data=first.get("data"),
                                 reference=first.get("reference"))
        write_all(report, staging)
    return report, out, {r.dir_name: r.report for r in runs if r.report is not None}
