"""Where edgeprep writes, and what it may replace: the one audited place for both.

Rules (the README's "Where edgeprep writes"):

- Everything is built under a temporary sibling of its final path (``.NAME.XXXX.tmp``) and renamed into place only
  when complete, so a failure, Ctrl-C or SIGTERM never leaves a half-written result under the final name.
- edgeprep replaces only what it wrote itself: a run directory holding an edgeprep ``report.json``, an artifact
  of the format being written (recognised by its content), a report file of the kind being written (an edgeprep
  Markdown/JUnit/HTML/JSON report), or an empty file or directory. Anything else at an output path is refused
  with exit code 2, before any heavy work, and never removed.
- The output location is checked for writability before any heavy work (read-only file systems, permissions).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from edgeprep.errors import InputError

Owned = Callable[[Path], bool]   # "did edgeprep write what stands at this path?"


class OutputError(InputError):
    """An output path edgeprep must not or cannot write (someone else's file, a directory, read-only)."""


# ---- what edgeprep wrote -------------------------------------------------------------------------------------

def _head(path: Path, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def is_empty(path: Path) -> bool:
    """An empty regular file or an empty directory: replacing it loses nothing."""
    if path.is_symlink():
        return False
    if path.is_dir():
        return not any(path.iterdir())
    return path.is_file() and path.stat().st_size == 0


def is_report_json(path: Path) -> bool:
    """A JSON file written by edgeprep: a report (schema_version + edgeprep_version) or a gate's verdicts."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    return {"schema_version", "edgeprep_version"} <= data.keys() or {"status", "verdicts", "counts"} <= data.keys()


def is_run_dir(path: Path) -> bool:
    """A directory edgeprep published: it holds an edgeprep report.json."""
    return path.is_dir() and not path.is_symlink() and is_report_json(path / "report.json")


def _starts_with(pattern: bytes) -> Owned:
    regex = re.compile(pattern)

    def owned(path: Path) -> bool:
        return path.is_file() and not path.is_symlink() and regex.match(_head(path)) is not None
    return owned


# The report files edgeprep writes, each recognised by how its writer starts it.
REPORT_KINDS: dict[str, Owned] = {
    "markdown": _starts_with(rb"# edgeprep report: "),
    "junit": _starts_with(rb'(<\?xml[^>]*\?>\s*)?<testsuites name="edgeprep"'),
    "html": _starts_with(rb"<!doctype html><html><head><meta charset='utf-8'>(<meta name='viewport'[^>]*>)?"
                         rb"<title>edgeprep report</title>"),
    "json": is_report_json,
}


# ---- checks made before any heavy work ------------------------------------------------------------------------

def check_writable_dir(directory: Path) -> None:
    """Prove a file can be made in ``directory``, or raise OutputError. Creates nothing: a directory that does not
    exist yet is judged by its nearest existing ancestor (where it would be created)."""
    directory = Path(directory).absolute()
    existing = directory
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write into {directory}: {existing} is a file, not a directory",
                          "choose another output path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgeprep-probe.", suffix=".tmp", dir=existing)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)     # a full disk takes an empty file, not a byte of content
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise output_error(exc, directory) from None


PROBE_BYTES = 64 * 1024
NEARLY_FULL = 1 << 20      # free bytes below which a toolchain's failed write is taken for a full disk


def full_disk_error(directory: Path) -> OutputError | None:
    """After a toolchain failed while writing into ``directory``: the one-line "disk full" error if the file
    system there is (nearly) full -- toolchains often report it in their own words ("iostream error")."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return None
    if free >= NEARLY_FULL:
        return None
    return output_error(OSError(errno.ENOSPC, f"No space left on device ({free:,} bytes free)", str(directory)))


def check_replaceable(path: Path, owned: Owned, what: str) -> None:
    """Refuse unless nothing stands at ``path``, or what stands there is empty or ``owned`` (edgeprep's own)."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if is_empty(path) or owned(path):
        return
    kind = "a directory" if path.is_dir() else "a file"
    raise OutputError(f"{path} is {kind} that edgeprep did not write (not {what}); edgeprep never replaces it",
                      "choose another output path, or move it away yourself")


def run_dir_out(out: Path) -> Path:
    """Check a run directory's path (``run``, ``bench``, ``quantize``) before any work; returns it resolved.

    It may be missing, an empty directory or an edgeprep run directory (replaced when the new run completes).
    """
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; a run writes a directory there",
                          "choose a directory path (a new one, or an earlier edgeprep run directory)")
    if out.is_dir() and not (is_empty(out) or is_run_dir(out)):
        raise OutputError(f"--out {out} is a directory that is not an edgeprep run directory (it has no edgeprep "
                          "report.json); edgeprep never replaces it",
                          f"choose a new path, e.g. {out / 'edgeprep-run'}")
    check_writable_dir(out.parent)
    return out


def report_file_out(path: Path, kind: str, option: str) -> Path:
    """Check a report file path (``--markdown``, ``--junit``, ``--html``, ``--json``, a baseline) before work."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a directory; it names the {kind} file to write",
                          f"give a file path, e.g. {path / ('report.' + _EXT.get(kind, kind))}")
    check_replaceable(path, REPORT_KINDS[kind], f"an edgeprep {kind} report")
    check_writable_dir(path.absolute().parent)
    return path


_EXT = {"markdown": "md", "junit": "xml", "html": "html", "json": "json"}


# ---- staging and publishing ---------------------------------------------------------------------------------

@contextlib.contextmanager
def private_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A new directory ``parent/<prefix><random>.tmp`` (mode 0700), removed when the block ends however it ends.

    It is made inside the ``try`` whose ``finally`` removes it, so a signal (SIGTERM, Ctrl-C: raised as an exception
    by the CLI's handler) arriving just after it was made still removes it; ``tempfile.mkdtemp`` before a ``try``
    left that window open (seen on a loaded machine: SIGTERM right after the directory appeared left it behind)."""
    import secrets

    path = Path(parent) / f"{prefix}{secrets.token_hex(6)}.tmp"
    ours = True
    try:
        try:
            os.mkdir(path, 0o700)
        except OSError as exc:
            ours = False            # nothing of ours there (a name taken by someone else is never removed)
            raise output_error(exc, parent) from None
        yield path
    finally:
        if ours:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A ``private_dir`` beside ``final`` (same file system, so the final rename is atomic); creates the parent
    directories of ``final`` that are missing. It does not probe for room: the commands' up-front checks
    (``run_dir_out``, ``report_file_out``...) did that once, before any work; a write that fails here is mapped."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, final.parent) from None
    with private_dir(final.parent, f".{final.name}.") as path:
        yield path


def publish(src: Path, dst: Path, owned: Owned, what: str) -> None:
    """Move ``src`` onto ``dst``. What stands at ``dst`` must be empty or ``owned``; a replaced directory is
    moved aside first and removed only after ``src`` is in place."""
    src, dst = Path(src), Path(dst)
    check_replaceable(dst, owned, what)
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}.tmp")
        os.replace(dst, old)
        try:
            os.replace(src, dst)
        except BaseException:
            os.replace(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def _never(path: Path) -> bool:
    return False


class Discard(Exception):
    """Raised inside ``staged_dir`` to drop the staging directory and publish nothing (the block is left)."""


@contextlib.contextmanager
def staged_dir(final: Path, owned: Owned = is_run_dir, what: str = "an edgeprep run directory") -> Iterator[Path]:
    """Yield a staging directory that becomes ``final`` when the block completes; removed on any failure, and
    when the block raises ``Discard`` (then nothing is published and the exception is swallowed)."""
    final = Path(final)
    check_replaceable(final, owned, what)
    with staging(final) as tree:
        try:
            yield tree
            publish(tree, final, owned, what)
        except Discard:
            pass


@contextlib.contextmanager
def atomic_path(final: Path, owned: Owned = _never, what: str = "a file edgeprep wrote") -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (same name, in a private temporary directory); move it onto
    ``final`` only when the block completes and wrote it. On any exception the temporary is removed.

    What stands at ``final`` is replaced only when it is empty or ``owned``; checked before the block runs.
    """
    final = Path(final)
    check_replaceable(final, owned, what)
    with staging(final) as tmp:
        target = tmp / final.name  # keeps the real file name (some tools check suffixes)
        yield target
        if not target.exists():
            raise FileNotFoundError(f"internal: {target} was not written")
        publish(target, final, owned, what)


# ---- OS errors as one line ------------------------------------------------------------------------------------

_FIXES = {
    errno.ENOSPC: "free space there, or choose another output path",
    errno.EDQUOT: "free space there, or choose another output path",
    errno.EROFS: "choose an output path on a writable file system",
    errno.EACCES: "check its permissions, or choose a path you can write to",
    errno.EPERM: "check its permissions, or choose a path you can write to",
}


def output_error(exc: OSError, path: Path | str | None = None) -> OutputError:
    """The one-line error for an OS error while writing output (disk full, read-only, permission)."""
    where = getattr(exc, "filename", None) or path
    fix = _FIXES.get(exc.errno, "check that location")
    reason = exc.strerror or str(exc)
    return OutputError(f"{where}: {reason}" if where else reason, fix)


OUTPUT_ERRNOS = frozenset(_FIXES)
