"""The local view of registers: the newest by HLC of the known remote value and the
pending ops, written into the items' refs.

Every function here runs inside the caller's write transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from localsync.errors import NotFound
from localsync.hlc import Timestamp
from localsync.statuses import iso_timestamp, set_register
from localsync.store import Replica

RegisterKey = tuple[str, str]

# A newer known value wins; an equal HLC is the same write and may be stored again.
_STORE_REMOTE_SQL = (
    "INSERT INTO remote_registers"
    " (item_id, task_id, status, hlc, creator, timestamp)"
    " VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (item_id, task_id) DO UPDATE SET status = excluded.status,"
    " hlc = excluded.hlc, creator = excluded.creator,"
    " timestamp = excluded.timestamp"
    " WHERE excluded.hlc >= remote_registers.hlc"
)


@dataclass(frozen=True)
class RegisterValue:
    """A register's value, with the HLC that orders it."""

    status: str | None
    hlc: str
    creator: str | None
    timestamp: str | None


def hlc_time(hlc: str) -> str:
    """Return the wall time of an HLC as the ISO 8601 string refs carry."""
    return ms_time(Timestamp.parse(hlc).wall_ms)


# Ops journaled by one call share their created_at, and the ops of a push batch
# mostly share their HLC's millisecond, so a small cache saves most formatting.
@lru_cache(maxsize=4096)
def ms_time(ms: int) -> str:
    """Return a time in ms since the epoch as the ISO 8601 string refs carry."""
    return iso_timestamp(datetime.fromtimestamp(ms / 1000, tz=UTC))


def _ids_json(values: Iterable[str]) -> str:
    """Return ids as one JSON array, bound as a single parameter for ``json_each``."""
    return json.dumps(sorted(set(values)))


def remote_values(
    conn: sqlite3.Connection, item_ids: Iterable[str]
) -> dict[RegisterKey, RegisterValue]:
    """Return the known remote value of every register of these items."""
    rows = conn.execute(
        "SELECT item_id, task_id, status, hlc, creator, timestamp"
        " FROM remote_registers"
        " WHERE item_id IN (SELECT value FROM json_each(?))",
        (_ids_json(item_ids),),
    )
    return {
        (item_id, task_id): RegisterValue(status, hlc, creator, timestamp)
        for item_id, task_id, status, hlc, creator, timestamp in rows
    }


@dataclass(frozen=True)
class PendingOp:
    """A pending journal op of a register, as the local view renders it."""

    op_id: str
    value: RegisterValue


def pending_ops_of(
    conn: sqlite3.Connection, item_ids: Iterable[str]
) -> dict[RegisterKey, list[PendingOp]]:
    """Return every pending op of every register of these items, oldest HLC first."""
    rows = conn.execute(
        "SELECT op_id, item_id, task_id, status, hlc, creator, created_at FROM journal"
        # The unary plus keeps SQLite from scanning every pending op through the
        # state index; the item index finds only these items' ops.
        " WHERE +state = 'pending' AND item_id IN (SELECT value FROM json_each(?))"
        " ORDER BY hlc",
        (_ids_json(item_ids),),
    )
    ops: dict[RegisterKey, list[PendingOp]] = {}
    for op_id, item_id, task_id, status, hlc, creator, created_at in rows:
        value = RegisterValue(status, hlc, creator, ms_time(created_at))
        ops.setdefault((item_id, task_id), []).append(PendingOp(op_id, value))
    return ops


def newest_pending(
    conn: sqlite3.Connection, item_ids: Iterable[str]
) -> dict[RegisterKey, RegisterValue]:
    """Return the newest pending op (by HLC) of every register of these items."""
    return {key: ops[-1].value for key, ops in pending_ops_of(conn, item_ids).items()}


def store_remote_values(
    conn: sqlite3.Connection, values: Iterable[tuple[RegisterKey, RegisterValue]]
) -> None:
    """Store remote register values in order, each unless a newer one is known."""
    conn.executemany(
        _STORE_REMOTE_SQL,
        (
            (*key, value.status, value.hlc, value.creator, value.timestamp)
            for key, value in values
        ),
    )


class AssignmentIds:
    """A cache of each task's assignment ids, for writing a register into refs."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._by_task: dict[str, list[str]] = {}

    def __call__(self, task_id: str) -> list[str]:
        if task_id not in self._by_task:
            self._by_task[task_id] = self.replica.assignment_ids(task_id)
        return self._by_task[task_id]


def write_value(
    item: dict[str, Any],
    task_id: str,
    value: RegisterValue | None,
    assignments: AssignmentIds,
) -> bool:
    """Write a register's value (``None`` clears) into the item's refs.

    Returns False, changing nothing, when the item has no ref of the task: the item
    left the task on the remote, and a pending op on it will be rejected there.
    """
    try:
        set_register(
            item,
            task_id=task_id,
            assignment_ids=assignments(task_id),
            status=None if value is None else value.status,
            creator=None if value is None else value.creator,
            timestamp=None if value is None else value.timestamp,
        )
    except NotFound:
        return False
    return True


def effective_value(
    remote: RegisterValue | None, pending: RegisterValue | None
) -> RegisterValue | None:
    """Return the newer by HLC of the known remote value and the newest pending op."""
    if pending is None:
        return remote
    if remote is None or pending.hlc > remote.hlc:
        return pending
    return remote


def same_write(left: RegisterValue | None, right: RegisterValue | None) -> bool:
    """Return whether two values are the same write: status, HLC and creator.

    The timestamp is left out because a pending op and the remote value it became
    render it from different clocks (the local write time and the HLC's wall time).
    """
    if left is None or right is None:
        return left is right
    return (left.status, left.hlc, left.creator) == (
        right.status,
        right.hlc,
        right.creator,
    )


def refresh_registers(replica: Replica, keys: Iterable[RegisterKey]) -> int:
    """Rewrite the local view of these registers from the remote values and pending ops.

    A register with neither a known remote value nor a pending op is cleared. Only
    items whose refs change are written back. Returns how many items were rewritten;
    items missing locally are skipped.
    """
    by_item: dict[str, set[str]] = {}
    for item_id, task_id in keys:
        by_item.setdefault(item_id, set()).add(task_id)
    if not by_item:
        return 0

    conn = replica.conn
    assignments = AssignmentIds(replica)
    remote = remote_values(conn, by_item)
    pending = newest_pending(conn, by_item)
    changed: list[dict[str, Any]] = []
    for item_id, item in load_items(conn, list(by_item)):
        before = _refs_state(item)
        for task_id in sorted(by_item[item_id]):
            key = (item_id, task_id)
            write_value(
                item,
                task_id,
                effective_value(remote.get(key), pending.get(key)),
                assignments,
            )
        if _refs_state(item) != before:
            changed.append(item)
    replica.put_items(changed)
    return len(changed)


def _refs_state(item: dict[str, Any]) -> tuple[Any, Any]:
    """Return a copy of the part of an item that writing a register changes.

    ``set_register`` changes only the refs' ``metadata`` dicts (in place, or by
    adding one), the refs list when it is missing, and the ``annotationStatus``
    derived from the refs (by assigning a new list). A copy of each ref and of its
    metadata is therefore enough to tell whether the item changed, at a fraction
    of the cost of serializing it.
    """
    metadata = item.get("metadata")
    system = metadata.get("system") if isinstance(metadata, dict) else None
    if not isinstance(system, dict):
        return None, None
    refs = system.get("refs")
    if isinstance(refs, list):
        refs = [_ref_copy(ref) for ref in refs]
    return refs, system.get("annotationStatus")


def _ref_copy(ref: Any) -> Any:
    if not isinstance(ref, dict):
        return ref
    copy = dict(ref)
    if isinstance(copy.get("metadata"), dict):
        copy["metadata"] = dict(copy["metadata"])
    return copy


def load_items(
    conn: sqlite3.Connection, item_ids: Sequence[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    rows = conn.execute(
        "SELECT id, json FROM items WHERE id IN (SELECT value FROM json_each(?))",
        (_ids_json(item_ids),),
    )
    for item_id, raw in rows.fetchall():
        yield item_id, json.loads(raw)
