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
    from edgeprep.pipelines.verify import verify_artifacts
    from edgeprep.report import exit_ok
    from edgeprep.targets import load_target

    target = load_target(target_name) if target_name else None
    result = verify_artifacts(model, artifacts, data, target, make_reporter(ctx), out=out, samples=samples,
                              cli_preprocess=collect_preprocess(kw))
    print_table(result.report)
    if result.written:
        click.echo(f"report: {result.written}")
    return EXIT_OK if exit_ok(result.report["summary"]) else EXIT_FAILED_CHECK
