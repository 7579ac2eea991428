"""Commands of the command line's sync area."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this area's commands to the root group."""
