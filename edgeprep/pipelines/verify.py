"""``edgeprep verify``: existing artifacts run on the evaluation data against the float model they came from.

``verify_artifacts`` is what the command and ``edgeprep.verify`` both do: refuse an ``out`` directory holding files
of someone else's where the report goes (before any work), load the model and the data as ``run`` does, compute the
float reference once, check each artifact with its format's runtime against the target's [gates] and build the
report (written to ``out`` when given).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgeprep.progress import Reporter
from edgeprep.targets import TargetProfile


@dataclass(frozen=True)
class VerifyRun:
    report: dict
    written: Path | None          # report.json, when an out directory was given


def check_out(out: Path) -> None:
    """The two files verify adds to ``out`` replace only earlier edgeprep ones; said before any work."""
    from edgeprep.outputs import REPORT_KINDS, OutputError, check_replaceable, check_writable_dir

    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file", "give the directory to write report.json and summary.md in")
    check_replaceable(out / "report.json", REPORT_KINDS["json"], "an edgeprep report")
    check_replaceable(out / "summary.md", REPORT_KINDS["markdown"], "an edgeprep Markdown report")
    check_writable_dir(out)


def verify_artifacts(model: Path, artifacts: Sequence[Path], data: Path, target: TargetProfile | None,
                     reporter: Reporter, *, out: Path | None = None, samples: int | None = None,
                     cli_preprocess: dict | None = None) -> VerifyRun:
    """Verify ``artifacts`` against the float ``model`` on ``data``'s evaluation split (its first ``samples``, else
    the target's [verify] samples, else all of it)."""
    from edgeprep.config.gates import Gates
    from edgeprep.data import describe
    from edgeprep.pipelines.run import load_inputs
    from edgeprep.report import artifact_entry, build_report, target_entry, write_report
    from edgeprep.stages.convert import open_artifact
    from edgeprep.stages.sanity import check_reference
    from edgeprep.stages.verify import reference
    from edgeprep.stages.verify import verify as verify_stage

    if out is not None:
        check_out(out)
    handle, spec = load_inputs(model, data, target, cli_preprocess=cli_preprocess or {}, reporter=reporter)
    arts = [open_artifact(a, target.options_for if target else None) for a in artifacts]
    n = min(spec.evaluation.count, samples or (target.verify.samples if target and target.verify.samples
                                                else spec.evaluation.count))
    with reporter.step("Float reference outputs", total=n) as advance:
        ref = reference(handle, spec.evaluation, n, advance)
    sanity = check_reference(ref, handle, spec, reporter)
    gates = target.gates if target else Gates()
    threads = target.threads if target else None
    root = (out or Path.cwd()).resolve()
    entries = []
    for art in arts:
        with reporter.step(f"Verifying {art.path.name}", total=n) as advance:
            result = verify_stage(art, ref, spec.evaluation, gates.for_precision(art.precision), threads, advance,
                                  model=handle)
        entries.append(artifact_entry(art, result, root))
    report = build_report(command="verify", model=handle.describe(), artifacts=entries,
                          target=target_entry(target),
                          data={"calibration": describe(spec.calibration), "evaluation": describe(spec.evaluation),
                                "manifest": spec.manifest},
                          reference={**ref.describe(), **({"sanity": sanity} if sanity else {})})
    return VerifyRun(report, write_report(report, out) if out is not None else None)
