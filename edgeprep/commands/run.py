"""``edgeprep run``: every stage a target profile asks for."""

from __future__ import annotations

from pathlib import Path

import click

from edgeprep.commands._common import (
    EXIT_FAILED_CHECK,
    EXIT_OK,
    collect_preprocess,
    complete_target,
    data_options,
    make_reporter,
    preprocess_options,
    print_table,
    record_history,
    with_calibrate,
)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-t", "--target", "target_name", shell_complete=complete_target, metavar="NAME_OR_PATH",
              help="Target profile: a name from 'edgeprep targets' or a .toml file.")
@click.option("--targets", "targets_csv", shell_complete=complete_target, metavar="A,B,C",
              help="Several targets: each converted and verified here, then their devices benchmarked in parallel "
                   "(one benchmark per device at a time). OUT/<target>/ is each target's run directory, "
                   "OUT/report.json covers them all (default OUT: runs/<model>-fleet/).")
@click.option("-d", "--data", type=click.Path(path_type=Path), metavar="PATH",
              help="Data manifest (.toml), .npz, .npy or image folder. Used for int8 calibration and "
                   "verification; without it, int8 cannot be produced and nothing is verified.")
@click.option("--calib-data", type=click.Path(path_type=Path), metavar="PATH",
              help="Separate calibration data (default: the manifest's, or --data itself).")
@click.option("-o", "--out", type=click.Path(path_type=Path), metavar="DIR",
              help="Run directory (default: runs/<model>-<target>/): new, empty, or an earlier edgeprep run "
                   "directory, which is replaced only when the run completes. Anything else is refused.")
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="PATH",
              help="SQLite run history to record this run in (default: $EDGEPREP_HISTORY or "
                   ".edgeprep/history.sqlite); the console says where.")
@click.option("--no-history", is_flag=True, help="Do not record this run in the history.")
@data_options
@preprocess_options
@click.pass_context
def run(ctx: click.Context, model: Path, target_name: str | None, targets_csv: str | None, data: Path | None,
        calib_data: Path | None, out: Path | None, history_path: Path | None, no_history: bool,
        recalibrate: bool | None, split: float | None, **kw) -> int:
    """Run every stage the target profile asks for on MODEL.

    MODEL is a .keras or .h5 file, a SavedModel directory, or an .onnx file (any target: its graph is converted
    to Keras, checked against ONNX Runtime, and ONNX Runtime on the .onnx stays the float reference; an NCHW input
    is fed from NHWC data without flags, the artifacts take NHWC unless --layout NCHW, and dynamic H/W are fixed
    from the data or --resize; the report's model.onnx says what was chosen).
    Writes the artifacts, report.json (schema in edgeprep/report/report.schema.json), summary.md and the
    resolved target.toml into the run directory. A target whose [bench] runs on another device (the ARM64
    emulator, an ssh board or Mac) has that device checked first (exit code 2 when it cannot be used) and the
    evaluation data run there too. Exit code 1 when an artifact fails a [gates] threshold.

    BatchNorm is always folded before conversion; with --calibrate its statistics are re-estimated first (the
    console then shows the float top-1 before and after, and <model>.calibrated.keras is saved in the run
    directory). A float model at or near chance level on the data gets a warning with the likely causes measured.
    """
    from edgeprep.errors import InputError
    from edgeprep.pipelines.fleet import parse_targets, run_fleet, run_target
    from edgeprep.report import exit_ok
    from edgeprep.targets import load_target

    if bool(target_name) == bool(targets_csv):
        raise InputError("give --target NAME or --targets A,B,C", "see 'edgeprep run --help'")
    reporter = make_reporter(ctx)
    if targets_csv:
        targets = [with_calibrate(load_target(n), recalibrate) for n in parse_targets(targets_csv)]
        report, out_dir, reports = run_fleet(model, targets, data, out, calibration_path=calib_data,
                                             cli_preprocess=collect_preprocess(kw), reporter=reporter, split=split)
        print_table(report)
        if not no_history:
            record_history([(reports[sub], out_dir / sub / "report.json") for sub in reports], history_path,
                           reporter)
        click.echo(f"report: {out_dir / 'report.json'}")
        return EXIT_OK if exit_ok(report["summary"]) else EXIT_FAILED_CHECK
    target = with_calibrate(load_target(target_name), recalibrate)
    result = run_target(model, target, data, out, calibration_path=calib_data, cli_preprocess=collect_preprocess(kw),
                        reporter=reporter, split=split)
    print_table(result.report)
    if not no_history:
        record_history([(result.report, result.out_dir / "report.json")], history_path, reporter)
    click.echo(f"report: {result.out_dir / 'report.json'}")
    return EXIT_OK if result.passed else EXIT_FAILED_CHECK
