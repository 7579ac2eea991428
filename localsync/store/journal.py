"""The journal: appending status ops and applying them to the local view.

One call of :func:`append_status_ops` journals one op per target item and rewrites
those items' refs in a single transaction. SQLite does the JSON edits itself, so
100,000 items cost one transaction and no Python JSON round trip per item.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from localsync.hlc import Clock, Timestamp
from localsync.statuses import iso_timestamp
from localsync.store.connection import write_transaction
from localsync.store.settings import get_setting, set_setting

OP_STATES = ("pending", "applied", "superseded", "rejected", "dropped")

# Per target: whether the item exists, and the task ref's status wrapped in a
# one-element JSON array (NULL when the item has no ref of the task), so a single
# pass over the refs separates "no ref" from "ref without a status".
_REF_STATUS_SQL = """
SELECT t.item_id,
       i.id IS NOT NULL,
       (SELECT json_array(json_extract(r.value, '$.metadata.status'))
          FROM json_each(i.json, '$.metadata.system.refs') AS r
         WHERE json_extract(r.value, '$.id') = :task_id LIMIT 1)
  FROM temp.status_targets AS t LEFT JOIN items AS i ON i.id = t.item_id
 ORDER BY t.position
"""

# Rewrite every ref whose id is the task's or one of its assignments', and
# recompute annotationStatus from the new refs, in one pass over the items. A
# subquery result loses SQLite's JSON subtype, hence the json() around values.
_SET_REFS_SQL = """
WITH new_refs AS (
    SELECT items.id AS item_id, (
        SELECT json_group_array(json(CASE
            WHEN json_extract(r.value, '$.id') NOT IN ({ref_ids})
                THEN r.value
            WHEN :status IS NULL
                THEN json_remove(r.value, '$.metadata.status',
                                 '$.metadata.creator', '$.metadata.timestamp')
            WHEN json_type(r.value, '$.metadata') = 'object'
                THEN json_set(r.value, '$.metadata.status', :status,
                              '$.metadata.creator', :creator,
                              '$.metadata.timestamp', :timestamp)
            ELSE json_set(r.value, '$.metadata', json_object('status', :status,
                          'creator', :creator, 'timestamp', :timestamp))
            END))
          FROM json_each(items.json, '$.metadata.system.refs') AS r) AS refs
      FROM items
     WHERE items.id IN (SELECT item_id FROM temp.status_targets WHERE in_task)
)
UPDATE items SET json = json_set(
    json,
    '$.metadata.system.refs', json(new_refs.refs),
    '$.metadata.system.annotationStatus', json((
        SELECT json_group_array(status) FROM (
            SELECT DISTINCT json_extract(r.value, '$.metadata.status') AS status
              FROM json_each(new_refs.refs) AS r
             WHERE status IS NOT NULL ORDER BY status))))
  FROM new_refs
 WHERE items.id = new_refs.item_id
"""


@dataclass
class StatusResult:
    """The outcome of one status call: items changed, re-asserted, skipped, op ids.

    ``re-asserted`` items already had the status; they still get an op, because a
    re-assertion is a newer write for last-write-wins. ``skipped`` maps an item id
    to the reason it got no op.
    """

    task_id: str
    status: str | None
    changed: list[str] = field(default_factory=list)
    reasserted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    op_ids: list[str] = field(default_factory=list)

    @property
    def journaled(self) -> int:
        return len(self.op_ids)

    def to_json(self) -> dict:
        return {
            "taskId": self.task_id,
            "status": self.status,
            "changed": len(self.changed),
            "reasserted": len(self.reasserted),
            "skipped": len(self.skipped),
            "opIds": self.op_ids,
            "changedItemIds": self.changed,
            "reassertedItemIds": self.reasserted,
            "skippedItems": [
                {"itemId": item_id, "reason": reason}
                for item_id, reason in self.skipped.items()
            ],
        }


def load_clock(conn: sqlite3.Connection, replica_id: str) -> Clock:
    """Return the replica's clock, continuing from the last HLC it issued or saw."""
    last = get_setting(conn, "last_hlc")
    offset = int(get_setting(conn, "clock_offset_ms") or 0)
    return Clock(
        replica_id,
        last=Timestamp.parse(last) if last else None,
        offset_ms=offset,
    )


def save_clock(conn: sqlite3.Connection, clock: Clock) -> None:
    set_setting(conn, "last_hlc", str(clock.last))


def next_seq(conn: sqlite3.Connection, replica_id: str) -> int:
    row = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE replica_id = ?",
        (replica_id,),
    ).fetchone()
    return int(row[0])


def append_status_ops(
    conn: sqlite3.Connection,
    *,
    replica_id: str,
    item_ids: Iterable[str],
    task_id: str,
    assignment_ids: Sequence[str],
    status: str | None,
    creator: str | None,
    origin_op_id: str | None = None,
) -> StatusResult:
    """Journal a status (``None`` clears) for items of one task, in one transaction.

    An item listed twice gets one op. Items missing from the replica or not in the
    task are skipped and counted, not raised: callers that act on a single item
    decide whether that is an error.
    """
    result = StatusResult(task_id=task_id, status=status)
    with write_transaction(conn):
        _load_targets(conn, item_ids)
        rows = conn.execute(_REF_STATUS_SQL, {"task_id": task_id}).fetchall()
        in_task = _classify(rows, status, result)
        if in_task:
            _journal(
                conn,
                result,
                in_task,
                replica_id=replica_id,
                task_id=task_id,
                status=status,
                creator=creator,
                origin_op_id=origin_op_id,
            )
            _rewrite_refs(conn, in_task, task_id, assignment_ids, status, creator)
        conn.execute("DELETE FROM temp.status_targets")
    return result


def _load_targets(conn: sqlite3.Connection, item_ids: Iterable[str]) -> None:
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS status_targets ("
        " item_id TEXT PRIMARY KEY, position INTEGER, in_task INTEGER DEFAULT 0)"
    )
    conn.execute("DELETE FROM temp.status_targets")
    conn.executemany(
        "INSERT OR IGNORE INTO temp.status_targets (item_id, position) VALUES (?, ?)",
        ((item_id, position) for position, item_id in enumerate(item_ids)),
    )


def _classify(rows: list, status: str | None, result: StatusResult) -> list[str]:
    in_task = []
    for item_id, present, wrapped_status in rows:
        if not present:
            result.skipped[item_id] = "item not found"
        elif wrapped_status is None:
            result.skipped[item_id] = f"item is not in task {result.task_id}"
        else:
            current = json.loads(wrapped_status)[0]
            in_task.append(item_id)
            (result.reasserted if current == status else result.changed).append(item_id)
    return in_task


def _journal(
    conn: sqlite3.Connection,
    result: StatusResult,
    item_ids: list[str],
    *,
    replica_id: str,
    task_id: str,
    status: str | None,
    creator: str | None,
    origin_op_id: str | None,
) -> None:
    clock = load_clock(conn, replica_id)
    seq = next_seq(conn, replica_id)
    now_ms = time.time_ns() // 1_000_000
    rows = []
    for offset, item_id in enumerate(item_ids):
        op_id = uuid.uuid4().hex
        result.op_ids.append(op_id)
        rows.append(
            (
                op_id,
                replica_id,
                seq + offset,
                item_id,
                task_id,
                status,
                str(clock.send()),
                creator,
                origin_op_id,
                now_ms,
            )
        )
    conn.executemany(
        "INSERT INTO journal (op_id, replica_id, seq, item_id, task_id, status, hlc,"
        " creator, origin_op_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    save_clock(conn, clock)


def _rewrite_refs(
    conn: sqlite3.Connection,
    item_ids: list[str],
    task_id: str,
    assignment_ids: Sequence[str],
    status: str | None,
    creator: str | None,
) -> None:
    conn.executemany(
        "UPDATE temp.status_targets SET in_task = 1 WHERE item_id = ?",
        ((item_id,) for item_id in item_ids),
    )
    ref_ids = [task_id, *assignment_ids]
    params: dict[str, str | None] = {
        f"ref{number}": ref_id for number, ref_id in enumerate(ref_ids)
    }
    params.update(status=status, creator=creator, timestamp=iso_timestamp())
    placeholders = ", ".join(f":ref{number}" for number in range(len(ref_ids)))
    conn.execute(_SET_REFS_SQL.format(ref_ids=placeholders), params)


def mark_ops(
    conn: sqlite3.Connection,
    op_ids: Sequence[str],
    state: str,
    *,
    reason: str | None = None,
) -> None:
    """Move ops to another state (after a push, a drop, or a rejection)."""
    if state not in OP_STATES:
        raise ValueError(f"unknown op state {state!r}; use one of {OP_STATES}")
    with write_transaction(conn):
        conn.executemany(
            "UPDATE journal SET state = ?, reason = COALESCE(?, reason)"
            " WHERE op_id = ?",
            ((state, reason, op_id) for op_id in op_ids),
        )
