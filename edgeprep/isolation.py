"""Steps that can crash natively run in a child process: a signal there becomes one line and an exit code.

``run(fn, *args, what=..., **kwargs)`` calls ``fn(*args, **kwargs)`` in a fresh Python interpreter and returns its
result; a ``Child`` starts that interpreter early, importing the toolchain while the caller works. Fresh, not
forked: a fork of a process whose TensorFlow or OpenVINO has started its thread pools inherits locks held by threads
that do not exist in the child. ``fn`` (a module-level function), its arguments and its result travel by pickle
over a pipe.

- The child killed by a signal (a segfault or an abort in a toolchain's C++, the OOM killer) raises
  ``ToolchainCrash``: "<what> crashed natively (SIGSEGV) <where>", where ``where`` is the last ``phase()`` the
  child announced ("in the first training step").
- An exception in the child is raised again in the parent: an ``EdgeprepError`` as it was, anything else (a bug)
  with the child's traceback attached as a note.
- Ctrl-C, SIGTERM or any exception in the parent stops the child (SIGTERM to its process group, then SIGKILL)
  before the exception goes on; a parent killed outright takes the child with it (Linux: PR_SET_PDEATHSIG). The
  child has its own session, so a terminal's Ctrl-C reaches the parent only, and the parent stops the child.

The child's output (toolchain logging) is discarded unless the CLI's ``--debug`` is on: then it goes to the terminal,
with ``faulthandler``'s Python stack of a crash, and the toolchains log at the levels the user's environment sets
(``_util.toolchain_env``); otherwise they start at quiet levels whatever the environment says. The child ends with
``os._exit`` once its result is sent, skipping the toolchains' teardown (static destructors are a crash site of
their own).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import traceback
from pathlib import Path

from edgeprep.errors import EdgeprepError, ToolchainCrash

_channel = None  # in a child: the connection to the parent
_STOPPED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def phase(where: str) -> None:
    """Say what the child does now, as a phrase that completes "<what> crashed natively (SIGSEGV) ..." (e.g.
    "in the first training step"). Does nothing outside a child, so steps call it unconditionally."""
    if _channel is not None:
        _channel.send(("phase", where))


def run(fn, *args, what: str, progress=None, preload: tuple[str, ...] = (), **kwargs):
    """``fn(*args, **kwargs)`` in a new child process (see ``Child``)."""
    with Child(what, preload) as child:
        return child.call(fn, *args, progress=progress, **kwargs)


class Child:
    """A fresh interpreter, started at construction and importing ``preload`` (e.g. TensorFlow) while the caller
    goes on with its own work, that runs one call. Close it (or use it as a context manager): that stops it
    whatever happened."""

    def __init__(self, what: str, preload: tuple[str, ...] = (), stop_timeout: float = 5.0):
        from multiprocessing.connection import Connection

        from edgeprep import _util

        self.what, self.stop_timeout, self.where = what, stop_timeout, "while starting"
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, **_util.toolchain_env(_util.VERBOSE),     # quiet toolchains unless --debug
               "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        quiet = None if _util.VERBOSE else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", f"import edgeprep.isolation as i; i._child({to_child_r}, {from_child_w}, "
                                       f"{os.getpid()}, {bool(_util.VERBOSE)})"],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, stdout=quiet, stderr=quiet,
                env=env, start_new_session=True)
        except BaseException:
            for fd in (to_child_w, from_child_r):
                os.close(fd)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._to = Connection(to_child_w, readable=False)
        self._from = Connection(from_child_r, writable=False)
        self._send(list(sys.path), tuple(preload))

    def _send(self, *messages) -> None:
        try:
            for m in messages:
                self._to.send(m)
        except (BrokenPipeError, OSError):
            pass  # the child is gone: its exit status says why (call)

    def call(self, fn, *args, progress=None, **kwargs):
        """``fn(*args, **kwargs)`` in the child; ``progress``, when given, is passed to ``fn`` as its ``progress``
        keyword and called here with every value the child reports. The child exits after the call."""
        try:
            self._send((fn, args, kwargs, progress is not None))
            self._to.close()
            while True:
                try:
                    msg = self._from.recv_bytes()
                except EOFError:
                    break
                kind, *value = _loads(msg, self.what)
                if kind == "phase":
                    self.where = value[0]
                elif kind == "progress":
                    if progress is not None:
                        progress(value[0])
                elif kind in ("result", "error"):
                    try:
                        self.proc.wait(self.stop_timeout)  # it exits right after sending
                    except subprocess.TimeoutExpired:
                        pass
                    if kind == "error":
                        raise _rebuild(self.what, *value)
                    return value[0]
            raise _death(self.what, self.where, self.proc.wait())
        finally:
            self.close()

    def close(self) -> None:
        self._to.close()
        self._from.close()
        _stop(self.proc, self.stop_timeout)

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _loads(msg: bytes, what: str):
    try:
        return pickle.loads(msg)
    except Exception as exc:  # a result or exception type the parent cannot rebuild
        raise RuntimeError(f"{what}: the child process sent a message this process cannot read ({exc})") from None


def _rebuild(what: str, exc_bytes: bytes | None, tb: str) -> BaseException:
    exc = None
    if exc_bytes is not None:
        try:
            exc = pickle.loads(exc_bytes)
        except Exception:
            exc = None
    if isinstance(exc, EdgeprepError):
        return exc
    if not isinstance(exc, BaseException):
        exc = RuntimeError(f"{what} failed in its child process")
    exc.add_note(f"raised in the child process running {what}:\n{tb.rstrip()}")
    return exc


def _death(what: str, where: str, code: int) -> ToolchainCrash:
    if code >= 0:
        return ToolchainCrash(f"{what} ended {where} with exit code {code} and no result",
                              "rerun with --debug for the toolchain's output")
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code == signal.SIGKILL:
        return ToolchainCrash(f"{what} was killed ({name}) {where}",
                              "the system may have run out of memory (see dmesg); rerun with --debug for the "
                              "toolchain's output")
    if -code in _STOPPED:
        return ToolchainCrash(f"{what} was stopped ({name}) {where} by a signal from outside edgeprep",
                              "rerun it")
    return ToolchainCrash(f"{what} crashed natively ({name}) {where}", "rerun with --debug for the toolchain's output")


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    """Stop the child and everything it started (its process group) and reap it, even if a second Ctrl-C arrives
    while it is given ``timeout`` seconds to go."""
    if proc.poll() is not None:
        return
    try:
        _signal_group(proc, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _child(rfd: int, wfd: int, parent: int, verbose: bool) -> None:
    """The child's side: read the call, run it, send back the result or the exception, and exit at once."""
    global _channel
    import faulthandler
    from multiprocessing.connection import Connection

    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)
    faulthandler.enable()
    from edgeprep import _util

    _util.set_verbose(verbose)     # before the preloads: the toolchains read their log levels at import
    inbox, out = Connection(rfd, writable=False), Connection(wfd, readable=False)
    _channel = out
    sys.path[:] = inbox.recv()
    for name in inbox.recv():
        phase(f"while importing {name}")
        __import__(name)
    phase("while starting")
    try:
        fn, args, kwargs, wants_progress = inbox.recv()
    except EOFError:  # closed without a call
        os._exit(0)
    inbox.close()
    if wants_progress:
        kwargs["progress"] = lambda n=1: out.send(("progress", n))
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        tb = traceback.format_exc()
        try:
            exc_bytes = pickle.dumps(exc)
        except Exception:
            exc_bytes = None
        out.send(("error", exc_bytes, tb))
        os._exit(1)
    out.send(("result", result))
    out.close()
    os._exit(0)
