"""A run directory in the making: what the steps of one command share, and how it is written.

``RunContext`` is the state of one command's run (target, model, data, the staging directory, the report sections
and stage timings collected so far); ``write`` turns it into the run directory's files (report.json, summary.md,
junit.xml, report.html and the resolved target.toml), named for the command that made them. Staging itself is
``outputs.staged_dir``: the one audited build-then-rename helper.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from edgeprep.data import DataSpec, describe
from edgeprep.models import ModelHandle, model_name
from edgeprep.progress import Reporter
from edgeprep.report import build_report, target_entry
from edgeprep.report.write import write_all
from edgeprep.stages.verify import Reference
from edgeprep.targets import TargetProfile


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    report: dict
    reference: Reference | None = None      # the float outputs every artifact was verified against
    data: DataSpec | None = None            # the data the run loaded (its evaluation set made ``reference``)

    @property
    def passed(self) -> bool:
        """Nothing failed (the exit code is 0): "measured" and "unmeasured" runs are not failures, though they are
        never reported as passes."""
        from edgeprep.report.build import exit_ok

        return exit_ok(self.report["summary"])


@dataclass
class RunContext:
    """What the steps of one run share. ``staging`` becomes the run directory when the run completes."""

    target: TargetProfile
    model: ModelHandle
    data: DataSpec | None
    staging: Path
    reporter: Reporter
    command: str = "run"                                 # the edgeprep command the report is written for
    stages: list[dict] = field(default_factory=list)
    sections: dict = field(default_factory=dict)     # extra top-level report sections, by name
    artifact_checks: list = field(default_factory=list)  # extra checks on every artifact (stages.verify.ArtifactCheck)
    sanity: dict | None = None                           # the float reference's chance-level diagnosis, if any
    prepared: Any = None                                 # stages.bn_pipeline.Prepared: what calibrate_and_fold did
    built: dict = field(default_factory=dict)            # int8 artifact path -> stages.ptq.Built (edgeprep PTQ)

    @property
    def workdir(self) -> Path:
        """Scratch space removed before the run directory is published (SavedModel exports and the like)."""
        path = self.staging / ".work"
        path.mkdir(exist_ok=True)
        return path

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.stages.append({"name": stage, "seconds": round(time.perf_counter() - start, 3)})


def default_out_dir(model_path: str | Path, target: TargetProfile, suffix: str | None = None) -> Path:
    """``runs/<model>-<target>[-<suffix>]`` (quantize adds its method)."""
    return Path("runs") / f"{model_name(model_path)}-{target.name}{'-' + suffix if suffix else ''}"


def write(ctx: RunContext, entries: list[dict], ref: Reference | None) -> dict:
    data = ctx.data
    reference_entry = None
    if ref:
        reference_entry = ref.describe()
        if ctx.sanity is not None:
            reference_entry["sanity"] = ctx.sanity
    report = build_report(
        command=ctx.command, model=ctx.model.describe(), artifacts=entries, target=target_entry(ctx.target),
        data=None if data is None else {"calibration": describe(data.calibration),
                                         "evaluation": describe(data.evaluation), "manifest": data.manifest},
        reference=reference_entry, stages=ctx.stages, extra=ctx.sections)
    shutil.rmtree(ctx.staging / ".work", ignore_errors=True)
    (ctx.staging / "target.toml").write_text(f"# resolved profile used for this run (from {ctx.target.source})\n"
                                             + ctx.target.to_toml())
    write_all(report, ctx.staging)
    return report
