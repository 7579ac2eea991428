"""One sync of a replica with its remote: push, pull, and push again if needed.

The engine also recovers from a remote whose database was replaced (a new epoch)
and from a replica file restored from an older copy (a seq conflict).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from localsync.errors import SyncError
from localsync.store import Replica
from localsync.sync.apply import PullCounts, PushCounts
from localsync.sync.pull import (
    DEFAULT_PAGE_LIMIT,
    REFETCH_RUNNING,
    ReplicaCopied,
    pull_changes,
)
from localsync.sync.push import pending_count, push_pending
from localsync.sync.recovery import (
    reassert_lost_ops,
    start_refetch,
    take_new_replica_id,
)
from localsync.sync.remote import (
    DEFAULT_MAX_BATCH,
    EpochMismatch,
    PullPage,
    Remote,
    SeqConflict,
)

logger = logging.getLogger(__name__)

# How often one sync may start over after a new epoch or a seq conflict. More
# recoveries mean the remote keeps changing under the replica, so the sync gives up.
MAX_RECOVERIES = 2


@dataclass
class SyncReport:
    """Counts of one sync. ``rejected`` counts the ops the remote rejected and the
    pending ops on items or tasks the remote deleted."""

    push: PushCounts = field(default_factory=PushCounts)
    pull: PullCounts = field(default_factory=PullCounts)
    conflicts: int = 0
    rounds: int = 0
    epoch_changed: bool = False
    new_replica_id: str | None = None
    reasserted: int = 0
    pending: int = 0
    seconds: float = 0.0

    @property
    def rejected(self) -> int:
        return self.push.rejected + self.pull.rejected

    def to_json(self) -> dict[str, Any]:
        return {
            "pushed": self.push.pushed,
            "applied": self.push.applied,
            "superseded": self.push.superseded,
            "rejected": self.rejected,
            "restamped": self.push.restamped,
            "pulled": self.pull.changes,
            "pages": self.pull.pages,
            "conflicts": self.conflicts,
            "rounds": self.rounds,
            "epochChanged": self.epoch_changed,
            "newReplicaId": self.new_replica_id,
            "reasserted": self.reasserted,
            "pending": self.pending,
            "seconds": round(self.seconds, 3),
            "detail": {"push": asdict(self.push), "pull": asdict(self.pull)},
        }


class SyncEngine:
    """Syncs one replica with one remote; the caller owns (and closes) both."""

    def __init__(
        self,
        replica: Replica,
        remote: Remote,
        *,
        batch_size: int = DEFAULT_MAX_BATCH,
        page_limit: int = DEFAULT_PAGE_LIMIT,
    ) -> None:
        self.replica = replica
        self.remote = remote
        self.batch_size = batch_size
        self.page_limit = page_limit

    def sync(
        self, *, on_page: Callable[[PullPage, PullCounts], None] | None = None
    ) -> SyncReport:
        """Push pending ops, pull remote changes, and push ops written meanwhile."""
        started = time.monotonic()
        report = SyncReport()
        first_conflict = self._next_conflict_id()
        if self.replica.setting("epoch") is not None:
            self._push_round(report)
        self._pull_round(report, on_page)
        if self._pending_to_push():
            self._push_round(report)
        report.conflicts = self._next_conflict_id() - first_conflict
        report.pending = pending_count(self.replica)
        report.seconds = time.monotonic() - started
        self.replica.set_setting("last_sync_at", int(time.time() * 1000))
        return report

    def push(self) -> SyncReport:
        """Push pending ops only (what watch mode does right after a journal write)."""
        started = time.monotonic()
        report = SyncReport()
        first_conflict = self._next_conflict_id()
        if self.replica.setting("epoch") is None:
            self._pull_round(report, None)
        self._push_round(report)
        report.conflicts = self._next_conflict_id() - first_conflict
        report.pending = pending_count(self.replica)
        report.seconds = time.monotonic() - started
        return report

    def pull(
        self, *, on_page: Callable[[PullPage, PullCounts], None] | None = None
    ) -> SyncReport:
        """Pull remote changes only (a clone)."""
        started = time.monotonic()
        report = SyncReport()
        self._pull_round(report, on_page)
        report.pending = pending_count(self.replica)
        report.seconds = time.monotonic() - started
        return report

    # Rounds

    def _push_round(self, report: SyncReport) -> None:
        report.rounds += 1
        counts = PushCounts()
        for recovery in range(MAX_RECOVERIES + 1):
            try:
                counts.add(
                    push_pending(self.replica, self.remote, batch_size=self.batch_size)
                )
                break
            except EpochMismatch as exc:
                self._check_recovery(recovery, exc)
                start_refetch(self.replica, exc.epoch)
                report.epoch_changed = True
                self._pull_round(report, None)
            except SeqConflict as exc:
                self._check_recovery(recovery, exc)
                self._leave_copied_id(report)
        report.push.add(counts)
        logger.info(
            "sync round %d (push): %d ops pushed, %d applied, %d superseded, "
            "%d rejected",
            report.rounds,
            counts.pushed,
            counts.applied,
            counts.superseded,
            counts.rejected,
        )

    def _leave_copied_id(self, report: SyncReport) -> None:
        """Take a new replica id because another file pushed under this one.

        Pulls under the old id left out the registers that id wrote last, and the
        other file may have written some of them, so the next pull starts again
        from cursor 0 to learn those values.
        """
        report.new_replica_id, _ = take_new_replica_id(self.replica)
        self.replica.set_setting("cursor", 0)

    def _pull_round(
        self, report: SyncReport, on_page: Callable[[PullPage, PullCounts], None] | None
    ) -> None:
        report.rounds += 1
        counts = PullCounts()
        for recovery in range(MAX_RECOVERIES + 1):
            try:
                counts.add(
                    pull_changes(
                        self.replica,
                        self.remote,
                        limit=self.page_limit,
                        on_page=on_page,
                    )
                )
                break
            except EpochMismatch as exc:
                self._check_recovery(recovery, exc)
                start_refetch(self.replica, exc.epoch)
                report.epoch_changed = True
            except ReplicaCopied as exc:
                self._check_recovery(recovery, exc)
                self._leave_copied_id(report)
        if self.replica.setting(REFETCH_RUNNING) is not None:
            report.reasserted += reassert_lost_ops(self.replica)
        report.pull.add(counts)
        logger.info(
            "sync round %d (pull): %d changes in %d pages, %d items, %d registers, "
            "%d deleted, cursor %s",
            report.rounds,
            counts.changes,
            counts.pages,
            counts.items,
            counts.registers,
            counts.deleted,
            self.replica.setting("cursor"),
        )

    @staticmethod
    def _check_recovery(recovery: int, exc: SyncError) -> None:
        if recovery >= MAX_RECOVERIES:
            raise SyncError(
                f"The remote changed again while the replica recovered ({exc}); run "
                "the sync again once the remote is stable"
            ) from exc

    def _pending_to_push(self) -> bool:
        row = self.replica.conn.execute(
            "SELECT 1 FROM journal WHERE state = 'pending' AND replica_id = ? LIMIT 1",
            (self.replica.replica_id,),
        ).fetchone()
        return row is not None

    def _next_conflict_id(self) -> int:
        row = self.replica.conn.execute(
            "SELECT COALESCE(MAX(id), 0) FROM conflicts"
        ).fetchone()
        return int(row[0])
