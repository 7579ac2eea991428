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
from typing import Any

from localsync.errors import NotFound
from localsync.hlc import Timestamp
from localsync.statuses import iso_timestamp, set_register
from localsync.store import Replica

RegisterKey = tuple[str, str]

# SQLite allows 32,766 bound parameters; 500 keeps each IN list small.
CHUNK = 500


@dataclass(frozen=True)
class RegisterValue:
    """A register's value, with the HLC that orders it."""

    status: str | None
    hlc: str
    creator: str | None
    timestamp: str | None


def hlc_time(hlc: str) -> str:
    """Return the wall time of an HLC as the ISO 8601 string refs carry."""
    wall_ms = Timestamp.parse(hlc).wall_ms
    return iso_timestamp(datetime.fromtimestamp(wall_ms / 1000, tz=UTC))


def ms_time(ms: int) -> str:
    return iso_timestamp(datetime.fromtimestamp(ms / 1000, tz=UTC))


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def remote_values(
    conn: sqlite3.Connection, item_ids: Iterable[str]
) -> dict[RegisterKey, RegisterValue]:
    """Return the known remote value of every register of these items."""
    values: dict[RegisterKey, RegisterValue] = {}
    for chunk in chunks(sorted(set(item_ids))):
        marks = ", ".join("?" for _ in chunk)
        rows = conn.execute(
            "SELECT item_id, task_id, status, hlc, creator, timestamp"
            " FROM remote_registers"
            f" WHERE item_id IN ({marks})",
            list(chunk),
        )
        for item_id, task_id, status, hlc, creator, timestamp in rows:
            values[(item_id, task_id)] = RegisterValue(status, hlc, creator, timestamp)
    return values


def newest_pending(
    conn: sqlite3.Connection, item_ids: Iterable[str]
) -> dict[RegisterKey, RegisterValue]:
    """Return the newest pending op (by HLC) of every register of these items."""
    values: dict[RegisterKey, RegisterValue] = {}
    for chunk in chunks(sorted(set(item_ids))):
        marks = ", ".join("?" for _ in chunk)
        rows = conn.execute(
            "SELECT item_id, task_id, status, hlc, creator, created_at FROM journal"
            f" WHERE state = 'pending' AND item_id IN ({marks}) ORDER BY hlc",
            list(chunk),
        )
        for item_id, task_id, status, hlc, creator, created_at in rows:
            values[(item_id, task_id)] = RegisterValue(
                status, hlc, creator, ms_time(created_at)
            )
    return values


def store_remote_value(
    conn: sqlite3.Connection, key: RegisterKey, value: RegisterValue
) -> bool:
    """Store a remote register value unless a newer one is known; return if stored."""
    cursor = conn.execute(
        "INSERT INTO remote_registers"
        " (item_id, task_id, status, hlc, creator, timestamp)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (item_id, task_id) DO UPDATE SET status = excluded.status,"
        " hlc = excluded.hlc, creator = excluded.creator,"
        " timestamp = excluded.timestamp"
        " WHERE excluded.hlc >= remote_registers.hlc",
        (*key, value.status, value.hlc, value.creator, value.timestamp),
    )
    return cursor.rowcount > 0


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


def refresh_registers(replica: Replica, keys: Iterable[RegisterKey]) -> int:
    """Rewrite the local view of these registers from the remote values and pending ops.

    A register with neither a known remote value nor a pending op is cleared.
    Returns how many items were rewritten; items missing locally are skipped.
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
        before = json.dumps(item, sort_keys=True)
        for task_id in sorted(by_item[item_id]):
            key = (item_id, task_id)
            write_value(
                item,
                task_id,
                effective_value(remote.get(key), pending.get(key)),
                assignments,
            )
        if json.dumps(item, sort_keys=True) != before:
            changed.append(item)
    replica.put_items(changed)
    return len(changed)


def load_items(
    conn: sqlite3.Connection, item_ids: Sequence[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    for chunk in chunks(list(item_ids)):
        marks = ", ".join("?" for _ in chunk)
        rows = conn.execute(
            f"SELECT id, json FROM items WHERE id IN ({marks})", list(chunk)
        )
        for item_id, raw in rows.fetchall():
            yield item_id, json.loads(raw)
