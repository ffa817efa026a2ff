"""The ``edgeprep`` command line: thin click commands over the stage functions.

Errors the user can fix (``EdgeprepError``) print one line and exit with code 2; ``--debug`` adds the traceback
and the toolchains' own output. Any other exception is a bug: it is shown with its traceback (exit code 3).
Exit code 1 means the command ran but an artifact failed a check (a regression or a broken artifact).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from edgeprep import __version__, _util
from edgeprep.errors import EdgeprepError, InputError

EXIT_OK, EXIT_FAILED_CHECK, EXIT_ERROR, EXIT_BUG = 0, 1, 2, 3


def _reporter(ctx: click.Context):
    from edgeprep.progress import Reporter

    return Reporter(quiet=ctx.obj.get("quiet", False))


def _floats(value: str | None, name: str, count: int | None = None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}", param_hint=name) from None
    if count is not None and len(parts) != count:
        raise click.BadParameter(f"expected {count} comma-separated values, got {value!r}", param_hint=name)
    return parts


def preprocess_options(f):
    """Options that set preprocessing on the command line (they win over the target and data manifest)."""
    opts = [
        click.option("--resize", metavar="H,W", help="Resize samples to H x W (bilinear)."),
        click.option("--channels", type=click.Choice(["1", "3"]), help="Convert samples to 1 (grey) or 3 (RGB) "
                     "channels."),
        click.option("--scale", type=float, help="Multiply pixel values by this (e.g. 0.00392156862745098 for "
                     "1/255)."),
        click.option("--offset", type=float, help="Then add this."),
        click.option("--mean", metavar="M[,M,M]", help="Then subtract this per-channel mean ..."),
        click.option("--std", metavar="S[,S,S]", help="... and divide by this per-channel std."),
        click.option("--layout", type=click.Choice(["NHWC", "NCHW"]), help="Layout the model expects (data is "
                     "read as NHWC)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def collect_preprocess(kw: dict) -> dict:
    """Pop the preprocessing options from a command's kwargs into a ``[preprocess]``-shaped dict."""
    out: dict = {}
    resize = kw.pop("resize", None)
    if resize is not None:
        out["resize"] = [int(v) for v in _floats(resize, "--resize", 2)]
    channels = kw.pop("channels", None)
    if channels is not None:
        out["channels"] = int(channels)
    for key in ("scale", "offset"):
        v = kw.pop(key, None)
        if v is not None:
            out[key] = v
    for key in ("mean", "std"):
        v = _floats(kw.pop(key, None), f"--{key}")
        if v is not None:
            out[key] = list(v)
    layout = kw.pop("layout", None)
    if layout is not None:
        out["layout"] = layout
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgeprep")
@click.option("--debug", is_flag=True, envvar="EDGEPREP_DEBUG",
              help="Show tracebacks and the toolchains' own output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output; only results and errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Prepare one trained Keras/TensorFlow vision model for edge devices.

    Converts to TFLite (LiteRT), OpenVINO IR and Core ML at fp32, fp16 and int8, checks every artifact computes
    what the float model computes (accuracy, top-1 agreement, SQNR) and writes a versioned report.json.

    \b
    Quick start:
      edgeprep targets
      edgeprep run examples/fashion_mnist_cnn.keras --target litert-cpu \\
          --data calibration_data/fashion_mnist.toml
    """
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    _util.VERBOSE = debug


@cli.command()
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
    reporter = _reporter(ctx)
    result = run_pipeline(model, target, data, out, calibration_path=calib_data,
                          cli_preprocess=collect_preprocess(kw), reporter=reporter)
    _print_table(result.report)
    click.echo(f"report: {result.out_dir / 'report.json'}")
    return EXIT_OK if result.passed else EXIT_FAILED_CHECK


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--to", "fmt", required=True, type=click.Choice(["tflite", "openvino", "coreml"]),
              help="Deployment format.")
@click.option("--precision", required=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="fp32; fp16 weights; int8 (TFLite: full integer; OpenVINO: NNCF PTQ; Core ML: 8-bit weights).")
@click.option("-d", "--data", type=click.Path(path_type=Path), metavar="PATH",
              help="Calibration data for int8 (manifest, .npz, .npy or image folder).")
@click.option("-t", "--target", "target_name", metavar="NAME_OR_PATH",
              help="Take format options, preprocessing and calibration size from this target profile.")
@click.option("-o", "--out", type=click.Path(path_type=Path), metavar="PATH",
              help="Output file (default: <model>.<precision>.<ext> in the current directory).")
@click.option("--calib-samples", type=click.IntRange(min=1), help="Calibration samples for int8 (default 500).")
@preprocess_options
@click.pass_context
def convert(ctx: click.Context, model: Path, fmt: str, precision: str, data: Path | None, target_name: str | None,
            out: Path | None, calib_samples: int | None, **kw) -> int:
    """Convert MODEL to one deployment format and precision."""
    from edgeprep.backends import get_backend
    from edgeprep.data import check_fits, load_data
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert as convert_stage
    from edgeprep.targets import load_target

    target = load_target(target_name) if target_name else None
    backend = get_backend(fmt)
    reporter = _reporter(ctx)
    with reporter.step(f"Loading {model}"):
        handle = load_model(model)
    backend.check(handle, precision)
    calibration = None
    if data is not None:
        spec = load_data(data, preprocess_layers=((target.preprocess if target else None),),
                         cli_preprocess=collect_preprocess(kw))
        calibration = spec.calibration
        check_fits(calibration, handle.input_shape, f"the model ({handle.path.name})")
    elif precision == "int8" and fmt != "coreml":
        raise InputError(f"{fmt} int8 needs calibration data", "pass --data with representative samples")
    options = target.options_for(fmt) if target else backend.options_type()
    samples = calib_samples or (target.quantize.calibration_samples if target else 500)
    out = out or Path(backend.artifact_name(handle.name, precision))
    with reporter.step(f"Converting to {fmt} {precision}"):
        art = convert_stage(handle, fmt, precision, options, out, calibration=calibration,
                            calibration_samples=samples)
    click.echo(f"{art.path}  {art.size_bytes:,} bytes  sha256 {art.sha256[:16]}…  "
               f"weights {art.quantization.get('weights')}, activations {art.quantization.get('activations')}")
    return EXIT_OK


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-d", "--data", type=click.Path(path_type=Path), required=True, metavar="PATH",
              help="Evaluation data (manifest, .npz, .npy or image folder).")
@click.option("-t", "--target", "target_name", metavar="NAME_OR_PATH",
              help="Take runtime options, threads, preprocessing and [gates] thresholds from this profile.")
@click.option("-o", "--out", type=click.Path(path_type=Path), metavar="DIR",
              help="Also write report.json and summary.md into DIR.")
@click.option("--samples", type=click.IntRange(min=1), help="Evaluate on the first N samples only.")
@preprocess_options
@click.pass_context
def verify(ctx: click.Context, model: Path, artifacts: tuple[Path, ...], data: Path, target_name: str | None,
           out: Path | None, samples: int | None, **kw) -> int:
    """Check that ARTIFACTS compute what the float MODEL computes.

    Runs each artifact (.tflite, OpenVINO .xml, Core ML .mlpackage) on the evaluation data with the runtime of
    its format and reports top-1 accuracy, top-1 agreement with MODEL and SQNR in dB. Exit code 1 when an artifact
    fails a threshold of the target's [gates].
    """
    from edgeprep.config.gates import Gates
    from edgeprep.data import describe
    from edgeprep.pipeline import load_inputs
    from edgeprep.report import artifact_entry, build_report, write_report
    from edgeprep.stages.convert import open_artifact
    from edgeprep.stages.verify import reference
    from edgeprep.stages.verify import verify as verify_stage
    from edgeprep.targets import load_target

    target = load_target(target_name) if target_name else None
    reporter = _reporter(ctx)
    handle, spec = load_inputs(model, data, target, cli_preprocess=collect_preprocess(kw), reporter=reporter)
    arts = [open_artifact(a, target.options_for if target else None) for a in artifacts]
    n = min(spec.evaluation.count, samples or (target.verify.samples if target and target.verify.samples
                                                else spec.evaluation.count))
    with reporter.step("Float reference outputs", total=n) as advance:
        ref = reference(handle, spec.evaluation, n, advance)
    gates = target.gates if target else Gates()
    threads = target.threads if target else None
    root = (out or Path.cwd()).resolve()
    entries = []
    for art in arts:
        with reporter.step(f"Verifying {art.path.name}", total=n) as advance:
            result = verify_stage(art, ref, spec.evaluation, gates.for_precision(art.precision), threads, advance)
        entries.append(artifact_entry(art, result, root))
    report = build_report(command="verify", model=handle.describe(), artifacts=entries,
                          target={"name": target.name, "source": target.source, "profile": target.to_dict()}
                          if target else None,
                          data={"calibration": describe(spec.calibration), "evaluation": describe(spec.evaluation),
                                "manifest": spec.manifest}, reference=ref.describe())
    _print_table(report)
    if out:
        click.echo(f"report: {write_report(report, out)}")
    return EXIT_OK if report["summary"]["status"] == "passed" else EXIT_FAILED_CHECK


@cli.command()
def targets() -> int:
    """List the target profiles found ($EDGEPREP_TARGETS, ./targets, shipped)."""
    from edgeprep.targets import available, parse_target

    found = available()
    if not found:
        click.echo("no target profiles found")
        return EXIT_OK
    width = max(len(n) for n in found)
    for name, path in sorted(found.items()):
        try:
            t = parse_target(path.read_text(), str(path))
            what = f"{t.description}  [{', '.join(t.formats)}: {', '.join(t.precisions)}]"
        except EdgeprepError as exc:
            what = f"(invalid: {exc})"
        click.echo(f"{name:<{width}}  {what}")
    return EXIT_OK


def _print_table(report: dict) -> None:
    from rich.table import Table

    from edgeprep.progress import result_console
    from edgeprep.report.markdown import COLUMNS, rows

    console = result_console()
    ref = report.get("reference") or {}
    title = f"{report['model']['path']}"
    if ref.get("accuracy") is not None:
        title += f" — float top-1 {ref['accuracy']:.4f} on {ref['samples']} samples"
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i in (0, len(COLUMNS) - 1) else "right")
    for r in rows(report):
        style = "red" if r[-1].startswith("failed") else ("yellow" if r[-1] == "unverified" else None)
        table.add_row(*r, style=style)
    console.print(table)
    for a in report["artifacts"]:
        reason = a["verification"].get("reason")
        if reason:
            console.print(f"[yellow]{a['format']} {a['precision']}:[/yellow] {reason}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the click group and turns errors into one line and an exit code."""
    try:
        rv = cli.main(args=argv, prog_name="edgeprep", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_ERROR if exc.exit_code == 2 else exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("edgeprep: interrupted", err=True)
        return 130
    except EdgeprepError as exc:
        if _util.VERBOSE:
            traceback.print_exc()
        click.echo(f"edgeprep: error: {exc}", err=True)
        return exc.exit_code
    except Exception:  # a bug in edgeprep: show everything
        traceback.print_exc()
        click.echo("edgeprep: internal error (this is a bug; please report it with the traceback above)", err=True)
        return EXIT_BUG
    return rv if isinstance(rv, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

