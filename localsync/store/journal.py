"""The journal: appending status ops and applying them to the local view.

One call of :func:`append_status_ops` journals one op per target item and rewrites
those items' refs in a single transaction. A first query describes each target's
refs, then ``json_set`` on the refs' concrete positions rewrites the items, one
``executemany`` per position pattern, so no item goes through Python's JSON.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from localsync.hlc import Clock, Timestamp
from localsync.statuses import iso_timestamp
from localsync.store.connection import write_transaction
from localsync.store.settings import get_setting, set_setting

OP_STATES = ("pending", "applied", "superseded", "rejected", "dropped")

# Per target: the item's rowid (NULL when the item is missing) and a description of
# its refs, one entry per ref: [position, is the task's ref, is the task's or an
# assignment's ref, JSON type of its metadata, its metadata.status]. The targets
# arrive sorted by id, so the lookups walk the id index in order.
_DESCRIBE_REFS_SQL = """
SELECT t.value, i.rowid, (
    SELECT json_group_array(json_array(
               r.key,
               json_extract(r.value, '$.id') = :task_id,
               json_extract(r.value, '$.id') IN ({ref_ids}),
               json_type(r.value, '$.metadata'),
               json_extract(r.value, '$.metadata.status')))
      FROM json_each(i.json, '$.metadata.system.refs') AS r)
  FROM json_each(:item_ids) AS t LEFT JOIN items AS i ON i.id = t.value
"""

# An item's annotationStatus after the call: the distinct statuses of the refs the
# call leaves alone, plus the new status, in SQLite's ORDER BY order. It runs once
# per distinct refs description, not once per item.
_ANNOTATION_STATUS_SQL = """
SELECT json_group_array(status) FROM (
    SELECT DISTINCT status FROM (
        SELECT json_extract(d.value, '$[4]') AS status
          FROM json_each(:refs) AS d
         WHERE json_extract(d.value, '$[2]') IS NOT 1
        UNION ALL SELECT :status)
     WHERE status IS NOT NULL
     ORDER BY status)
"""

_REFS_PATH = "$.metadata.system.refs"
_STAMP_KEYS = ("status", "creator", "timestamp")
# UUIDv7: 48 bits of Unix time in ms, version 7, 12 bits, variant 0b10, 62 bits.
_OP_ID_COUNTER_BITS = 74
_LOW_BITS = 62


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


@dataclass(frozen=True)
class _RefsPlan:
    """A status call's plan for the items that share one refs description.

    ``current`` is the status on the task's first ref. ``rewrites`` lists, per ref
    of the task or one of its assignments, its position and whether its metadata
    is a JSON object. ``annotation_status`` is the new annotationStatus, as JSON.
    """

    in_task: bool
    current: Any = None
    rewrites: tuple[tuple[int, bool], ...] = ()
    annotation_status: str = "[]"


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
    decide whether that is an error. The result lists items in the order given,
    but the ops are journaled in item id order, which keeps the journal's
    ``(item_id, task_id, hlc)`` index inserts close together.
    """
    result = StatusResult(task_id=task_id, status=status)
    targets = list(dict.fromkeys(item_ids))
    ref_ids = [task_id, *assignment_ids]
    with write_transaction(conn):
        described = _describe_refs(conn, targets, task_id, ref_ids)
        planner = _RefsPlanner(conn, status)
        updates = _classify(targets, described, planner, result)
        if updates:
            _journal(
                conn,
                result,
                sorted(updates),
                replica_id=replica_id,
                task_id=task_id,
                status=status,
                creator=creator,
                origin_op_id=origin_op_id,
            )
            _rewrite_refs(conn, updates.values(), status, creator)
    return result


def _describe_refs(
    conn: sqlite3.Connection,
    targets: list[str],
    task_id: str,
    ref_ids: list[str],
) -> dict[str, tuple[int | None, str]]:
    """Return each target's rowid (``None`` when missing) and refs description."""
    params: dict[str, str] = {
        f"ref{number}": ref_id for number, ref_id in enumerate(ref_ids)
    }
    params.update(task_id=task_id, item_ids=json.dumps(sorted(targets, key=str)))
    placeholders = ", ".join(f":ref{number}" for number in range(len(ref_ids)))
    rows = conn.execute(_DESCRIBE_REFS_SQL.format(ref_ids=placeholders), params)
    return {item_id: (rowid, refs) for item_id, rowid, refs in rows}


class _RefsPlanner:
    """Turn refs descriptions into plans, parsing each distinct description once.

    Items with the same ref positions and statuses share a description, so for a
    typical task this costs a dictionary lookup per item.
    """

    def __init__(self, conn: sqlite3.Connection, status: str | None) -> None:
        self._conn = conn
        self._status = status
        self._plans: dict[str, _RefsPlan] = {}

    def plan(self, description: str) -> _RefsPlan:
        plan = self._plans.get(description)
        if plan is None:
            plan = self._plans[description] = self._make_plan(description)
        return plan

    def _make_plan(self, description: str) -> _RefsPlan:
        refs = json.loads(description)
        # json_each over a refs object yields member names: such an item has no
        # list of refs, so it is in no task.
        task_refs = [ref for ref in refs if ref[1] == 1 and isinstance(ref[0], int)]
        if not task_refs:
            return _RefsPlan(in_task=False)
        rewrites = tuple(
            (position, metadata_type == "object")
            for position, _, is_target, metadata_type, _ in refs
            if is_target == 1
        )
        (annotation_status,) = self._conn.execute(
            _ANNOTATION_STATUS_SQL, {"refs": description, "status": self._status}
        ).fetchone()
        return _RefsPlan(
            in_task=True,
            current=task_refs[0][4],
            rewrites=rewrites,
            annotation_status=annotation_status,
        )


def _classify(
    targets: list[str],
    described: dict[str, tuple[int | None, str]],
    planner: _RefsPlanner,
    result: StatusResult,
) -> dict[str, tuple[int, _RefsPlan]]:
    """Sort targets into changed, re-asserted and skipped, and return the rewrites."""
    updates = {}
    for item_id in targets:
        rowid, description = described.get(item_id, (None, "[]"))
        if rowid is None:
            result.skipped[item_id] = "item not found"
            continue
        plan = planner.plan(description)
        if not plan.in_task:
            result.skipped[item_id] = f"item is not in task {result.task_id}"
            continue
        updates[item_id] = (rowid, plan)
        unchanged = plan.current == result.status
        (result.reasserted if unchanged else result.changed).append(item_id)
    return updates


def new_op_ids(count: int) -> list[str]:
    """Return ``count`` new op ids in ascending order, as 32 hex digits of a UUIDv7.

    The first 12 digits are the Unix time in ms, so later ops get larger ids and
    the journal's ``op_id`` index grows at its end, not at random places. The ids
    of one call count up from a random 74-bit start, which keeps them unique.
    """
    wall_ms = time.time_ns() // 1_000_000
    start = secrets.randbelow(2**_OP_ID_COUNTER_BITS - count)
    low_mask = 2**_LOW_BITS - 1
    prefix = (wall_ms << 80) | (0x7 << 76) | (0b10 << _LOW_BITS)
    return [
        f"{prefix | ((counter >> _LOW_BITS) << 64) | (counter & low_mask):032x}"
        for counter in range(start, start + count)
    ]


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
    op_ids = new_op_ids(len(item_ids))
    hlcs = clock.send_many(len(item_ids))
    result.op_ids.extend(op_ids)
    rows = [
        (
            op_id,
            replica_id,
            seq + offset,
            item_id,
            task_id,
            status,
            hlc,
            creator,
            origin_op_id,
            now_ms,
        )
        for offset, (op_id, item_id, hlc) in enumerate(
            zip(op_ids, item_ids, hlcs, strict=True)
        )
    ]
    conn.executemany(
        "INSERT INTO journal (op_id, replica_id, seq, item_id, task_id, status, hlc,"
        " creator, origin_op_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    save_clock(conn, clock)


def _rewrite_refs(
    conn: sqlite3.Connection,
    updates: Iterable[tuple[int, _RefsPlan]],
    status: str | None,
    creator: str | None,
) -> None:
    """Rewrite the planned refs, one ``executemany`` per position pattern.

    Each pattern's items are updated in rowid order, so the writes walk the items
    table from start to end and change each page in one visit.
    """
    by_pattern: dict[tuple[tuple[int, bool], ...], list[tuple[int, str]]] = {}
    for rowid, plan in updates:
        by_pattern.setdefault(plan.rewrites, []).append((rowid, plan.annotation_status))
    timestamp = iso_timestamp()
    max_arguments = conn.getlimit(sqlite3.SQLITE_LIMIT_FUNCTION_ARG)
    for rewrites, rows in by_pattern.items():
        rows.sort()
        conn.executemany(
            _update_sql(rewrites, clearing=status is None, max_arguments=max_arguments),
            (
                (status, creator, timestamp, annotation_status, rowid)
                for rowid, annotation_status in rows
            ),
        )


def _update_sql(
    rewrites: tuple[tuple[int, bool], ...], *, clearing: bool, max_arguments: int
) -> str:
    """Return the UPDATE statement for one pattern of ref positions.

    Its parameters ?1 to ?5 are the status, creator, timestamp, annotationStatus
    as JSON, and the item's rowid. Setting writes the three stamp keys into a
    metadata object, or replaces any other metadata with a new object. Clearing
    removes the keys from a metadata object and leaves other metadata as it is.
    """
    paths = [f"'{_REFS_PATH}[{position:d}].metadata" for position, _ in rewrites]
    removed: list[str] = []
    pairs: list[str] = []
    for path, (_, is_object) in zip(paths, rewrites, strict=True):
        if clearing and is_object:
            removed.extend(f"{path}.{key}'" for key in _STAMP_KEYS)
        elif not clearing:
            pairs.extend(_stamp_arguments(path, is_object))
    pairs += ["'$.metadata.system.annotationStatus'", "json(?4)"]
    document = _nested_call("json_remove", "json", removed, max_arguments)
    document = _nested_call("json_set", document, pairs, max_arguments)
    return f"UPDATE items SET json = {document} WHERE rowid = ?5"


def _stamp_arguments(path: str, is_object: bool) -> list[str]:
    """Return the json_set path and value arguments that stamp one ref."""
    if is_object:
        return [
            argument
            for number, key in enumerate(_STAMP_KEYS, start=1)
            for argument in (f"{path}.{key}'", f"?{number}")
        ]
    return [f"{path}'", "json_object('status', ?1, 'creator', ?2, 'timestamp', ?3)"]


def _nested_call(
    function: str, document: str, arguments: list[str], max_arguments: int
) -> str:
    """Return ``function(document, arguments...)`` as SQL, nested into several calls
    when SQLite's limit on function arguments is too low for one.

    Each call takes an even number of arguments after the document, so no json_set
    path is parted from its value.
    """
    per_call = (max_arguments - 1) // 2 * 2
    for start in range(0, len(arguments), per_call):
        chunk = ", ".join(arguments[start : start + per_call])
        document = f"{function}({document}, {chunk})"
    return document


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
