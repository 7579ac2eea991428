"""Pulling the remote's changes after the stored cursor, page by page.

A page and its cursor are stored in one transaction, so memory stays bounded by the
page size and an interrupted pull resumes after the last page it stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from localsync.crash_points import crash_point
from localsync.errors import SyncError
from localsync.store import Replica
from localsync.store.journal import next_seq
from localsync.sync.apply import PullCounts, apply_page
from localsync.sync.push import own_results_recorded
from localsync.sync.remote import PullPage, Remote

logger = logging.getLogger(__name__)

DEFAULT_PAGE_LIMIT = 1000

# Set when the remote's epoch changed: the next pull starts again from cursor 0 and
# its first page replaces the replica's entities.
REFETCH_EPOCH = "refetch_epoch"
# Set when such a re-fetch has started and not yet reached the end of the feed.
REFETCH_RUNNING = "refetch_running"


def pull_changes(
    replica: Replica,
    remote: Remote,
    *,
    limit: int = DEFAULT_PAGE_LIMIT,
    on_page: Callable[[PullPage, PullCounts], None] | None = None,
) -> PullCounts:
    """Pull and apply every page after the stored cursor; return what was applied.

    Raises ``EpochMismatch`` (from the remote) when the remote's database changed.
    """
    dataset_id = replica.dataset_id
    if dataset_id is None:
        raise SyncError(
            f"Replica {str(replica.path)!r} contains no dataset; run "
            "'localsync clone' first"
        )
    counts = PullCounts()
    from_start = int(replica.setting("cursor") or 0) == 0
    while True:
        wipe_epoch = replica.setting(REFETCH_EPOCH)
        wipe = wipe_epoch is not None
        cursor = 0 if wipe else int(replica.setting("cursor") or 0)
        epoch = (wipe_epoch or None) if wipe else replica.setting("epoch")
        own_id = _own_writes_filter(replica, wipe or from_start)
        page = remote.pull(
            dataset_id=dataset_id,
            cursor=cursor,
            limit=limit,
            epoch=epoch,
            replica_id=own_id,
        )
        if own_id is not None:
            _check_replica_seq(replica, page)
        with replica.transaction():
            page_counts = apply_page(replica, page, wipe=wipe)
            if wipe:
                replica.set_setting(REFETCH_EPOCH, None)
                replica.set_setting(REFETCH_RUNNING, page.exchange.epoch)
        crash_point("pull-page-committed")
        counts.add(page_counts)
        logger.debug(
            "pulled %d changes, cursor %d -> %d", len(page.changes), cursor, page.cursor
        )
        if on_page is not None:
            on_page(page, page_counts)
        if not page.has_more:
            return counts
        if page.cursor == cursor and not page.changes:
            raise SyncError(
                f"Remote reported more changes after cursor {cursor} but sent none"
            )


class ReplicaCopied(SyncError):
    """The remote stores ops under this replica's id that its journal lacks."""


def _check_replica_seq(replica: Replica, page: PullPage) -> None:
    """Raise ``ReplicaCopied`` when the remote has seqs past the journal's last.

    A file restored from an older copy, or a copy of a file that pushed since,
    would otherwise never see the writes made under its id, because the page
    leaves them out.
    """
    if page.replica_seq is None:
        return
    local = next_seq(replica.conn, replica.replica_id) - 1
    if page.replica_seq > local:
        raise ReplicaCopied(
            f"The remote stores ops up to seq {page.replica_seq} under replica id "
            f"{replica.replica_id}, but this file's journal ends at seq {local}"
        )


def _own_writes_filter(replica: Replica, full: bool) -> str | None:
    """Return the replica id for the remote to leave out its own writes, or ``None``.

    A pull that started from cursor 0, or a re-fetch under a new epoch, must learn
    every register value, the replica's own included. Otherwise the replica has the
    values it wrote from its push results, unless a sent op lacks one.
    """
    if full or replica.setting(REFETCH_RUNNING) is not None:
        return None
    if not own_results_recorded(replica):
        return None
    return replica.replica_id
