"""``edgeprep fold``: fold BatchNorm into the linear layers around it, verified equivalent."""

from __future__ import annotations

from pathlib import Path

import click

from edgeprep.commands._common import (
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
@click.option("-o", "--out", type=click.Path(), metavar="PATH",   # str: keeps a trailing "/" (a folder)
              help="Folded model (default: <model>.folded.keras here); a report is written beside it as "
                   "<name>.report.json.")
@click.option("-d", "--data", type=click.Path(path_type=Path), metavar="PATH",
              help="Data to verify equivalence on (its calibration set); without it, random inputs in [0, 1).")
@click.option("-t", "--target", "target_name", shell_complete=complete_target, metavar="NAME_OR_PATH",
              help="Take preprocessing from this profile.")
@click.option("--samples", type=click.IntRange(min=1), default=256, show_default=True,
              help="Samples the folded and unfolded models are compared on.")
@click.option("--max-rel-error", type=click.FloatRange(min=0.0, min_open=True), default=1e-4, show_default=True,
              help="Refuse the fold when max |folded - unfolded| / max |unfolded| exceeds this.")
@preprocess_options
@click.pass_context
def fold(ctx: click.Context, model: Path, out: str | None, data: Path | None, target_name: str | None,
         samples: int, max_rel_error: float, **kw) -> int:
    """Fold the BatchNorm layers of MODEL into the Conv/Dense layers around them.

    A BN after Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D (pointwise) or Dense folds into that layer (a
    bias is added where it had none; the activation after the BN stays). A BN that cannot (after an activation,
    after a shared layer or one with other consumers) folds into the next layer where that is exact, or is kept
    and listed with the reason. The folded model must match the unfolded one within --max-rel-error (fp32);
    otherwise the fold is refused (exit code 1) and nothing is written. No BN: "nothing to fold", exit code 0.
    """
    from edgeprep._util import quiet
    from edgeprep.bn.graph import require_keras
    from edgeprep.models import model_name
    from edgeprep.outputs import atomic_path
    from edgeprep.pipelines.run import load_inputs
    from edgeprep.stages.fold import FoldConfig, fold_bn
    from edgeprep.targets import load_target

    target = load_target(target_name) if target_name else None
    reporter = make_reporter(ctx)
    out = keras_model_out(out, f"{model_name(model)}.folded.keras", "fold")
    handle, spec = load_inputs(model, data, target, cli_preprocess=collect_preprocess(kw), reporter=reporter)
    require_keras(handle, "fold")
    with reporter.step("Folding BatchNorm"):
        result = fold_bn(handle.obj, FoldConfig(max_rel_error, samples), data=spec.calibration if spec else None)
    rep = result.report
    if rep.status == "nothing to fold":
        click.echo(rep.message)
        _print_kept(rep)
        return EXIT_OK
    result.raise_if_refused()
    _print_fold(rep)
    with quiet(), atomic_path(out, lambda _p: True) as tmp:    # keras_model_out checked what stands there
        result.model.save(tmp)
    report = write_json_report("fold", handle, out, {"fold": rep.to_dict()})
    click.echo(f"model: {out}\nreport: {report}")
    return EXIT_OK


def _print_kept(rep) -> None:
    for k in rep.kept:
        click.echo(f"  kept {k.bn}: {k.reason}")


def _print_fold(rep) -> None:
    from rich.table import Table

    from edgeprep.progress import result_console

    console = result_console()
    table = Table(title=f"BatchNorm folding: {len(rep.folded)} of {rep.bn_layers} folded", title_justify="left")
    for col in ("BN layer", "folded into", "type", "BN position"):
        table.add_column(col)
    for f in rep.folded:
        table.add_row(f.bn, f.into, f.layer_type, f"{f.position} it")
    for k in rep.kept:
        table.add_row(k.bn, "kept: " + k.reason, "", "", style="yellow")
    console.print(table)
    eq = rep.equivalence
    console.print(f"equivalence on {eq.samples} samples ({eq.source}): max abs error {eq.max_abs_error:.3g}, "
                  f"relative {eq.max_rel_error:.3g} (limit {eq.threshold:g}); parameters {rep.parameters_before:,} "
                  f"→ {rep.parameters_after:,}")
