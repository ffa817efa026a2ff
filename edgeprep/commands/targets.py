"""``edgeprep targets``: list the target profiles found; ``edgeprep targets show NAME``: print one."""

from __future__ import annotations

import os
from pathlib import Path

import click

from edgeprep.commands._common import EXIT_OK, complete_target
from edgeprep.errors import ConfigError, EdgeprepError


@click.group(invoke_without_command=True)
@click.pass_context
def targets(ctx: click.Context) -> int:
    """List the target profiles found, where each came from, and which one wins a name.

    \b
    Search order (the first directory holding a name wins):
      $EDGEPREP_TARGETS   directories separated by ':'
      ./targets           in the current directory
      shipped             the profiles installed with edgeprep
    """
    if ctx.invoked_subcommand is not None:
        return EXIT_OK
    from edgeprep.targets import parse_target, profile_files

    found = profile_files()
    if not found:
        raise ConfigError(f"no target profiles found (searched {_searched()})",
                          "the installation is incomplete: reinstall edgeprep, or put *.toml profiles in ./targets "
                          "or in a directory named by $EDGEPREP_TARGETS")
    winners: dict[str, str] = {}
    name_w = max(len(p.name) for p in found)
    origin_w = max(len(p.origin) for p in found)
    for p in sorted(found, key=lambda p: p.name):   # stable: within a name, search-path order is kept
        if p.name in winners:
            what = f"hidden by the {winners[p.name]} profile above"
        else:
            winners[p.name] = p.origin
            try:
                t = parse_target(p.read_text(), str(p))
                what = f"{t.description}  [{', '.join(t.formats)}: {', '.join(t.precisions)}]"
            except EdgeprepError as exc:
                what = f"(invalid: {exc})"
            if p.origin != "shipped":
                what += f"  {p}"
        click.echo(f"{p.name:<{name_w}}  {p.origin:<{origin_w}}  {what}")
    return EXIT_OK


@targets.command()
@click.argument("name", shell_complete=complete_target)
def show(name: str) -> int:
    """Print the profile NAME exactly as found, comments included.

    Redirect it to a file to start your own: edgeprep targets show litert-cpu > targets/my-board.toml
    """
    from edgeprep.targets import find_profile

    click.echo(find_profile(name).read_text(), nl=False)
    return EXIT_OK


def _searched() -> str:
    from edgeprep.targets import SHIPPED

    env = os.environ.get("EDGEPREP_TARGETS", "")
    return (f"$EDGEPREP_TARGETS ({env or 'unset'}), ./targets ({Path.cwd() / 'targets'}) "
            f"and the shipped profiles ({SHIPPED})")
