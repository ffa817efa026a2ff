"""The ``edgeprep`` command line: thin click commands over the stage functions.

Errors the user can fix (``EdgeprepError``) print one line and exit with code 2; ``--debug`` adds the traceback
and the toolchains' own output. A full disk, a read-only file system or a permission refused while writing is
such an error too (exit code 2, naming the path). Any other exception is a bug: it is shown with its traceback
(exit code 3); so is a toolchain that crashed natively in a step run in a child process (``ToolchainCrash``),
printed as one line naming the step and the signal. Exit code 1 means the command ran but an artifact failed a
check (a regression or a broken artifact). Ctrl-C (SIGINT), SIGTERM and SIGHUP stop the command the same way:
temporary files are removed, every benchmark process edgeprep started is stopped, and the exit code is 128 + the
signal number (130, 143, 129).
"""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
import traceback

import click

from edgeprep import __version__, _util
from edgeprep.commands._common import EXIT_BUG, EXIT_ERROR, EXIT_OK
from edgeprep.errors import EdgeprepError

DEBUG_HELP = "Show tracebacks and the toolchains' own output."
QUIET_HELP = "No progress output and notes; results, warnings and errors are still shown."


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog="-q/--quiet and --debug may also follow the command (edgeprep run ... -q). Shell completion "
                    "(commands, options, target names): eval \"$(_EDGEPREP_COMPLETE=bash_source edgeprep)\" in "
                    "~/.bashrc (zsh_source in ~/.zshrc; fish: _EDGEPREP_COMPLETE=fish_source edgeprep | source).")
@click.version_option(__version__, prog_name="edgeprep")
@click.option("--debug", is_flag=True, envvar="EDGEPREP_DEBUG", help=DEBUG_HELP)
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
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
    _util.set_verbose(debug)


# Every command, registered explicitly. A new command is one module in edgeprep/commands/ and one line here.
COMMANDS = ("run", "convert", "verify", "bench", "gate", "history", "targets", "calibrate", "fold", "quantize")


def _set_quiet(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.ensure_object(dict)["quiet"] = True


def _set_debug(_ctx, _param, value: bool) -> None:
    if value:
        _util.set_verbose(True)


def _accept_global_options(command: click.Command) -> None:
    """``-q`` and ``--debug`` after the command name too (``edgeprep run MODEL ... -q``), on every subcommand."""
    command.params += [click.Option(["--debug"], is_flag=True, expose_value=False, callback=_set_debug,
                                    help=DEBUG_HELP),
                       click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_set_quiet,
                                    help=QUIET_HELP)]
    for sub in getattr(command, "commands", {}).values():
        _accept_global_options(sub)


def _register() -> None:
    import importlib

    for name in COMMANDS:
        module = importlib.import_module(f"edgeprep.commands.{name}")
        command = getattr(module, name)
        _accept_global_options(command)
        cli.add_command(command)


_register()


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, raised in the main thread so that every ``finally`` (staging cleanup) runs.

    Ctrl-C raises it too, not a plain KeyboardInterrupt: CPython remembers a plain KeyboardInterrupt that passes
    through a ``PyRun_String`` call (pybind11's ``exec`` in a toolchain) as unhandled and, at exit, kills the
    process with SIGINT even after edgeprep caught it (seen: exit -2 instead of 130). A subclass is not
    remembered."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_received: list[int] = []      # the signals that arrived during this command


def _raise_interrupted(signum, _frame):
    _received.append(signum)
    raise Interrupted(signum)


def _swallowed_interrupt() -> Interrupted | None:
    """The interrupt a toolchain caught and turned into its own error (TFLite's calibrator runs our data generator
    inside C++ and reports an exception raised there as "'NoneType' object is not callable"): still an interrupt."""
    return Interrupted(_received[0]) if _received else None


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM (how CI systems cancel a job) and SIGHUP behave like Ctrl-C while the command runs."""
    saved = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            saved[sig] = signal.signal(sig, _raise_interrupted)
    except ValueError:          # not the main thread (an embedding application): leave its handlers alone
        pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _stop_children() -> None:
    """Stop every benchmark process group edgeprep started (local, emulated and ssh transports)."""
    from device_bench.transports.base import stop_all

    stop_all()


def _accept_children() -> None:
    from device_bench.transports.base import accept_new

    accept_new()


# OS errors that mean "this location cannot take the output", with the words a user searches for.
_NO_SPACE = ("No space left on device", "Disk quota exceeded", "Read-only file system")


def _os_error(exc: BaseException) -> EdgeprepError | None:
    """A full disk, a read-only file system or a refused permission anywhere in the exception's chain (toolchains
    wrap them in their own types) as one user-facing error; None for anything else."""
    from edgeprep.outputs import OUTPUT_ERRNOS, OutputError, output_error

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS:
            return output_error(exc)
        text = str(exc)
        for words in _NO_SPACE:
            if words in text:
                code = errno.EROFS if words.startswith("Read-only") else errno.ENOSPC
                return OutputError(f"a toolchain could not write its output: {words}",
                                   output_error(OSError(code, words)).hint
                                   + " (or set TMPDIR to a roomier place for temporary files)")
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the click group and turns errors into one line and an exit code."""
    _received.clear()
    try:
        with _signals_interrupt():
            try:
                rv = cli.main(args=argv, prog_name="edgeprep", standalone_mode=False)
            except BaseException as exc:
                _stop_children()      # nothing edgeprep started outlives the command
                swallowed = None if isinstance(exc, (KeyboardInterrupt, click.Abort)) else _swallowed_interrupt()
                if swallowed is not None:
                    raise swallowed from exc
                raise
            finally:
                _accept_children()    # (fan_out has waited for its lanes): a later command may start processes
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_ERROR if exc.exit_code == 2 else exc.exit_code
    except (click.Abort, KeyboardInterrupt) as exc:
        cause = exc if isinstance(exc, Interrupted) else exc.__cause__   # click turns it into Abort
        if isinstance(cause, Interrupted) and cause.signum != signal.SIGINT:
            click.echo(f"edgeprep: stopped by {signal.Signals(cause.signum).name}", err=True)
            return 128 + cause.signum
        click.echo("edgeprep: interrupted", err=True)
        return 130
    except EdgeprepError as exc:
        if _util.VERBOSE:
            traceback.print_exc()
        click.echo(f"edgeprep: error: {exc}", err=True)
        return exc.exit_code
    except Exception as exc:  # a bug in edgeprep: show everything -- unless the disk is full or read-only
        known = _os_error(exc)
        if known is not None:
            if _util.VERBOSE:
                traceback.print_exc()
            click.echo(f"edgeprep: error: {known}", err=True)
            return known.exit_code
        traceback.print_exc()
        click.echo("edgeprep: internal error (this is a bug; please report it with the traceback above)", err=True)
        return EXIT_BUG
    return rv if isinstance(rv, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

