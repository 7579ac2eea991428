"""Register writes of the SQLite backend: REST status calls, push and pull.

A write transaction loads what a batch of register writes reads with one query
per table, lets :class:`~localsync.server.batches.RegisterBatch` decide the writes
in memory (last-write-wins by HLC, refs kept in step, history recorded, feed rows
moved to the end), and writes the result with one ``executemany`` per table.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable

from localsync.errors import Forbidden, NotFound
from localsync.server.batches import (
    HISTORY_COLUMNS,
    REGISTER_FIELDS_DOCUMENT,
    NewPushedOp,
    RegisterBatch,
    StoredOp,
    check_task_status,
    decide_push,
    decide_statuses,
)
from localsync.server.registers import (
    FeedRow,
    RegisterKey,
    change_json,
    document_ids,
    history_json,
    register_json,
    scan_page,
)
from localsync.server.sqlite_database import SQLiteDatabase
from localsync.server.sqlite_rows import (
    ENTITY_TABLES,
    dumps,
    load_json,
    load_many,
    load_register_views,
    note_array_paths,
    save_register_fields,
    tombstoned,
)
from localsync.server.storage import JSON, PullPage, PushOp, PushOutcome, StatusResult

_REGISTER_COLUMNS = (
    "item_id, task_id, dataset_id, status, hlc, creator, timestamp, source, replica_id"
)
_REGISTER_FIELDS = tuple(_REGISTER_COLUMNS.split(", "))

_UPSERT_REGISTER_SQL = (
    f"INSERT INTO registers ({_REGISTER_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (item_id, task_id) DO UPDATE SET status = excluded.status, "
    "hlc = excluded.hlc, creator = excluded.creator, "
    "timestamp = excluded.timestamp, "
    "source = excluded.source, replica_id = excluded.replica_id"
)
_INSERT_HISTORY_SQL = (
    f"INSERT INTO register_history ({', '.join(HISTORY_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in HISTORY_COLUMNS)})"
)


def load_registers(
    connection: sqlite3.Connection, keys: Iterable[RegisterKey]
) -> dict[RegisterKey, JSON]:
    """Return the stored registers among ``keys``, by ``(item_id, task_id)``."""
    pairs = sorted(set(keys))
    if not pairs:
        return {}
    rows = connection.execute(
        f"SELECT {_REGISTER_COLUMNS} FROM registers "
        "WHERE (item_id, task_id) IN (SELECT json_extract(value, '$[0]'), "
        "json_extract(value, '$[1]') FROM json_each(?))",
        (json.dumps(pairs),),
    )
    return {(row["item_id"], row["task_id"]): register_json(row) for row in rows}


def load_register(
    connection: sqlite3.Connection, item_id: str, task_id: str
) -> JSON | None:
    return load_registers(connection, [(item_id, task_id)]).get((item_id, task_id))


def write_batch(connection: sqlite3.Connection, batch: RegisterBatch) -> None:
    """Write what ``batch`` queued: registers, items, feed rows and history rows.

    A register write changes only the item's refs and annotationStatus, so only
    those fields are written, and the catalog gets their array paths instead of
    each item's paths.
    """
    register_rows = batch.changed_register_rows()
    connection.executemany(
        _UPSERT_REGISTER_SQL,
        [tuple(row[field] for field in _REGISTER_FIELDS) for row in register_rows],
    )
    for dataset_id in sorted(batch.changed_datasets()):
        note_array_paths(connection, dataset_id, "item", REGISTER_FIELDS_DOCUMENT)
    save_register_fields(connection, batch.changed_items.values())
    # REPLACE gives each row a new seq in statement order, so the feed ends with
    # the registers in the order of their last write.
    connection.executemany(
        "REPLACE INTO changes (dataset_id, kind, entity_id, deleted) "
        "VALUES (?, 'register', ?, 0)",
        list(batch.feed),
    )
    connection.executemany(
        _INSERT_HISTORY_SQL,
        [
            tuple(_history_value(row, column) for column in HISTORY_COLUMNS)
            for row in batch.history
        ],
    )


def _history_value(row: JSON, column: str) -> object:
    value = row[column]
    return int(value) if column == "restamped" else value


def register_history(db: SQLiteDatabase, item_id: str, task_id: str) -> list[JSON]:
    with db.read() as connection:
        rows = connection.execute(
            "SELECT * FROM register_history WHERE item_id = ? AND task_id = ? "
            "ORDER BY id",
            (item_id, task_id),
        ).fetchall()
    return [history_json(row) for row in rows]


# REST status calls.


def set_statuses(
    db: SQLiteDatabase,
    task_id: str,
    item_ids: Iterable[str],
    status: str | None,
    *,
    user_email: str,
    assignment_id: str | None = None,
) -> list[StatusResult]:
    ids = list(dict.fromkeys(item_ids))
    with db.write() as connection:
        task = load_json(connection, "task", task_id)
        if task is None:
            raise NotFound("404", f"Task {task_id!r} not found")
        checked = check_task_status(task, status)
        batch = RegisterBatch(
            items=load_register_views(connection, ids),
            tasks={task_id: task},
            registers=load_registers(
                connection, [(item_id, task_id) for item_id in ids]
            ),
        )
        clock = db.clock(connection)

        results = decide_statuses(
            batch,
            clock,
            task,
            ids,
            checked,
            user_email=user_email,
            assignment_id=assignment_id,
        )

        write_batch(connection, batch)
        db.save_clock(connection, clock)
    return results


# Push.


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
        stored = _stored_ops(connection, replica_id, [op.seq for op in ops])
        fresh = [op for op in ops if op.seq not in stored]
        batch = _push_batch(connection, fresh)
        clock = db.clock(connection)

        results, new_rows = decide_push(
            batch,
            clock,
            ops,
            stored,
            dataset_id=dataset_id,
            user_email=user_email,
            replica_id=replica_id,
        )

        write_batch(connection, batch)
        _store_ops(connection, replica_id, new_rows)
        db.save_clock(connection, clock)
        return PushOutcome(results=results, server_hlc=str(clock.last))


def _push_batch(connection: sqlite3.Connection, ops: list[PushOp]) -> RegisterBatch:
    """Load the items, tasks, registers and item tombstones the ops read."""
    items = load_register_views(connection, [op.item_id for op in ops])
    missing = {op.item_id for op in ops} - items.keys()
    return RegisterBatch(
        items=items,
        tasks=load_many(connection, "task", [op.task_id for op in ops]),
        registers=load_registers(connection, [(op.item_id, op.task_id) for op in ops]),
        deleted_items=tombstoned(connection, "item", missing),
    )


def _stored_ops(
    connection: sqlite3.Connection, replica_id: str, seqs: list[int]
) -> dict[int, StoredOp]:
    rows = connection.execute(
        "SELECT seq, content_hash, result FROM pushed_ops "
        "WHERE replica_id = ? AND seq IN (SELECT value FROM json_each(?))",
        (replica_id, json.dumps(sorted(set(seqs)))),
    )
    return {
        row["seq"]: StoredOp(row["content_hash"], json.loads(row["result"]))
        for row in rows
    }


def _store_ops(
    connection: sqlite3.Connection, replica_id: str, rows: list[NewPushedOp]
) -> None:
    connection.executemany(
        "INSERT INTO pushed_ops (replica_id, seq, op_id, content_hash, result) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            (replica_id, row.seq, row.op_id, row.content_hash, dumps(row.result))
            for row in rows
        ],
    )


# Pull.


def pull(
    db: SQLiteDatabase,
    dataset_id: str,
    *,
    cursor: int,
    limit: int,
    replica_id: str | None = None,
) -> PullPage:
    # One writer at a time assigns seqs and commits in the same order, so a
    # snapshot never lacks a seq below one it contains, and the cursor is safe.
    with db.read() as connection:

        def read_rows(after: int, count: int) -> list[FeedRow]:
            return _feed_rows(connection, dataset_id, after, count)

        scan = scan_page(read_rows, cursor=cursor, limit=limit, replica_id=replica_id)
        documents = _entity_documents(connection, scan.rows)
        server_hlc = db.last_hlc(connection)
        replica_seq = None
        if replica_id is not None:
            row = connection.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM pushed_ops WHERE replica_id = ?",
                (replica_id,),
            ).fetchone()
            replica_seq = int(row[0])

    changes = [change_json(row, documents) for row in scan.rows]
    return PullPage(
        changes=changes,
        cursor=scan.cursor,
        has_more=scan.has_more,
        server_hlc=server_hlc,
        replica_seq=replica_seq,
    )


def _feed_rows(
    connection: sqlite3.Connection, dataset_id: str, cursor: int, count: int
) -> list[FeedRow]:
    """Return up to ``count`` feed rows after ``cursor``, registers joined in."""
    rows = connection.execute(
        "SELECT c.seq, c.kind, c.entity_id, c.deleted, "
        f"{', '.join(f'r.{field}' for field in _REGISTER_FIELDS)} "
        "FROM changes AS c LEFT JOIN registers AS r "
        "ON c.kind = 'register' AND c.deleted = 0 "
        "AND r.item_id = substr(c.entity_id, 1, instr(c.entity_id, ':') - 1) "
        "AND r.task_id = substr(c.entity_id, instr(c.entity_id, ':') + 1) "
        "WHERE c.dataset_id = ? AND c.seq > ? ORDER BY c.seq LIMIT ?",
        (dataset_id, cursor, count),
    )
    return [
        FeedRow(
            seq=row["seq"],
            kind=row["kind"],
            entity_id=row["entity_id"],
            deleted=bool(row["deleted"]),
            register=register_json(row) if row["item_id"] is not None else None,
        )
        for row in rows
    ]


def _entity_documents(
    connection: sqlite3.Connection, rows: list[FeedRow]
) -> dict[tuple[str, str], JSON]:
    documents: dict[tuple[str, str], JSON] = {}
    for kind, ids in document_ids(rows).items():
        if kind in ENTITY_TABLES:
            for entity_id, document in load_many(connection, kind, ids).items():
                documents[(kind, entity_id)] = document
    return documents
