"""Register writes of the SQLite backend: REST status calls, push and pull.

Every write of a register, from a REST call or a replica's op, goes through
:func:`write_register`, which applies last-write-wins by HLC, keeps the item's refs
in step, records the write in the register history and moves the register to the
end of the change feed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from localsync.crash_points import crash_point
from localsync.errors import BadRequest, Forbidden, NotFound
from localsync.hlc import Clock
from localsync.server.registers import (
    SeqConflict,
    hlc_time,
    is_newer,
    op_content_hash,
    register_change_data,
    register_key,
    stamp_incoming,
    unknown_item_reason,
    winner_json,
)
from localsync.server.sqlite_database import SQLiteDatabase
from localsync.server.sqlite_rows import (
    ENTITY_TABLES,
    dumps,
    is_tombstoned,
    load_json,
    save_item,
    touch,
)
from localsync.server.storage import JSON, PullPage, PushOp, PushOutcome, StatusResult
from localsync.statuses import check_status, has_ref, set_register


@dataclass(frozen=True)
class RegisterWrite:
    """One write of a register, before last-write-wins decides its outcome."""

    status: str | None
    hlc: str
    creator: str | None
    source: str
    user_email: str
    replica_id: str | None = None
    op_id: str | None = None
    restamped: bool = False


def load_register(
    connection: sqlite3.Connection, item_id: str, task_id: str
) -> JSON | None:
    row = connection.execute(
        "SELECT item_id, task_id, status, hlc, creator, timestamp, source, replica_id "
        "FROM registers WHERE item_id = ? AND task_id = ?",
        (item_id, task_id),
    ).fetchone()
    if row is None:
        return None
    return {
        "itemId": row["item_id"],
        "taskId": row["task_id"],
        "status": row["status"],
        "hlc": row["hlc"],
        "creator": row["creator"],
        "timestamp": row["timestamp"],
        "source": row["source"],
        "replicaId": row["replica_id"],
    }


def write_register(
    connection: sqlite3.Connection, item: JSON, task: JSON, write: RegisterWrite
) -> tuple[str, JSON | None]:
    """Apply a write when it is newer than the register; return outcome and winner."""
    current = load_register(connection, item["id"], task["id"])
    if not is_newer(write.hlc, current["hlc"] if current else None):
        record_history(connection, item["id"], task, write, outcome="superseded")
        return "superseded", current

    timestamp = hlc_time(write.hlc)
    connection.execute(
        "INSERT INTO registers (item_id, task_id, dataset_id, status, hlc, creator, "
        "timestamp, source, replica_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (item_id, task_id) DO UPDATE SET status = excluded.status, "
        "hlc = excluded.hlc, creator = excluded.creator, "
        "timestamp = excluded.timestamp, "
        "source = excluded.source, replica_id = excluded.replica_id",
        (
            item["id"],
            task["id"],
            task["datasetId"],
            write.status,
            write.hlc,
            write.creator,
            timestamp,
            write.source,
            write.replica_id,
        ),
    )
    set_register(
        item,
        task_id=task["id"],
        assignment_ids=task.get("assignmentIds") or [],
        status=write.status,
        creator=write.creator,
        timestamp=timestamp,
    )
    save_item(connection, item)
    touch(
        connection, task["datasetId"], "register", register_key(item["id"], task["id"])
    )
    record_history(connection, item["id"], task, write, outcome="applied")
    return "applied", load_register(connection, item["id"], task["id"])


def record_history(
    connection: sqlite3.Connection,
    item_id: str,
    task: JSON | None,
    write: RegisterWrite,
    *,
    outcome: str,
    reason: str | None = None,
    task_id: str | None = None,
    dataset_id: str | None = None,
) -> None:
    connection.execute(
        "INSERT INTO register_history (item_id, task_id, dataset_id, status, hlc, "
        "creator, timestamp, source, user_email, replica_id, op_id, outcome, reason, "
        "restamped, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            item_id,
            task["id"] if task else task_id,
            task["datasetId"] if task else dataset_id,
            write.status,
            write.hlc,
            write.creator,
            hlc_time(write.hlc),
            write.source,
            write.user_email,
            write.replica_id,
            write.op_id,
            outcome,
            reason,
            int(write.restamped),
            time.time_ns() // 1_000_000,
        ),
    )


def register_history(db: SQLiteDatabase, item_id: str, task_id: str) -> list[JSON]:
    with db.read() as connection:
        rows = connection.execute(
            "SELECT * FROM register_history WHERE item_id = ? AND task_id = ? "
            "ORDER BY id",
            (item_id, task_id),
        ).fetchall()
    return [
        {
            "itemId": row["item_id"],
            "taskId": row["task_id"],
            "status": row["status"],
            "hlc": row["hlc"],
            "creator": row["creator"],
            "timestamp": row["timestamp"],
            "source": row["source"],
            "user": row["user_email"],
            "replicaId": row["replica_id"],
            "opId": row["op_id"],
            "outcome": row["outcome"],
            "reason": row["reason"],
            "restamped": bool(row["restamped"]),
        }
        for row in rows
    ]


def set_statuses(
    db: SQLiteDatabase,
    task_id: str,
    item_ids: Iterable[str],
    status: str | None,
    *,
    user_email: str,
    assignment_id: str | None = None,
) -> list[StatusResult]:
    with db.write() as connection:
        task = load_json(connection, "task", task_id)
        if task is None:
            raise NotFound("404", f"Task {task_id!r} not found")
        if status is not None:
            status = check_status(task, status)
        clock = db.clock(connection)

        results = []
        for item_id in dict.fromkeys(item_ids):
            item = _item_in_task(connection, item_id, task, assignment_id)
            if item is None:
                continue
            last_status = _register_status(connection, item_id, task_id)
            write = RegisterWrite(
                status, str(clock.send()), user_email, "rest", user_email
            )
            outcome, winner = write_register(connection, item, task, write)
            results.append(
                StatusResult(
                    item_id=item_id,
                    status=winner["status"] if winner else None,
                    last_status=last_status,
                    hlc=write.hlc,
                    outcome=outcome,
                )
            )

        db.save_clock(connection, clock)
    return results


def _item_in_task(
    connection: sqlite3.Connection, item_id: str, task: JSON, assignment_id: str | None
) -> JSON | None:
    """Return the item when it is in the task (and assignment), else ``None``.

    Through an assignment the caller named one item, so a miss raises ``NotFound``.
    """
    item = load_json(connection, "item", item_id)
    in_task = (
        item is not None
        and item.get("datasetId") == task["datasetId"]
        and has_ref(item, task["id"])
    )
    if assignment_id is None:
        return item if in_task else None
    if item is None:
        raise NotFound("404", f"Item {item_id!r} not found")
    if not in_task or not has_ref(item, assignment_id):
        raise NotFound(
            "404", f"Item {item_id!r} is not in assignment {assignment_id!r}"
        )
    return item


def _register_status(
    connection: sqlite3.Connection, item_id: str, task_id: str
) -> str | None:
    register = load_register(connection, item_id, task_id)
    return register["status"] if register else None


def bind_replica(
    connection: sqlite3.Connection, replica_id: str, user_email: str
) -> None:
    """Bind a new replica id to the user, or check an old binding."""
    row = connection.execute(
        "SELECT user_email FROM replicas WHERE replica_id = ?", (replica_id,)
    ).fetchone()
    if row is None:
        connection.execute(
            "INSERT INTO replicas (replica_id, user_email, created_at) "
            "VALUES (?, ?, ?)",
            (replica_id, user_email, time.time_ns() // 1_000_000),
        )
    elif row[0] != user_email:
        raise Forbidden(
            "403",
            f"Replica {replica_id!r} belongs to another user; a replica pushes only "
            "with its first user's token, so clone a new replica for this user",
        )


def push(
    db: SQLiteDatabase,
    *,
    replica_id: str,
    user_email: str,
    dataset_id: str,
    ops: list[PushOp],
) -> PushOutcome:
    with db.write() as connection:
        bind_replica(connection, replica_id, user_email)
        clock = db.clock(connection)

        results = []
        for index, op in enumerate(ops):
            if index == len(ops) // 2:
                crash_point("server-push-applying")
            digest = op_content_hash(op)
            stored = connection.execute(
                "SELECT content_hash, result FROM pushed_ops "
                "WHERE replica_id = ? AND seq = ?",
                (replica_id, op.seq),
            ).fetchone()
            if stored is not None:
                if stored["content_hash"] != digest:
                    raise SeqConflict(replica_id, op.seq)
                results.append(json.loads(stored["result"]))
                continue
            result = _apply_op(
                connection, clock, op, dataset_id, user_email, replica_id
            )
            connection.execute(
                "INSERT INTO pushed_ops (replica_id, seq, op_id, content_hash, result) "
                "VALUES (?, ?, ?, ?, ?)",
                (replica_id, op.seq, op.op_id, digest, dumps(result)),
            )
            results.append(result)

        db.save_clock(connection, clock)
        return PushOutcome(results=results, server_hlc=str(clock.last))


def _apply_op(
    connection: sqlite3.Connection,
    clock: Clock,
    op: PushOp,
    dataset_id: str,
    user_email: str,
    replica_id: str,
) -> JSON:
    hlc, restamped = stamp_incoming(clock, op.hlc)
    write = RegisterWrite(
        status=op.status,
        hlc=hlc,
        creator=op.creator or user_email,
        source="replica",
        user_email=user_email,
        replica_id=replica_id,
        op_id=op.op_id,
        restamped=restamped,
    )
    item = load_json(connection, "item", op.item_id)
    task = load_json(connection, "task", op.task_id)

    reason = _rejection(connection, op, item, task, dataset_id)
    if reason is not None:
        # The current value is shown only for a register of this dataset, and an
        # op on another dataset's item stays out of that item's history.
        same_dataset = item is not None and item.get("datasetId") == dataset_id
        if item is None or same_dataset:
            record_history(
                connection,
                op.item_id,
                None,
                write,
                outcome="rejected",
                reason=reason,
                task_id=op.task_id,
                dataset_id=dataset_id,
            )
        current = (
            load_register(connection, op.item_id, op.task_id) if same_dataset else None
        )
        outcome, winner = "rejected", current
    else:
        assert item is not None and task is not None
        outcome, winner = write_register(connection, item, task, write)

    return {
        "opId": op.op_id,
        "seq": op.seq,
        "outcome": outcome,
        "reason": reason,
        "hlc": hlc,
        "restamped": restamped,
        "winner": winner_json(winner),
    }


def _rejection(
    connection: sqlite3.Connection,
    op: PushOp,
    item: JSON | None,
    task: JSON | None,
    dataset_id: str,
) -> str | None:
    """Return why an op can never apply, or ``None`` when it can."""
    if item is None:
        if is_tombstoned(connection, "item", op.item_id):
            return f"Item {op.item_id!r} was deleted"
        return unknown_item_reason(op.item_id, dataset_id)
    if item.get("datasetId") != dataset_id:
        return unknown_item_reason(op.item_id, dataset_id)
    if task is None:
        return f"Task {op.task_id!r} not found"
    if task.get("datasetId") != dataset_id:
        return f"Task {op.task_id!r} belongs to another dataset than {dataset_id!r}"
    if not has_ref(item, op.task_id):
        return f"Item {op.item_id!r} is not in task {op.task_id!r}"
    if op.status is not None:
        try:
            check_status(task, op.status)
        except BadRequest as exc:
            return exc.message
    return None


def pull(db: SQLiteDatabase, dataset_id: str, *, cursor: int, limit: int) -> PullPage:
    # One writer at a time assigns seqs and commits in the same order, so a
    # snapshot never lacks a seq below one it contains, and the cursor is safe.
    with db.read() as connection:
        rows = connection.execute(
            "SELECT seq, kind, entity_id, deleted FROM changes "
            "WHERE dataset_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (dataset_id, cursor, limit + 1),
        ).fetchall()
        has_more = len(rows) > limit
        changes = [_change(connection, row) for row in rows[:limit]]
        server_hlc = db.last_hlc(connection)
    next_cursor = changes[-1]["seq"] if changes else cursor
    return PullPage(
        changes=changes, cursor=next_cursor, has_more=has_more, server_hlc=server_hlc
    )


def _change(connection: sqlite3.Connection, row: sqlite3.Row) -> JSON:
    kind, entity_id, deleted = row["kind"], row["entity_id"], bool(row["deleted"])
    data: JSON | None = None
    if not deleted:
        if kind == "register":
            item_id, _, task_id = entity_id.partition(":")
            register = load_register(connection, item_id, task_id)
            data = register_change_data(register) if register else None
        elif kind in ENTITY_TABLES:
            data = load_json(connection, kind, entity_id)
    return {
        "seq": row["seq"],
        "kind": kind,
        "id": entity_id,
        "deleted": deleted,
        "data": data,
    }
