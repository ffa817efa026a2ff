"""``edgeprep targets``: list the target profiles found."""

from __future__ import annotations

import click

from edgeprep.commands._common import EXIT_OK
from edgeprep.errors import EdgeprepError


@click.command()
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
