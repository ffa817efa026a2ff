"""``edgeprep convert``: one model -> one artifact."""

from __future__ import annotations

from pathlib import Path

import click

from edgeprep.commands._common import (
    EXIT_OK,
    collect_preprocess,
    complete_target,
    data_options,
    make_reporter,
    preprocess_options,
    with_calibrate,
)
from edgeprep.errors import InputError


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--to", "fmt", required=True, type=click.Choice(["tflite", "openvino", "coreml"]),
              help="Deployment format.")
@click.option("--precision", required=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="fp32; fp16 weights; int8 (TFLite: full integer; OpenVINO: NNCF PTQ; Core ML: 8-bit weights; "
                   "edgeprep's own PTQ instead when the target sets [quantize.ptq] engine = \"edgeprep\"; "
                   "\"auto\": both measured on the calibration data, the better kept).")
@click.option("-d", "--data", type=click.Path(path_type=Path), metavar="PATH",
              help="Calibration data for int8 (manifest, .npz, .npy or image folder).")
@click.option("-t", "--target", "target_name", shell_complete=complete_target, metavar="NAME_OR_PATH",
              help="Take format options, preprocessing and calibration size from this target profile.")
@click.option("-o", "--out", type=click.Path(), metavar="PATH",   # str: keeps a trailing "/" (a folder)
              help="Output file (default: <model>.<precision>.<ext> here). A directory, or a path ending in '/', "
                   "gets that default name inside it; a missing format suffix is added. Only an artifact of the "
                   "same format is ever replaced.")
@click.option("--calib-samples", type=click.IntRange(min=1), help="Calibration samples for int8 (default 500).")
@data_options
@preprocess_options
@click.pass_context
def convert(ctx: click.Context, model: Path, fmt: str, precision: str, data: Path | None, target_name: str | None,
            out: str | None, calib_samples: int | None, recalibrate: bool | None, split: float | None,
            **kw) -> int:
    """Convert MODEL (.keras, .h5, SavedModel directory or .onnx) to one deployment format and precision.

    An .onnx model is converted to a Keras graph first (checked against ONNX Runtime; ops: Conv incl. depthwise and
    grouped, BatchNormalization, Gemm/MatMul, Relu, Clip, LeakyRelu, Sigmoid, Tanh, HardSigmoid, HardSwish, Softmax,
    Add/Sub/Mul/Div, GlobalAveragePool, GlobalMaxPool, ReduceMean over H,W, AveragePool, MaxPool, Flatten, Reshape,
    Squeeze, Unsqueeze, Transpose, Concat, Pad, Identity, Dropout, Cast); an unsupported op is one error line naming
    it. The artifact takes NHWC input unless --layout NCHW; dynamic H/W come from --data or --resize.

    A Keras model has its BatchNorm folded first (and re-estimated with --calibrate), with the target's
    [quantize] options, exactly as 'edgeprep run' and 'edgeprep quantize' do: the same model, data and target
    give the same artifact from all three. keep_float = auto is the exception: choosing layers needs evaluation,
    which 'run' and 'quantize' do; convert then keeps nothing in float and says so.
    """
    import dataclasses

    from edgeprep.backends import get_backend, needing_calibration
    from edgeprep.config.calibrate import CalibrateConfig
    from edgeprep.config.quantize import few_samples_warning
    from edgeprep.data import check_fits, load_data, preprocess_from, read_warnings
    from edgeprep.models import check_model_path, load_model, model_name
    from edgeprep.pipelines.run import onnx_as_keras
    from edgeprep.stages.convert import artifact_out, target_options
    from edgeprep.stages.convert import convert as convert_stage
    from edgeprep.stages.prepare import prepare
    from edgeprep.targets import load_target

    target = with_calibrate(load_target(target_name), recalibrate) if target_name else None
    calibrate_cfg = target.calibrate if target else CalibrateConfig(enabled=bool(recalibrate))
    backend = get_backend(fmt)
    reporter = make_reporter(ctx)
    check_model_path(model)
    needs = needing_calibration([(fmt, precision)])
    if data is None and needs:
        raise InputError(f"{needs[0]} needs calibration data", "pass --data with representative samples")
    if data is None and calibrate_cfg.enabled:
        raise InputError("--calibrate (or the target's [calibrate]) re-estimates BatchNorm statistics from data",
                         "pass --data, or --no-calibrate")
    out, note = artifact_out(out, fmt, model_name(model), precision)
    if note:
        reporter.info(note)
    with reporter.step(f"Loading {model}"):
        handle = load_model(model)
    calibration = spec = None
    if data is not None:
        spec = load_data(data, preprocess_layers=((target.preprocess if target else None),),
                         cli_preprocess=collect_preprocess(kw), split=split)
        calibration = spec.calibration
    handle = onnx_as_keras(handle, spec.evaluation if spec else None,
                           spec.evaluation.preprocess if spec else
                           preprocess_from((target.preprocess if target else None), collect_preprocess(kw)), reporter)
    backend.check(handle, precision)
    if calibration is not None:
        check_fits(calibration, handle.input_shape, f"the model ({handle.path.name})")
        for warning in read_warnings(calibration):
            reporter.warn(warning)
    opts = target_options(target, fmt, precision)
    if calib_samples:
        opts["calibration_samples"] = calib_samples
        opts["quantize"] = dataclasses.replace(opts["quantize"], calibration_samples=calib_samples)
    if precision == "int8" and calibration is not None:
        warning = few_samples_warning(opts["calibration_samples"], calibration.count, calibration.source)
        if warning:
            reporter.warn(warning)
    if precision == "int8" and opts["quantize"].keep_float_auto:
        reporter.warn("keep_float = auto is not applied by convert (choosing the layers needs the evaluation "
                      "'edgeprep run' or 'edgeprep quantize' does): nothing is kept in float")
    if calibrate_cfg.enabled and spec is not None:
        from edgeprep.pipelines.run import overlap_warning

        warning = overlap_warning(spec, "BatchNorm re-estimation (and its before/after top-1)")
        if warning:
            reporter.warn(warning)
    prepared = prepare(handle, calibrate_cfg, spec, reporter=reporter,
                       verify_samples=target.verify.samples if target else None,
                       target_name=f"target '{target.name}'" if target else "--calibrate")
    if prepared.accuracy_line():
        reporter.info(prepared.accuracy_line())
    fold = prepared.sections["fold"]
    if fold.get("status") == "folded":
        reporter.info(f"folded {len(fold['folded'])} of {fold['bn_layers']} BatchNorm layers (verified equivalent)")
    art = None
    if precision == "int8" and target is not None and calibration is not None and prepared.to_convert.is_keras:
        from edgeprep.pipelines.convert import owned_int8

        art = owned_int8(prepared.to_convert, fmt, dataclasses.replace(target, quantize=opts["quantize"]),
                         calibration, Path(out), reporter)
    if art is None:
        with reporter.step(f"Converting to {fmt} {precision}"):
            art = convert_stage(prepared.to_convert, out=out, calibration=calibration, **opts)
    click.echo(f"{art.path}  {art.size_bytes:,} bytes  sha256 {art.sha256[:16]}…  "
               f"weights {art.quantization.get('weights')}, activations {art.quantization.get('activations')}"
               + (f"; {art.quantization['algorithms']}" if art.quantization.get("algorithms") else ""))
    return EXIT_OK

