"""What the user sees while long steps run: a live bar on a terminal, one line per step in CI logs.

Output goes to a duplicate of the original stderr taken at start-up, so toolchain output silenced by
``edgeprep._util.quiet`` (which redirects file descriptors 1 and 2) does not swallow the progress display.

Both consoles read no Rich markup: every string they print is shown as it is ("[bench]", a model named
``tiny[red].keras``), and edgeprep's own colours are ``Text`` styles. When the stream is not a terminal (a CI log,
a pipe) they are wide: a table is never cut to a width and no line is wrapped or ellipsized.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

# Not a terminal: lines as long as they are (a log viewer scrolls; a cut "verifi…" cannot be read back).
WIDE = 10_000


def _own_stderr():
    """A duplicate of file descriptor 2, or None when ``sys.stderr`` has none (Jupyter, captured streams): the
    console then writes to whatever ``sys.stderr`` is when it prints, never to a stream closed since."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, closefd=True)
    except (AttributeError, OSError, ValueError):   # io.UnsupportedOperation is an OSError and a ValueError
        return None


def make_console(file=None, stderr: bool = False) -> Console:
    """A console that reads no markup, as wide as its lines when ``file`` is not a terminal."""
    out = Console(file=file, stderr=stderr, highlight=False, markup=False)
    return out if out.is_terminal else Console(file=file, stderr=stderr, highlight=False, markup=False, width=WIDE)


_stderr = _own_stderr()
console = make_console(_stderr, stderr=True)


def result_console(stderr: bool = False) -> Console:
    """Where results (tables) go: stdout (stderr when stdout carries a file, ``--json -``); never cut when it is
    not a terminal (CI logs, pipes)."""
    return make_console(sys.stderr if stderr else None, stderr=stderr)


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line from plain strings and ``(text, style)`` pairs: user text is never read as markup."""
    return Text.assemble(*parts)


class Reporter:
    """Step lines and progress bars. ``quiet=True`` (``--quiet``) hides them and the notes; warnings are always
    shown."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:     # messages are plain text: "[gates.int8]" is a profile table, not rich markup
            console.print(Text(message))

    def warn(self, message: str) -> None:
        console.print(styled(("warning:", "yellow"), " ", message))

    @contextlib.contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """Run a step; yields ``advance(n)``. Shows a bar with ``total`` on a terminal, and the elapsed time."""
        start = time.perf_counter()
        if self.quiet:
            yield lambda n=1: None
            return
        if not console.is_terminal:
            console.print(Text(f"- {description} ..."))
            yield lambda n=1: None
            console.print(Text(f"  done in {time.perf_counter() - start:.1f} s"))
            return
        label = TextColumn("{task.description}", markup=False)
        columns = [SpinnerColumn(), label, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()] if total \
            else [SpinnerColumn(), label, TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
        console.print(styled(("✓", "green"), f" {description} ", (f"({time.perf_counter() - start:.1f} s)", "dim")))
