"""``edgeprep history``: the recorded runs and their headline figures, oldest first."""

from __future__ import annotations

from pathlib import Path

import click

from edgeprep.commands._common import EXIT_OK, complete_target


@click.command()
@click.option("--history", "history_path", type=click.Path(path_type=Path), metavar="PATH",
              help="History file (default: $EDGEPREP_HISTORY or .edgeprep/history.sqlite).")
@click.option("-t", "--target", "target_name", shell_complete=complete_target, metavar="NAME",
              help="Only runs of this target.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Last N runs.")
def history(history_path: Path | None, target_name: str | None, limit: int) -> int:
    """List recorded runs (edgeprep run / bench record each one): commit, tag, and per artifact its size,
    accuracy, median latency and peak RSS. Pick a baseline from them with 'edgeprep gate --baseline-ref'."""
    from rich.table import Table

    from edgeprep import history as hist
    from edgeprep.progress import result_console

    path = Path(history_path or hist.default_path())
    rows = hist.trend(path, target_name, limit)
    if not rows:
        click.echo(f"no runs recorded in {path}")
        return EXIT_OK
    table = Table(title=f"run history: {path}", title_justify="left")
    for col in ("run", "created", "commit", "tag", "target", "artifact", "size", "top-1", "p50 ms", "peak RSS MiB"):
        table.add_column(col)

    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    for r in rows:
        table.add_row(str(r["run_id"]), r["created"], (r["commit_sha"] or "")[:10], r["tag"] or "",
                      r["target"] or "", r["name"], f"{r['size_bytes']:,}", fmt(r["accuracy"], ".4f"),
                      fmt(r["p50_ms"], ".3f"), fmt(r["peak_rss_bytes"] and r["peak_rss_bytes"] / 2**20, ".1f"))
    result_console().print(table)
    return EXIT_OK
