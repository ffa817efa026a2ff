"""The ``edgeprep`` command line: thin click commands over the stage functions.

Errors the user can fix (``EdgeprepError``) print one line and exit with code 2; ``--debug`` adds the traceback
and the toolchains' own output. Any other exception is a bug: it is shown with its traceback (exit code 3).
Exit code 1 means the command ran but an artifact failed a check (a regression or a broken artifact).
"""

from __future__ import annotations

import sys
import traceback

import click

from edgeprep import __version__, _util
from edgeprep.commands._common import EXIT_BUG, EXIT_ERROR, EXIT_OK
from edgeprep.errors import EdgeprepError


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


# Every command, registered explicitly. A new command is one module in edgeprep/commands/ and one line here.
COMMANDS = ("run", "convert", "verify", "bench", "gate", "history", "targets", "calibrate", "fold", "quantize")


def _register() -> None:
    import importlib

    for name in COMMANDS:
        module = importlib.import_module(f"edgeprep.commands.{name}")
        cli.add_command(getattr(module, name))


_register()


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

