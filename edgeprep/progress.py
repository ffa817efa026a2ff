"""What the user sees while long steps run: a live bar on a terminal, one line per step in CI logs.

Output goes to a duplicate of the original stderr taken at start-up, so toolchain output silenced by
``edgeprep._util.quiet`` (which redirects file descriptors 1 and 2) does not swallow the progress display.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


def _own_stderr():
    """A duplicate of file descriptor 2, or ``sys.stderr`` itself when it has none (Jupyter, captured streams)."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, closefd=True)
    except (AttributeError, OSError, ValueError):   # io.UnsupportedOperation is an OSError and a ValueError
        return sys.stderr


_stderr = _own_stderr()
console = Console(file=_stderr, stderr=True, highlight=False)


def result_console() -> Console:
    """Where results (tables) go: stdout, 120 columns wide when it is not a terminal (CI logs, pipes)."""
    out = Console(highlight=False)
    return out if out.is_terminal else Console(highlight=False, width=120)


class Reporter:
    """Step lines and progress bars. ``quiet=True`` prints nothing (for tests and ``--quiet``)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:     # messages are plain text: "[gates.int8]" is a profile table, not rich markup
            console.print(escape(message))

    def warn(self, message: str) -> None:
        if not self.quiet:
            console.print(f"[yellow]warning:[/yellow] {escape(message)}")

    @contextlib.contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """Run a step; yields ``advance(n)``. Shows a bar with ``total`` on a terminal, and the elapsed time."""
        start = time.perf_counter()
        if self.quiet:
            yield lambda n=1: None
            return
        if not console.is_terminal:
            console.print(f"- {escape(description)} ...")
            yield lambda n=1: None
            console.print(f"  done in {time.perf_counter() - start:.1f} s")
            return
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn()] if total else [SpinnerColumn(), TextColumn("{task.description}"),
                                                       TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
        console.print(f"[green]✓[/green] {escape(description)} [dim]({time.perf_counter() - start:.1f} s)[/dim]")
