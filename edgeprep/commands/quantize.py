"""``edgeprep quantize``: int8 artifacts for a target by post-training quantization or QAT fine-tuning."""

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
    with_calibrate,
)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["ptq", "qat"]), default="ptq", show_default=True,
              help="ptq: post-training quantization per format; qat: quantization-aware fine-tuning (Keras 3), "
                   "then export.")
@click.option("-d", "--data", type=click.Path(path_type=Path), required=True, metavar="PATH",
              help="Data manifest (.toml), .npz, .npy or image folder: calibration (and QAT training) data, and "
                   "evaluation data for verification.")
@click.option("-t", "--target", "target_name", default="litert-cpu", show_default=True,
              shell_complete=complete_target, metavar="NAME_OR_PATH",
              help="Target profile: its formats get int8 artifacts; [quantize] and [gates.int8] apply.")
@click.option("-o", "--out", type=click.Path(path_type=Path), metavar="DIR",
              help="Run directory (default: runs/<model>-<target>-<method>/): new, empty, or an earlier edgeprep "
                   "run directory (replaced when complete). Anything else is refused.")
@click.option("--labels", is_flag=True, help="QAT: train on the data's labels (an error if it has none).")
@click.option("--distill", is_flag=True, help="QAT: train by distillation from the float model even when the "
              "data has labels (the default without labels).")
@click.option("--keep-float", metavar="auto|LAYER,...",
              help="Layers kept in float: 'auto' keeps the worst layers until every [gates.int8] gate "
                   "(max_accuracy_drop, min_agreement, min_sqnr_db) is met; or node names from the per-layer "
                   "error report.")
@click.option("--calib-samples", type=click.IntRange(min=1), help="Calibration samples (default: [quantize]).")
@click.option("--strategy", type=click.Choice(["auto", "none", "mirrored", "multiworker"]), default="auto",
              show_default=True, help="QAT distribution: auto = multi-worker when TF_CONFIG names several "
              "workers, mirrored when --replicas > 1.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="QAT: data-parallel replicas on this machine (GPUs, else logical CPU devices).")
@click.option("--steps", type=click.IntRange(min=1), help="QAT: optimizer steps (default: [quantize.qat] epochs).")
@click.option("--calib-data", type=click.Path(path_type=Path), metavar="PATH",
              help="Separate calibration (and QAT training) data (default: the manifest's, or --data itself).")
@data_options
@preprocess_options
@click.pass_context
def quantize(ctx: click.Context, model: Path, method: str, data: Path, target_name: str, out: Path | None,
             labels: bool, distill: bool, keep_float: str | None, calib_samples: int | None, strategy: str,
             replicas: int, steps: int | None, calib_data: Path | None, recalibrate: bool | None,
             split: float | None, **kw) -> int:
    """Quantize MODEL to int8 for every format of the target, verify it, and rank its layers by error.

    Writes the int8 artifacts, report.json (with each artifact's per-layer SQNR against the float model),
    summary.md and the resolved target.toml; with --method qat also the fine-tuned Keras model
    (<model>.qat.keras) and its activation ranges. Exit code 1 when an artifact fails a [gates.int8] threshold.

    --method ptq is 'edgeprep run' restricted to the target's int8 artifacts, without benchmarks: the same
    BatchNorm folding (and --calibrate), calibration and options, so the same int8 artifact.
    """
    from edgeprep.errors import InputError
    from edgeprep.models import check_model_path
    from edgeprep.targets import load_target

    if labels and distill:
        raise InputError("--labels and --distill exclude each other", "pick one")
    check_model_path(model)
    strat = None
    if method == "qat":  # collectives must be configured before any other TensorFlow work
        from edgeprep.qat.train import make_strategy

        strat = make_strategy(strategy, replicas)
    from edgeprep.pipelines.quantize import quantize as run_quantize
    from edgeprep.pipelines.quantize import with_overrides

    target = with_overrides(with_calibrate(load_target(target_name), recalibrate), calib_samples, steps)
    keep = None
    if keep_float is not None:
        keep = ("auto",) if keep_float == "auto" else tuple(k for k in keep_float.split(",") if k)

    result = run_quantize(model, target, data, out, method=method, labels=labels, distill=distill,
                          keep_float=keep, strategy=strat, cli_preprocess=collect_preprocess(kw),
                          calibration_path=calib_data, split=split, reporter=make_reporter(ctx))
    if result is None:
        return EXIT_OK
    print_table(result.report)
    for a in result.report["artifacts"]:
        le = a.get("layer_errors") or {}
        if le.get("status") == "measured" and le["layers"]:
            worst = ", ".join(f"{r['name']} {r['sqnr_db']:.1f} dB" for r in le["layers"][:3])
            click.echo(f"{a['format']} int8 worst layers: {worst}")
        kf = a.get("keep_float")
        if kf:
            from edgeprep.stages.keep_float import summary

            click.echo(f"{a['format']} int8 {summary(kf)}")
        floats = (a.get("inspection") or {}).get("float_ops")
        all_int8 = next((c for c in (a.get("verification") or {}).get("checks") or [] if c["name"] == "all_int8"),
                        None)
        if floats:   # a QAT artifact's all_int8 check says whether they were meant (layers kept float) or a defect
            verdict = "" if all_int8 is None else \
                f" — all_int8 {'passed' if all_int8['passed'] else 'FAILED'}: {all_int8['detail']}"
            click.echo(f"{a['format']} int8 float ops left: "
                       f"{', '.join(f'{k} x{v}' for k, v in sorted(floats.items()))}{verdict}")
    click.echo(f"report: {result.out_dir / 'report.json'}")
    return EXIT_OK if result.passed else EXIT_FAILED_CHECK
