"""``edgeprep convert``: one model -> one artifact."""

from __future__ import annotations

from pathlib import Path

import click

from edgeprep.commands._common import (
    EXIT_OK,
    collect_preprocess,
    make_reporter,
    preprocess_options,
)
from edgeprep.errors import InputError


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--to", "fmt", required=True, type=click.Choice(["tflite", "openvino", "coreml"]),
              help="Deployment format.")
@click.option("--precision", required=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="fp32; fp16 weights; int8 (TFLite: full integer; OpenVINO: NNCF PTQ; Core ML: 8-bit weights).")
@click.option("-d", "--data", type=click.Path(path_type=Path), metavar="PATH",
              help="Calibration data for int8 (manifest, .npz, .npy or image folder).")
@click.option("-t", "--target", "target_name", metavar="NAME_OR_PATH",
              help="Take format options, preprocessing and calibration size from this target profile.")
@click.option("-o", "--out", type=click.Path(), metavar="PATH",   # str: keeps a trailing "/" (a folder)
              help="Output file (default: <model>.<precision>.<ext> here). A directory, or a path ending in '/', "
                   "gets that default name inside it; a missing format suffix is added. Only an artifact of the "
                   "same format is ever replaced.")
@click.option("--calib-samples", type=click.IntRange(min=1), help="Calibration samples for int8 (default 500).")
@preprocess_options
@click.pass_context
def convert(ctx: click.Context, model: Path, fmt: str, precision: str, data: Path | None, target_name: str | None,
            out: str | None, calib_samples: int | None, **kw) -> int:
    """Convert MODEL to one deployment format and precision."""
    from edgeprep.backends import get_backend
    from edgeprep.config.quantize import few_samples_warning
    from edgeprep.data import check_fits, load_data, read_warnings
    from edgeprep.models import check_model_path, load_model, model_name
    from edgeprep.stages.convert import artifact_out
    from edgeprep.stages.convert import convert as convert_stage
    from edgeprep.targets import load_target

    target = load_target(target_name) if target_name else None
    backend = get_backend(fmt)
    reporter = make_reporter(ctx)
    check_model_path(model)
    if data is None and precision == "int8" and backend.needs_calibration:
        raise InputError(f"{fmt} int8 needs calibration data", "pass --data with representative samples")
    out, note = artifact_out(out, fmt, model_name(model), precision)
    if note:
        reporter.info(note)
    with reporter.step(f"Loading {model}"):
        handle = load_model(model)
    backend.check(handle, precision)
    calibration = None
    if data is not None:
        spec = load_data(data, preprocess_layers=((target.preprocess if target else None),),
                         cli_preprocess=collect_preprocess(kw))
        calibration = spec.calibration
        check_fits(calibration, handle.input_shape, f"the model ({handle.path.name})")
        for warning in read_warnings(calibration):
            reporter.warn(warning)
    options = target.options_for(fmt) if target else backend.options_type()
    samples = calib_samples or (target.quantize.calibration_samples if target else 500)
    if precision == "int8" and calibration is not None:
        warning = few_samples_warning(samples, calibration.count, calibration.source)
        if warning:
            reporter.warn(warning)
    with reporter.step(f"Converting to {fmt} {precision}"):
        art = convert_stage(handle, fmt, precision, options, out, calibration=calibration,
                            calibration_samples=samples)
    click.echo(f"{art.path}  {art.size_bytes:,} bytes  sha256 {art.sha256[:16]}…  "
               f"weights {art.quantization.get('weights')}, activations {art.quantization.get('activations')}")
    return EXIT_OK
