"""``edgeprep verify``: do existing artifacts compute what the float model computes?"""

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
)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-d", "--data", type=click.Path(path_type=Path), required=True, metavar="PATH",
              help="Evaluation data (manifest, .npz, .npy or image folder).")
@click.option("-t", "--target", "target_name", shell_complete=complete_target, metavar="NAME_OR_PATH",
              help="Take runtime options, threads, preprocessing and [gates] thresholds from this profile.")
@click.option("-o", "--out", type=click.Path(path_type=Path), metavar="DIR",
              help="Also write report.json and summary.md into DIR (created if needed; earlier edgeprep reports "
                   "there are replaced, other files are never touched).")
@click.option("--samples", type=click.IntRange(min=1), help="Evaluate on the first N samples only.")
@preprocess_options
@click.pass_context
def verify(ctx: click.Context, model: Path, artifacts: tuple[Path, ...], data: Path, target_name: str | None,
           out: Path | None, samples: int | None, **kw) -> int:
    """Check that ARTIFACTS compute what the float MODEL computes.

    Runs each artifact (.tflite, OpenVINO .xml, Core ML .mlpackage) on the evaluation data with the runtime of
    its format and reports top-1 accuracy, top-1 agreement with MODEL and SQNR in dB. Core ML ML Programs run in
    edgeprep's reference executor (Core ML itself is macOS-only), with a per-layer error. Each artifact is
    "verified" against the target's [gates] thresholds, "measured" when no threshold applies (no --target),
    "unmeasured" when no runtime here can run it, or "failed". Exit code 1 only when an artifact fails a check.
    """
    from edgeprep.config.gates import Gates
    from edgeprep.data import describe
    from edgeprep.outputs import REPORT_KINDS, OutputError, check_replaceable, check_writable_dir
    from edgeprep.pipelines.run import load_inputs
    from edgeprep.report import artifact_entry, build_report, exit_ok, target_entry, write_report
    from edgeprep.stages.convert import open_artifact
    from edgeprep.stages.verify import reference
    from edgeprep.stages.verify import verify as verify_stage
    from edgeprep.targets import load_target

    target = load_target(target_name) if target_name else None
    reporter = make_reporter(ctx)
    if out is not None:      # before any work: the two files it adds to DIR replace only earlier edgeprep ones
        if out.exists() and not out.is_dir():
            raise OutputError(f"--out {out} is a file", "give the directory to write report.json and summary.md in")
        check_replaceable(out / "report.json", REPORT_KINDS["json"], "an edgeprep report")
        check_replaceable(out / "summary.md", REPORT_KINDS["markdown"], "an edgeprep Markdown report")
        check_writable_dir(out)
    handle, spec = load_inputs(model, data, target, cli_preprocess=collect_preprocess(kw), reporter=reporter)
    arts = [open_artifact(a, target.options_for if target else None) for a in artifacts]
    n = min(spec.evaluation.count, samples or (target.verify.samples if target and target.verify.samples
                                                else spec.evaluation.count))
    with reporter.step("Float reference outputs", total=n) as advance:
        ref = reference(handle, spec.evaluation, n, advance)
    from edgeprep.stages.sanity import check_reference

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
    print_table(report)
    if out:
        click.echo(f"report: {write_report(report, out)}")
    return EXIT_OK if exit_ok(report["summary"]) else EXIT_FAILED_CHECK
