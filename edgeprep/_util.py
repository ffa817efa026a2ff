"""Small shared helpers: content hashes and silencing toolchain chatter (atomic writes: ``edgeprep.outputs``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

VERBOSE = False  # set by the CLI's --debug (``set_verbose``): toolchain output then goes to the terminal

# Toolchains print at import time and during conversion. Their log levels keep that off the user's terminal unless
# --debug, whatever the environment says: a shell with TF_CPP_MIN_LOG_LEVEL=0 (or set but empty) let TensorFlow's
# INFO lines ("All log messages before absl::InitializeLog() ...", oneDNN, cpu_feature_guard) through. A level the
# environment sets quieter is kept; with --debug the environment's own values apply.
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_VERBOSITY": "ERROR"}
_INHERITED = {k: os.environ.get(k) for k in _QUIET_ENV}


def _quieter(key: str, value: str | None) -> bool:
    if value is None:
        return False
    if key == "TF_CPP_MIN_LOG_LEVEL":
        return value.strip().isdigit() and int(value) >= int(_QUIET_ENV[key])
    return value.strip().upper() in ("ERROR", "NONE")


def toolchain_env(verbose: bool) -> dict[str, str]:
    """The toolchains' logging variables for this process and its children: quiet ones, or with ``verbose`` the
    values the environment gave (the quiet ones where it gave none)."""
    out = {}
    for key, quiet_value in _QUIET_ENV.items():
        given = _INHERITED[key]
        out[key] = given if given is not None and (verbose or _quieter(key, given)) else quiet_value
    return out


def set_verbose(on: bool) -> None:
    """--debug on or off: ``VERBOSE`` and the toolchains' log levels (effective for toolchains imported and
    processes started after this call)."""
    global VERBOSE
    VERBOSE = on
    os.environ.update(toolchain_env(on))


set_verbose(False)


def files_of(path: Path) -> list[Path]:
    """The files that make up an artifact: the file itself, or every file of a directory, sorted."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def sha256_of(paths: list[Path], root: Path | None = None) -> str:
    """SHA-256 over one or more files; for several, each relative name is hashed before its content."""
    h = hashlib.sha256()
    for p in paths:
        if len(paths) > 1:
            h.update(str(p.relative_to(root) if root else p.name).encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def tree_size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


class ToolOutput:
    """What a toolchain printed while silenced; attached to errors so failures stay diagnosable."""

    def __init__(self) -> None:
        self.text = ""

    def tail(self, lines: int = 15) -> str:
        kept = [ln for ln in self.text.splitlines() if ln.strip()]
        return "\n".join(kept[-lines:])


@contextlib.contextmanager
def quiet() -> Iterator[ToolOutput]:
    """Redirect file descriptors 1 and 2 (C++ logging included) to a temporary file for the block.

    The user's progress display writes to a duplicate of the original stderr (see ``edgeprep.progress``),
    so it keeps working while toolchain output is captured.
    """
    out = ToolOutput()
    if VERBOSE:
        yield out
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        # Python-level writers (rich, tqdm) may hold a replaced sys.stdout (pytest, IDEs): catch those too. The
        # stand-ins write to descriptors 1 and 2 by number, never to the log's own descriptor: a logging handler
        # created in the block keeps its stream after it, and the log's number is reused once the log is closed
        # (it once became the pipe to the QAT child, and a TensorFlow warning broke the message in it).
        out_text, err_text = (io.TextIOWrapper(open(fd, "wb", closefd=False), encoding="utf-8", write_through=True)
                              for fd in (1, 2))
        sys.stdout, sys.stderr = out_text, err_text
        try:
            yield out
        finally:
            sys.stdout, sys.stderr = saved_streams
            out_text.flush()
            err_text.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            log.seek(0)
            out.text = log.read().decode("utf-8", "replace")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The most informative single line of a toolchain exception, for one-line error messages."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:  # converters often bury the cause after a generic first line
        if "error:" in ln.lower() and len(ln) > 20:
            return ln[:limit]
    return lines[0][:limit] if lines else type(exc).__name__
