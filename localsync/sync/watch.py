"""Watch mode: push soon after any process journals an op, pull on an interval.

A watchdog observer on the replica's folder wakes the loop when the replica file or
its write-ahead log changes. The loop then pushes only if the journal contains
pending ops newer than the ones its last push started from, so the loop's own
writes (marking ops, applying pulls) do not wake it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from localsync.errors import LocalsyncError
from localsync.store import Replica
from localsync.sync.apply import now_ms
from localsync.sync.engine import SyncEngine, SyncReport
from localsync.sync.push import pending_count
from localsync.sync.remote import Remote
from localsync.sync.retry import SyncStopped

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 60.0
# A burst of writes is collapsed into one push: wait until the files are quiet for
# SETTLE seconds, but no longer than MAX_SETTLE after the first change.
SETTLE = 0.2
MAX_SETTLE = 2.0
# After a failed sync, wait this long before the next, doubling up to
# MAX_FAILURE_WAIT (or the interval, if shorter), so a remote back up is found soon.
FIRST_FAILURE_WAIT = 1.0
MAX_FAILURE_WAIT = 15.0


class _FileChanges(FileSystemEventHandler):
    def __init__(self, paths: set[str], wake: threading.Event) -> None:
        self.paths = paths
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {str(event.src_path), str(getattr(event, "dest_path", "") or "")}
        if paths & self.paths:
            self.wake.set()


@dataclass
class WatchStats:
    """Counts of a watch session.

    ``syncs`` counts the full syncs (push, pull, push) that finished and ``pushes``
    the push-only runs that journal writes woke. ``ops_pushed`` counts the ops
    sent by every run, including the batches that a stopped or failed run sent
    before it ended. ``pending`` is the number of pending ops when the watch
    stopped. ``push_latencies`` are the seconds from the first file change of a
    burst to the end of the push it caused.
    """

    syncs: int = 0
    pushes: int = 0
    ops_pushed: int = 0
    failures: int = 0
    ignored_wakeups: int = 0
    pending: int = 0
    push_latencies: list[float] | None = None

    def describe(self) -> str:
        """Return the counts as one phrase: ``2 syncs, 1 push-only run, ...``."""
        return ", ".join(
            [
                _counted(self.syncs, "sync"),
                _counted(self.pushes, "push-only run"),
                f"{_counted(self.ops_pushed, 'op')} pushed",
                f"{_counted(self.pending, 'op')} still pending",
            ]
        )


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class Watcher:
    """Runs syncs of one replica until ``stop`` is set.

    ``make_remote`` is called for every sync, so a token replaced with
    ``localsync login`` meanwhile is used from the next sync on.
    """

    def __init__(
        self,
        replica: Replica,
        make_remote: Callable[[], Remote],
        *,
        interval: float = DEFAULT_INTERVAL,
        stop: threading.Event | None = None,
        engine_options: dict[str, int] | None = None,
        on_report: Callable[[str, SyncReport], None] | None = None,
    ) -> None:
        self.replica = replica
        self.make_remote = make_remote
        self.interval = interval
        self.stop = stop or threading.Event()
        self.engine_options = engine_options or {}
        self.on_report = on_report
        self.wake = threading.Event()
        self.stats = WatchStats(push_latencies=[])
        self._pushed_from_rowid = 0

    def run(self) -> WatchStats:
        """Sync now, then push on journal writes and sync every ``interval`` seconds."""
        path = self.replica.path.resolve()
        watched = {str(path), f"{path}-wal"}
        observer = Observer()
        observer.schedule(
            _FileChanges(watched, self.wake), str(path.parent), recursive=False
        )
        observer.start()
        logger.info(
            "watching %s: push on journal writes, sync every %.0f s",
            path,
            self.interval,
        )
        try:
            self._loop()
        finally:
            observer.stop()
            observer.join()
            self.stats.pending = pending_count(self.replica)
            logger.info("watch stopped: %s", self.stats.describe())
        return self.stats

    def _loop(self) -> None:
        next_sync = time.monotonic()
        failure_wait = FIRST_FAILURE_WAIT
        while not self.stop.is_set():
            woke = self.wake.wait(max(0.0, next_sync - time.monotonic()))
            if self.stop.is_set():
                return
            if woke:
                first_change = time.monotonic()
                self._settle(first_change)
                if self.stop.is_set():
                    return
                if not self._has_new_pending():
                    self.stats.ignored_wakeups += 1
                    continue
                kind = "push"
            else:
                kind = "sync"
                first_change = None

            if self._run(kind, first_change):
                failure_wait = FIRST_FAILURE_WAIT
                if kind == "sync":
                    next_sync = time.monotonic() + self.interval
            else:
                logger.warning("next sync attempt in %.1f s", failure_wait)
                next_sync = time.monotonic() + failure_wait
                failure_wait = min(self.interval, MAX_FAILURE_WAIT, failure_wait * 2)

    def _settle(self, first_change: float) -> None:
        while time.monotonic() - first_change < MAX_SETTLE:
            self.wake.clear()
            if not self.wake.wait(SETTLE) or self.stop.is_set():
                return
        self.wake.clear()

    def _has_new_pending(self) -> bool:
        row = self.replica.conn.execute(
            "SELECT 1 FROM journal WHERE state = 'pending' AND rowid > ? LIMIT 1",
            (self._pushed_from_rowid,),
        ).fetchone()
        return row is not None

    def _run(self, kind: str, first_change: float | None) -> bool:
        row = self.replica.conn.execute(
            "SELECT COALESCE(MAX(rowid), 0) FROM journal"
        ).fetchone()
        started_from = int(row[0])
        started_ms = now_ms()
        try:
            with self.make_remote() as remote:
                engine = SyncEngine(self.replica, remote, **self.engine_options)
                report = engine.push() if kind == "push" else engine.sync()
        except SyncStopped:
            self.stats.ops_pushed += self._ops_marked_since(started_ms)
            return True
        except LocalsyncError as exc:
            self.stats.ops_pushed += self._ops_marked_since(started_ms)
            self.stats.failures += 1
            logger.warning("%s failed: %s", kind, exc)
            return False
        self._pushed_from_rowid = max(self._pushed_from_rowid, started_from)
        self.stats.ops_pushed += report.push.pushed
        if kind == "push":
            self.stats.pushes += 1
            if first_change is not None and self.stats.push_latencies is not None:
                self.stats.push_latencies.append(time.monotonic() - first_change)
        else:
            self.stats.syncs += 1
        if self.on_report is not None:
            self.on_report(kind, report)
        return True

    def _ops_marked_since(self, started_ms: int) -> int:
        """Count the ops a run marked with a push result before it stopped or failed.

        Its report is lost then, but each batch it sent was marked with a result
        (and ``pushed_at``) before the next batch went out.
        """
        row = self.replica.conn.execute(
            "SELECT COUNT(*) FROM journal WHERE pushed_at >= ?", (started_ms,)
        ).fetchone()
        return int(row[0])
