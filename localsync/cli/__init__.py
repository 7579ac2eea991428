"""The ``localsync`` command line.

Each module in this package adds the commands of one area to the root group:
``replica`` (import, items, status, tasks, log, info), ``server`` (serve and the
``server`` administration group), ``sync`` (clone, login, sync, conflicts, retry,
revert, drop, history) and ``demo``.
"""

from __future__ import annotations

import logging

import click

from localsync import __version__
from localsync.cli import demo, replica, server, sync

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="localsync")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log progress to stderr; -vv for debug and every HTTP request.",
)
def main(verbose: int) -> None:
    """Offline item statuses for Dataloop-style labeling.

    \b
    Example:
      localsync import ../shared/datasets/dataloop-exports --project p --dataset d
      localsync items --filter-json '{"filter": {"$and": [{"dir": "/Merino"}]}}'
    """
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    # httpx logs every request at INFO; those lines show only with -vv.
    if verbose == 1:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    elif verbose > 1:
        logging.getLogger("httpx").setLevel(logging.NOTSET)


for _module in (replica, server, sync, demo):
    _module.register(main)
