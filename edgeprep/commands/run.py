"""``edgeprep run``: every stage a target profile asks for."""

from __future__ import annotations

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
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-t", "--target", "target_name", required=True, metavar="NAME_OR_PATH",
              help="Target profile: a name from 'edgeprep targets' or a .toml file.")
@click.option("-d", "--data", type=click.Path(path_type=Path), metavar="PATH",
              help="Data manifest (.toml), .npz, .npy or image folder. Used for int8 calibration and "
                   "verification; without it, int8 cannot be produced and nothing is verified.")
@click.option("--calib-data", type=click.Path(path_type=Path), metavar="PATH",
              help="Separate calibration data (default: the manifest's, or --data itself).")
@click.option("-o", "--out", type=click.Path(path_type=Path), metavar="DIR",
              help="Run directory (default: runs/<model>-<target>/). Replaced only when the run completes.")
@preprocess_options
@click.pass_context
def run(ctx: click.Context, model: Path, target_name: str, data: Path | None, calib_data: Path | None,
        out: Path | None, **kw) -> int:
    """Run every stage the target profile asks for on MODEL.

    MODEL is a .keras or .h5 file, a SavedModel directory, or an .onnx file (OpenVINO targets only).
    Writes the artifacts, report.json (schema in edgeprep/report/report.schema.json), summary.md and the
    resolved target.toml into the run directory. Exit code 1 when an artifact fails a [gates] threshold.
    """
    from edgeprep.pipeline import run as run_pipeline
    from edgeprep.targets import load_target

    target = load_target(target_name)
    reporter = make_reporter(ctx)
    result = run_pipeline(model, target, data, out, calibration_path=calib_data,
                          cli_preprocess=collect_preprocess(kw), reporter=reporter)
    print_table(result.report)
    from edgeprep.history import try_record

    try_record(result.report, result.out_dir / "report.json", warn=reporter.warn)
    click.echo(f"report: {result.out_dir / 'report.json'}")
    return EXIT_OK if result.passed else EXIT_FAILED_CHECK
