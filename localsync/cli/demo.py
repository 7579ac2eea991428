"""The ``demo`` command: the whole offline workflow on real exports, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import click

from localsync.errors import LocalsyncError


@click.command()
@click.option(
    "--exports",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of Dataloop item JSON exports (default: "
    "../shared/datasets/dataloop-exports when present, else generated items).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the server database and the replicas (default: a temp folder).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text narrates each step; json prints only the summary.",
)
def demo(exports: Path | None, workdir: Path | None, output_format: str) -> None:
    """Run a server, two offline replicas and an online user through an outage.

    The demo imports the exports into a server on a free 127.0.0.1 port, clones
    two replicas, changes statuses offline in both and online through the REST
    API, syncs across a server outage, and prints the statuses and conflicts.

    \b
    Example:
      localsync demo --exports ../shared/datasets/dataloop-exports
    """
    from localsync.demo import run_demo

    def narrate(line: str) -> None:
        if output_format == "text":
            click.echo(line)

    try:
        summary = run_demo(exports, workdir, echo=narrate)
    except LocalsyncError as exc:
        raise click.ClickException(str(exc)) from exc
    if output_format == "json":
        click.echo(json.dumps(summary, indent=2))
    if not summary["converged"]:
        raise click.ClickException("the replicas and the server did not converge")


def register(group: click.Group) -> None:
    """Add this area's commands to the root group."""
    group.add_command(demo)
