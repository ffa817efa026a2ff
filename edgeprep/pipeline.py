"""``edgeprep run``: a model, a target profile and data -> a run directory with artifacts and report.json.

Data flows one way: load -> convert (every format x precision the target asks for) -> verify -> report.
The run directory is assembled under a temporary name beside ``--out`` and renamed into place only when every
step succeeded, so a failed run never leaves a half-written directory behind (an earlier run there is kept).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgeprep._util import atomic_path, replace
from edgeprep.backends import get_backend
from edgeprep.data import DataSpec, check_fits, describe, load_data
from edgeprep.errors import DataError
from edgeprep.models import ModelHandle, load_model
from edgeprep.progress import Reporter
from edgeprep.report import artifact_entry, build_report, write_report
from edgeprep.stages.convert import convert
from edgeprep.stages.verify import reference, unverified, verify
from edgeprep.targets import TargetProfile


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    report: dict

    @property
    def passed(self) -> bool:
        return self.report["summary"]["status"] == "passed"


def default_out_dir(model_path: str | Path, target: TargetProfile) -> Path:
    p = Path(model_path)
    return Path("runs") / f"{p.stem if p.suffix else p.name}-{target.name}"


def load_inputs(model_path: str | Path, data_path: str | Path | None, target: TargetProfile | None = None, *,
                calibration_path: str | Path | None = None, cli_preprocess: dict | None = None,
                reporter: Reporter | None = None) -> tuple[ModelHandle, DataSpec | None]:
    """Load the model and its data (if any), and refuse data that does not fit the model's input."""
    reporter = reporter or Reporter(quiet=True)
    with reporter.step(f"Loading {model_path}"):
        model = load_model(model_path)
    if data_path is None:
        return model, None
    data = load_data(data_path, preprocess_layers=((target.preprocess if target else None),),
                     cli_preprocess=cli_preprocess, calibration=calibration_path)
    check_fits(data.evaluation, model.input_shape, f"the model ({model.path.name})")
    if not data.shared:
        check_fits(data.calibration, model.input_shape, f"the model ({model.path.name})")
    return model, data


def run(model_path: str | Path, target: TargetProfile, data_path: str | Path | None,
        out_dir: str | Path | None = None, *, calibration_path: str | Path | None = None,
        cli_preprocess: dict | None = None, reporter: Reporter | None = None) -> RunResult:
    """Run the target's stages. Without data, int8 is refused up front and nothing can be verified."""
    reporter = reporter or Reporter(quiet=True)
    if data_path is None:
        needs = [f"{f} {p}" for f, p in target.plan() if p == "int8" and f != "coreml"]
        if needs:
            raise DataError(f"target '{target.name}' asks for {', '.join(needs)}, which needs calibration data",
                            "pass --data (a manifest, .npz, .npy or image folder)")
    model, data = load_inputs(model_path, data_path, target, calibration_path=calibration_path,
                              cli_preprocess=cli_preprocess, reporter=reporter)
    out_dir = Path(out_dir or default_out_dir(model_path, target)).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    stages: list[dict] = []
    try:
        workdir = staging / ".work"
        workdir.mkdir()
        artifacts = []
        start = time.perf_counter()
        for fmt, precision in target.plan():
            name = get_backend(fmt).artifact_name(model.name, precision)
            with reporter.step(f"Converting to {fmt} {precision}"):
                artifacts.append(convert(model, fmt, precision, target.options_for(fmt), staging / name,
                                         calibration=data.calibration if data else None,
                                         calibration_samples=target.quantize.calibration_samples,
                                         workdir=workdir))
        stages.append({"name": "convert", "seconds": round(time.perf_counter() - start, 3)})

        start = time.perf_counter()
        ref, entries = None, []
        if data is not None:
            n_eval = min(data.evaluation.count, target.verify.samples or data.evaluation.count)
            with reporter.step("Float reference outputs", total=n_eval) as advance:
                ref = reference(model, data.evaluation, n_eval, advance)
        for art in artifacts:
            thresholds = target.gates.for_precision(art.precision)
            if ref is None:
                result = unverified(art, "no evaluation data was given (pass --data)", thresholds)
            elif art.runtime is None:
                reporter.warn(f"{art.label}: {art.unavailable_reason}")
                result = verify(art, ref, data.evaluation, thresholds)
            else:
                with reporter.step(f"Verifying {art.label} on {n_eval} samples", total=n_eval) as advance:
                    result = verify(art, ref, data.evaluation, thresholds, target.threads, advance)
            entries.append(artifact_entry(art, result, staging))
        stages.append({"name": "verify", "seconds": round(time.perf_counter() - start, 3)})

        report = build_report(
            command="run", model=model.describe(), artifacts=entries,
            target={"name": target.name, "source": target.source, "profile": target.to_dict()},
            data=None if data is None else {"calibration": describe(data.calibration),
                                             "evaluation": describe(data.evaluation), "manifest": data.manifest},
            reference=ref.describe() if ref else None, stages=stages)
        shutil.rmtree(workdir)
        with atomic_path(staging / "target.toml") as tmp:
            tmp.write_text(f"# resolved profile used for this run (from {target.source})\n" + target.to_toml())
        write_report(report, staging)
        replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RunResult(out_dir, report)
