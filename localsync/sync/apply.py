"""Applying what the remote sent to the replica: push results and pulled pages.

Each function writes in one transaction, so a batch is durable locally as a whole
or not at all, and an interrupted sync resumes after the last batch it applied.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from localsync.crash_points import crash_point
from localsync.hlc import Timestamp
from localsync.store import Replica
from localsync.store.journal import load_clock, save_clock
from localsync.store.settings import set_setting
from localsync.sync.remote import (
    Change,
    Exchange,
    PullPage,
    PushOp,
    PushResponse,
    PushResult,
)
from localsync.sync.views import (
    AssignmentIds,
    PendingOp,
    RegisterKey,
    RegisterValue,
    effective_value,
    hlc_time,
    newest_pending,
    pending_ops_of,
    refresh_registers,
    remote_values,
    same_write,
    store_remote_values,
    write_value,
)

logger = logging.getLogger(__name__)

ITEM_DELETED = "item deleted"
TASK_DELETED = "task deleted"

# Tables a new remote epoch voids; the journal, conflicts and settings stay.
_ENTITY_TABLES = ("annotations", "items", "assignments", "tasks", "remote_registers")


@dataclass
class PushCounts:
    pushed: int = 0
    applied: int = 0
    superseded: int = 0
    rejected: int = 0
    restamped: int = 0
    batches: int = 0

    def add(self, other: PushCounts) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class PullCounts:
    pages: int = 0
    changes: int = 0
    items: int = 0
    registers: int = 0
    deleted: int = 0
    rejected: int = 0

    def add(self, other: PullCounts) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# Clock


def merge_clock(
    replica: Replica, exchange: Exchange, hlcs: Iterable[str | None] = ()
) -> None:
    """Merge the remote's HLCs into the replica clock and store the measured offset.

    ``clock_offset_ms`` is ``server time - local time``. Later ops are stamped with
    local time plus the offset, so a replica whose clock runs fast or slow writes
    corrected times once it has synced.
    """
    conn = replica.conn
    clock = load_clock(conn, replica.replica_id)
    texts: set[str] = set()
    for text in (exchange.server_hlc, *hlcs):
        if isinstance(text, str):
            if text:
                texts.add(text)
        elif text is not None:
            logger.warning("ignored invalid HLC %r from the remote", text)
    # Receiving is a max, and HLC strings sort in HLC order, so the newest valid one
    # is enough. Invalid strings that sort below it go unnoticed.
    for text in sorted(texts, reverse=True):
        try:
            clock.receive(Timestamp.parse(text))
        except ValueError:
            logger.warning("ignored invalid HLC %r from the remote", text)
            continue
        break
    save_clock(conn, clock)
    offset = exchange.offset_ms
    if offset is not None:
        set_setting(conn, "clock_offset_ms", offset)


# Push results


def apply_push_results(
    replica: Replica, ops: list[PushOp], response: PushResponse
) -> PushCounts:
    """Mark each pushed op from its result and record the winners, atomically.

    Only registers whose local view changes are rendered again: those of superseded
    and rejected ops, and those where the write the view shows changes (a
    restamped op, or a creator the remote filled in, for example). An applied op
    that is still the newest local write of its register leaves the item as it is.
    """
    counts = PushCounts(pushed=len(ops), batches=1)
    marked = _sent_results(ops, response.results)
    pushed_at = now_ms()
    with replica.transaction():
        conn = replica.conn
        item_ids = {op.item_id for op, _ in marked}
        remote = remote_values(conn, item_ids)
        pending = pending_ops_of(conn, item_ids)
        shown_before = _shown_values(remote, pending)

        _warn_not_pending(conn, marked, pending)
        _mark_ops(conn, marked, pushed_at)
        winners = list(_winners(marked))
        store_remote_values(conn, winners)

        for key, value in winners:
            remote[key] = _newer_remote(remote.get(key), value)
        marked_ids = {op.op_id for op, _ in marked}
        for key, register_ops in pending.items():
            pending[key] = [op for op in register_ops if op.op_id not in marked_ids]
        shown_after = _shown_values(remote, pending)
        touched = {
            (op.item_id, op.task_id)
            for op, result in marked
            if result.outcome != "applied"
        }
        touched.update(
            key
            for key in shown_before.keys() | shown_after.keys()
            if not same_write(shown_before.get(key), shown_after.get(key))
        )
        refresh_registers(replica, touched)
        merge_clock(replica, response.exchange, _result_hlcs(response.results))
        crash_point("push-results-marking")

    for _, result in marked:
        setattr(counts, result.outcome, getattr(counts, result.outcome) + 1)
        counts.restamped += result.restamped
    return counts


def _sent_results(
    ops: list[PushOp], results: list[PushResult]
) -> list[tuple[PushOp, PushResult]]:
    """Pair each result with its op, dropping results for ops this batch lacks."""
    by_id = {op.op_id: op for op in ops}
    pairs: list[tuple[PushOp, PushResult]] = []
    for result in results:
        op = by_id.get(result.op_id)
        if op is None:
            logger.warning(
                "push result for op %s that was not sent; ignored", result.op_id
            )
            continue
        pairs.append((op, result))
    return pairs


def _shown_values(
    remote: dict[RegisterKey, RegisterValue],
    pending: dict[RegisterKey, list[PendingOp]],
) -> dict[RegisterKey, RegisterValue | None]:
    """Return the value the local view shows for each register with any value."""
    newest = {key: ops[-1].value for key, ops in pending.items() if ops}
    return {
        key: effective_value(remote.get(key), newest.get(key))
        for key in remote.keys() | newest.keys()
    }


def _newer_remote(known: RegisterValue | None, stored: RegisterValue) -> RegisterValue:
    """Return what ``store_remote_values`` keeps: the stored value unless older."""
    if known is not None and stored.hlc < known.hlc:
        return known
    return stored


def _winners(
    marked: list[tuple[PushOp, PushResult]],
) -> Iterator[tuple[RegisterKey, RegisterValue]]:
    """Yield the remote value each result reports for its register, in order.

    An applied op without a winner in its result is itself the remote value, so the
    replica learns it from the push and does not rely on pulling it back.
    """
    for op, result in marked:
        key = (op.item_id, op.task_id)
        winner = result.winner
        if winner is not None:
            yield (
                key,
                RegisterValue(
                    winner.status, winner.hlc, winner.creator, hlc_time(winner.hlc)
                ),
            )
        elif result.outcome == "applied":
            hlc = result.hlc or op.hlc
            yield key, RegisterValue(op.status, hlc, op.creator, hlc_time(hlc))


def _result_hlcs(results: list[PushResult]) -> list[str | None]:
    hlcs: list[str | None] = []
    for result in results:
        hlcs.append(result.hlc)
        if result.winner is not None:
            hlcs.append(result.winner.hlc)
    return hlcs


def _warn_not_pending(
    conn: sqlite3.Connection,
    marked: list[tuple[PushOp, PushResult]],
    pending: dict[RegisterKey, list[PendingOp]],
) -> None:
    """Log each op that was no longer pending locally when its result came."""
    pending_ids = {op.op_id for ops in pending.values() for op in ops}
    others = {op.op_id: result for op, result in marked if op.op_id not in pending_ids}
    if not others:
        return
    rows = conn.execute(
        "SELECT op_id, state FROM journal"
        " WHERE op_id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(others)),),
    )
    for op_id, state in rows:
        # The user dropped it while it was on its way, but the remote's result is
        # what happened.
        logger.warning(
            "op %s was %s locally but the remote %s it",
            op_id,
            state,
            others[op_id].outcome,
        )


def _mark_ops(
    conn: sqlite3.Connection, marked: list[tuple[PushOp, PushResult]], pushed_at: int
) -> None:
    """Store each op's result, and a conflict row for each superseded op."""
    conn.executemany(
        "UPDATE journal SET state = ?, reason = COALESCE(?, reason), result = ?,"
        " pushed_at = ? WHERE op_id = ?",
        [
            (
                result.outcome,
                result.reason if result.outcome == "rejected" else None,
                json.dumps(result.raw),
                pushed_at,
                op.op_id,
            )
            for op, result in marked
        ],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO conflicts (op_id, item_id, task_id, local_status,"
        " local_hlc, winner_status, winner_hlc, winner_creator, winner_source,"
        " winner_replica_id, detected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                op.op_id,
                op.item_id,
                op.task_id,
                op.status,
                result.hlc or op.hlc,
                result.winner.status,
                result.winner.hlc,
                result.winner.creator,
                result.winner.source,
                result.winner.replica_id,
                pushed_at,
            )
            for op, result in marked
            if result.outcome == "superseded" and result.winner is not None
        ],
    )


# Pulled pages


def apply_page(replica: Replica, page: PullPage, *, wipe: bool = False) -> PullCounts:
    """Apply one pulled page and store its cursor and epoch, in one transaction.

    With ``wipe`` the replica's entities are deleted first (a new remote epoch),
    keeping the journal, so the page starts a full re-fetch.
    """
    counts = PullCounts(pages=1, changes=len(page.changes))
    conn = replica.conn
    with replica.transaction():
        if wipe:
            for table in _ENTITY_TABLES:
                conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        # Runs of item changes and of register changes are applied together, so
        # a page costs a few queries per run rather than several per change.
        run: list[Change] = []
        for change in page.changes:
            kind = _run_kind(change)
            if run and kind != _run_kind(run[0]):
                _apply_run(replica, run, counts)
                run = []
            if kind is None:
                _apply_change(replica, change, counts)
            else:
                run.append(change)
        _apply_run(replica, run, counts)
        crash_point("pull-page-applying")
        set_setting(conn, "cursor", page.cursor)
        set_setting(conn, "epoch", page.exchange.epoch)
        merge_clock(replica, page.exchange, _change_hlcs(page.changes))
        crash_point("pull-cursor-saved")
    return counts


def _change_hlcs(changes: list[Change]) -> list[str | None]:
    return [
        change.data.get("hlc")
        for change in changes
        if change.kind == "register" and change.data is not None
    ]


def _run_kind(change: Change) -> str | None:
    """Return the kind of run a change joins, or ``None`` if it is applied alone."""
    if change.kind == "register":
        return "register"
    if change.kind == "item" and not change.deleted and change.data is not None:
        return "item"
    return None


def _apply_run(replica: Replica, run: list[Change], counts: PullCounts) -> None:
    if not run:
        return
    if run[0].kind == "item":
        _apply_items(replica, run, counts)
    else:
        _apply_registers(replica, run, counts)


def _apply_change(replica: Replica, change: Change, counts: PullCounts) -> None:
    data = change.data
    if change.deleted:
        counts.deleted += 1
        _apply_tombstone(replica, change, counts)
    elif data is None:
        logger.warning(
            "change %d (%s %s) has no data; skipped", change.seq, change.kind, change.id
        )
    elif change.kind == "project":
        replica.put_project(data)
    elif change.kind == "dataset":
        projects = data.get("projects") or [replica.setting("project_id") or ""]
        replica.put_dataset(data, project_id=projects[0])
    elif change.kind == "task":
        replica.put_task(data)
    elif change.kind == "assignment":
        replica.put_assignment(data)
    elif change.kind == "annotation":
        replica.put_annotations([data])
    else:
        logger.warning(
            "change %d has unknown kind %r; skipped", change.seq, change.kind
        )


def _apply_items(replica: Replica, changes: list[Change], counts: PullCounts) -> None:
    """Write pulled items, overlaying each register's pending op when it is newer."""
    if not changes:
        return
    items: dict[str, dict[str, Any]] = {}
    for change in changes:
        assert change.data is not None
        items[change.id] = change.data
    pending = newest_pending(replica.conn, items)
    remote = remote_values(replica.conn, list({key[0] for key in pending}))
    assignments = AssignmentIds(replica)
    for (item_id, task_id), value in pending.items():
        # The item's JSON is at least as new as the known remote value, so only a
        # pending op newer than that value replaces what the JSON shows.
        if effective_value(remote.get((item_id, task_id)), value) is value:
            write_value(items[item_id], task_id, value, assignments)
    replica.put_items(items.values())
    counts.items += len(items)


def _apply_registers(
    replica: Replica, changes: list[Change], counts: PullCounts
) -> None:
    """Store pulled register values, then render again the registers they changed.

    A pulled value equal to the known remote value (the replica's own push result
    coming back, for example) changes nothing, so its item is not loaded.
    """
    conn = replica.conn
    writes: list[tuple[RegisterKey, RegisterValue | None]] = []
    for change in changes:
        data = change.data or {}
        key = _register_key(change, data)
        if change.deleted:
            writes.append((key, None))
        elif isinstance(data.get("hlc"), str):
            pulled = RegisterValue(
                data.get("status"),
                data["hlc"],
                data.get("creator"),
                data.get("timestamp") or hlc_time(data["hlc"]),
            )
            writes.append((key, pulled))
        else:
            logger.warning("register change %d has no HLC; skipped", change.seq)
    counts.registers += len(changes)

    known: dict[RegisterKey, RegisterValue | None] = dict(
        remote_values(conn, {key[0] for key, _ in writes})
    )
    changed: set[RegisterKey] = set()
    for key, value in writes:
        before = known.get(key)
        after: RegisterValue | None = None
        if value is not None:
            after = _newer_remote(before, value)
        if after != before:
            changed.add(key)
        known[key] = after
    _store_register_writes(conn, writes)
    refresh_registers(replica, changed)


def _register_key(change: Change, data: dict[str, Any]) -> RegisterKey:
    item_id, task_id = data.get("itemId"), data.get("taskId")
    if isinstance(item_id, str) and isinstance(task_id, str):
        return item_id, task_id
    item_id, _, task_id = change.id.partition(":")
    return item_id, task_id


def _store_register_writes(
    conn: sqlite3.Connection, writes: list[tuple[RegisterKey, RegisterValue | None]]
) -> None:
    """Store pulled register values (``None`` deletes), in feed order."""
    for deleted, run in groupby(writes, key=lambda write: write[1] is None):
        if deleted:
            conn.executemany(
                "DELETE FROM remote_registers WHERE item_id = ? AND task_id = ?",
                [key for key, _ in run],
            )
        else:
            store_remote_values(
                conn, [(key, value) for key, value in run if value is not None]
            )


def _apply_tombstone(replica: Replica, change: Change, counts: PullCounts) -> None:
    conn = replica.conn
    if change.kind == "item":
        counts.rejected += reject_pending(replica, "item_id", change.id, ITEM_DELETED)
        conn.execute("DELETE FROM remote_registers WHERE item_id = ?", (change.id,))
        replica.delete_items([change.id])
    elif change.kind == "annotation":
        conn.execute("DELETE FROM annotations WHERE id = ?", (change.id,))
    elif change.kind == "assignment":
        conn.execute("DELETE FROM assignments WHERE id = ?", (change.id,))
    elif change.kind == "task":
        counts.rejected += reject_pending(replica, "task_id", change.id, TASK_DELETED)
        conn.execute("DELETE FROM remote_registers WHERE task_id = ?", (change.id,))
        conn.execute("DELETE FROM assignments WHERE task_id = ?", (change.id,))
        conn.execute("DELETE FROM tasks WHERE id = ?", (change.id,))
    else:
        # NOTE: a deleted project or dataset leaves the replica as it is. It keeps
        # working offline, and only a new clone follows the remote again.
        logger.warning(
            "the remote deleted %s %s; the replica keeps its copy",
            change.kind,
            change.id,
        )


def reject_pending(replica: Replica, column: str, value: str, reason: str) -> int:
    """Quarantine the pending ops of a deleted item or task; return how many."""
    assert column in ("item_id", "task_id")
    cursor = replica.conn.execute(
        f"UPDATE journal SET state = 'rejected', reason = ? "  # noqa: S608 - fixed column
        f"WHERE state = 'pending' AND {column} = ?",
        (reason, value),
    )
    if cursor.rowcount:
        logger.warning(
            "%d pending ops quarantined: %s (%s)", cursor.rowcount, reason, value
        )
    return cursor.rowcount
