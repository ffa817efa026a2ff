"""``edgeprep calibrate``: re-estimate BatchNorm statistics from calibration data, with BN telemetry."""

from __future__ import annotations

from pathlib import Path

import click

from edgeprep.commands._common import (
    EXIT_FAILED_CHECK,
    EXIT_OK,
    collect_preprocess,
    complete_target,
    keras_model_out,
    make_reporter,
    preprocess_options,
    write_json_report,
)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-d", "--data", type=click.Path(path_type=Path), required=True, metavar="PATH",
              help="Calibration data (manifest, .npz, .npy or image folder). Labels (a manifest's evaluation set, "
                   "or the data's own) add top-1 accuracy before and after.")
@click.option("-o", "--out", type=click.Path(), metavar="PATH",   # str: keeps a trailing "/" (a folder)
              help="Recalibrated model (default: <model>.calibrated.keras here); the telemetry report is written "
                   "beside it as <name>.report.json.")
@click.option("-t", "--target", "target_name", shell_complete=complete_target, metavar="NAME_OR_PATH",
              help="Take [calibrate] settings and preprocessing from this target profile.")
@click.option("--method", type=click.Choice(["exact", "ema"]),
              help="exact: population statistics over all samples (default); ema: Keras-style momentum updates.")
@click.option("--momentum", type=click.FloatRange(0.0, 1.0, max_open=True), help="EMA momentum (default 0.9).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size (default 32).")
@click.option("--samples", type=click.IntRange(min=1), help="Use the first N calibration samples (default: all).")
@click.option("--split", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), metavar="FRACTION",
              help="Hold out FRACTION of --data (per class, fixed seed) to measure top-1 before and after; the rest "
                   "re-estimates the statistics.")
@preprocess_options
@click.pass_context
def calibrate(ctx: click.Context, model: Path, data: Path, out: str | None, target_name: str | None,
              method: str | None, momentum: float | None, batch_size: int | None, samples: int | None,
              split: float | None, **kw) -> int:
    """Re-estimate the BatchNorm moving mean and variance of MODEL from calibration data.

    Every BN layer (nested models included) is re-estimated layer by layer, in execution order, with all other
    layers in inference mode, so later layers see the re-estimated earlier ones. Prints the BN telemetry per
    layer (drift, batch noise, NaN/Inf, dead channels, verdict) and writes the recalibrated model and a
    report.json-format telemetry report. Exit code 1 when a layer is broken (NaN/Inf).
    """
    from dataclasses import replace

    from edgeprep._util import quiet
    from edgeprep.bn.graph import bn_layers, require_keras
    from edgeprep.config.calibrate import CalibrateConfig
    from edgeprep.data import describe
    from edgeprep.models import model_name
    from edgeprep.outputs import atomic_path
    from edgeprep.pipelines.run import load_inputs
    from edgeprep.stages.calibrate import calibrate as calibrate_stage
    from edgeprep.stages.calibrate import copy_statistics
    from edgeprep.targets import load_target

    target = load_target(target_name) if target_name else None
    config = target.calibrate if target else CalibrateConfig()
    overrides = {k: v for k, v in {"method": method, "momentum": momentum, "batch_size": batch_size,
                                   "samples": samples}.items() if v is not None}
    config = replace(config, **overrides)
    reporter = make_reporter(ctx)
    out = keras_model_out(out, f"{model_name(model)}.calibrated.keras", "calibrate")
    handle, spec = load_inputs(model, data, target, cli_preprocess=collect_preprocess(kw), reporter=reporter,
                               split=split, calibration_use="BatchNorm re-estimation")
    require_keras(handle, "calibrate")
    layers = len(bn_layers(handle.obj))
    if layers == 0:
        click.echo(f"{handle.path}: no BatchNormalization layers: nothing to calibrate")
        return EXIT_OK
    n = min(config.samples or spec.calibration.count, spec.calibration.count)
    with reporter.step(f"Re-estimating {layers} BatchNorm layers on {n} samples ({config.method})",
                       total=n * layers) as advance:
        result = calibrate_stage(handle.obj, spec.calibration, config, evaluation=spec.evaluation,
                                 progress=advance, warn=reporter.warn)
    telemetry = result.telemetry
    print_telemetry(telemetry)
    with quiet():
        copy_statistics(result.model, handle.obj)   # saved in the dtype policy the model was trained with
        with atomic_path(out, lambda _p: True) as tmp:    # keras_model_out checked what stands there
            handle.obj.save(tmp)
    report = write_json_report("calibrate", handle, out, {"calibration": telemetry.to_dict()},
                               data={"calibration": describe(spec.calibration),
                                     "evaluation": describe(spec.evaluation), "manifest": spec.manifest})
    click.echo(f"model: {out}\nreport: {report}")
    if telemetry.status == "broken":
        click.echo("edgeprep: BatchNorm layers are broken (NaN/Inf): their stored statistics were kept", err=True)
        return EXIT_FAILED_CHECK
    return EXIT_OK


def print_telemetry(telemetry) -> None:
    from rich.table import Table

    from edgeprep.bn.telemetry import TABLE_COLUMNS, summary_line, table_rows
    from edgeprep.progress import result_console

    console = result_console()
    table = Table(title="BatchNorm telemetry", title_justify="left")
    for i, col in enumerate(TABLE_COLUMNS):
        edge = i in (0, len(TABLE_COLUMNS) - 1)
        table.add_column(col, justify="left" if edge else "right", no_wrap=edge)
    styles = {"broken": "red", "stale": "yellow", "noisy": "yellow"}
    for layer, row in zip(telemetry.layers, table_rows(telemetry)):
        table.add_row(*row, style=styles.get(layer.verdict))
    console.print(table)
    console.print(summary_line(telemetry))
    for layer in telemetry.layers:
        if layer.verdict != "ok" and layer.reasons:
            console.print(f"  {layer.layer}: {'; '.join(layer.reasons)}")
