"""Register writes of the PostgreSQL backend: REST status calls, push and pull.

A transaction that writes registers first locks the items involved (in id order)
and loads their registers, so concurrent writers of one register take turns and
each compares its HLC with the value the previous one committed. The writes are
then decided in memory by :class:`~localsync.server.batches.RegisterBatch`,
last-write-wins by HLC, and written with one statement per table.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from psycopg.types.json import Jsonb

from localsync.errors import Forbidden, NotFound
from localsync.hlc import Clock, Timestamp
from localsync.server import batches
from localsync.server.batches import (
    HISTORY_COLUMNS,
    REGISTER_FIELDS_DOCUMENT,
    NewPushedOp,
    StoredOp,
    check_task_status,
    decide_push,
    decide_statuses,
)
from localsync.server.postgres_database import (
    PostgresDatabase,
    RetryTransaction,
    Transaction,
)
from localsync.server.postgres_rows import (
    ENTITY_TABLES,
    Connection,
    load_json,
    load_many,
    lock_register_views,
    note_array_paths,
    save_register_fields,
    tombstoned,
)
from localsync.server.registers import (
    FeedRow,
    RegisterKey,
    change_json,
    document_ids,
    history_json,
    register_json,
    scan_page,
    split_register_key,
)
from localsync.server.registers import RegisterWrite as RegisterWrite
from localsync.server.storage import JSON, PullPage, PushOp, PushOutcome, StatusResult

_REGISTER_COLUMNS = (
    "item_id, task_id, dataset_id, status, hlc, creator, timestamp, source, replica_id"
)
_HISTORY_COLUMNS = ", ".join(HISTORY_COLUMNS)


def load_registers(
    connection: Connection, keys: Iterable[RegisterKey]
) -> dict[RegisterKey, JSON]:
    pairs = sorted(set(keys))
    if not pairs:
        return {}
    rows = connection.execute(
        f"SELECT {_REGISTER_COLUMNS} FROM registers "
        "WHERE (item_id, task_id) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([pair[0] for pair in pairs], [pair[1] for pair in pairs]),
    )
    return {(row["item_id"], row["task_id"]): register_json(row) for row in rows}


def load_register(connection: Connection, item_id: str, task_id: str) -> JSON | None:
    return load_registers(connection, [(item_id, task_id)]).get((item_id, task_id))


class RegisterBatch(batches.RegisterBatch):
    """A register batch of one write transaction, written by :meth:`flush`.

    Creating a batch locks the items it names, so the registers it loads stay
    current until the transaction ends. Callers set ``tasks`` and
    ``deleted_items`` when the writes need them.
    """

    def __init__(
        self,
        transaction: Transaction,
        db: PostgresDatabase,
        item_ids: Iterable[str],
        register_keys: Iterable[RegisterKey],
    ) -> None:
        super().__init__(
            items=lock_register_views(transaction, item_ids),
            tasks={},
            registers=load_registers(transaction.connection, register_keys),
        )
        self.transaction = transaction
        self.db = db

    def flush(self) -> None:
        """Write the queued registers, items, feed moves and history rows.

        Rows travel as one JSON array each, which psycopg sends without the
        per-element escaping that array parameters take. A register write
        changes only the item's refs and annotationStatus, so only those fields
        are written, and the catalog gets their array paths instead of each
        item's paths.
        """
        register_rows = self.changed_register_rows()
        if register_rows:
            self.transaction.execute(
                f"INSERT INTO registers ({_REGISTER_COLUMNS}) "
                f"SELECT {_REGISTER_COLUMNS} "
                "FROM jsonb_populate_recordset(NULL::registers, %s) "
                "ON CONFLICT (item_id, task_id) DO UPDATE SET "
                "status = excluded.status, hlc = excluded.hlc, "
                "creator = excluded.creator, timestamp = excluded.timestamp, "
                "source = excluded.source, replica_id = excluded.replica_id",
                (Jsonb(register_rows),),
            )
        for dataset_id in sorted(self.changed_datasets()):
            note_array_paths(
                self.transaction, self.db, dataset_id, "item", REGISTER_FIELDS_DOCUMENT
            )
        save_register_fields(self.transaction, self.changed_items.values())
        for dataset_id, entity_id in self.feed:
            self.transaction.touch(dataset_id, "register", entity_id)
        if self.history:
            self.transaction.execute(
                f"INSERT INTO register_history ({_HISTORY_COLUMNS}) "
                f"SELECT {_HISTORY_COLUMNS} FROM jsonb_array_elements(%s) "
                "WITH ORDINALITY AS rows (document, position) CROSS JOIN LATERAL "
                "jsonb_populate_record(NULL::register_history, rows.document) "
                "ORDER BY rows.position",
                (Jsonb(self.history),),
            )
        self.clear_queue()


def register_history(db: PostgresDatabase, item_id: str, task_id: str) -> list[JSON]:
    with db.read() as connection:
        rows = connection.execute(
            "SELECT * FROM register_history WHERE item_id = %s AND task_id = %s "
            "ORDER BY id",
            (item_id, task_id),
        ).fetchall()
    return [history_json(row) for row in rows]


# REST status calls.


def set_statuses(
    db: PostgresDatabase,
    task_id: str,
    item_ids: Iterable[str],
    status: str | None,
    *,
    user_email: str,
    assignment_id: str | None = None,
) -> list[StatusResult]:
    ids = list(dict.fromkeys(item_ids))

    def work(transaction: Transaction) -> list[StatusResult]:
        task = load_json(transaction.connection, "task", task_id)
        if task is None:
            raise NotFound("404", f"Task {task_id!r} not found")
        checked = check_task_status(task, status)
        batch = RegisterBatch(
            transaction, db, ids, [(item_id, task_id) for item_id in ids]
        )
        batch.tasks = {task_id: task}

        def stamp_and_write(clock: Clock) -> list[StatusResult]:
            return decide_statuses(
                batch,
                clock,
                task,
                ids,
                checked,
                user_email=user_email,
                assignment_id=assignment_id,
            )

        results = db.with_clock(stamp_and_write)
        batch.flush()
        return results

    return db.write(work)


# Push.


def bind_replica(transaction: Transaction, replica_id: str, user_email: str) -> None:
    """Bind a new replica id to the user, or check an old binding."""
    transaction.execute(
        "INSERT INTO replicas (replica_id, user_email, created_at) "
        "VALUES (%s, %s, %s) ON CONFLICT (replica_id) DO NOTHING",
        (replica_id, user_email, time.time_ns() // 1_000_000),
    )
    row = transaction.execute(
        "SELECT user_email FROM replicas WHERE replica_id = %s", (replica_id,)
    ).fetchone()
    if row is None or row["user_email"] != user_email:
        raise Forbidden(
            "403",
            f"Replica {replica_id!r} belongs to another user; a replica pushes only "
            "with its first user's token, so clone a new replica for this user",
        )


def push(
    db: PostgresDatabase,
    *,
    replica_id: str,
    user_email: str,
    dataset_id: str,
    ops: list[PushOp],
) -> PushOutcome:
    def work(transaction: Transaction) -> PushOutcome:
        bind_replica(transaction, replica_id, user_email)
        # Items are locked before the record of pushed ops is read, so a
        # concurrent push of the same ops is seen once it has committed.
        batch = RegisterBatch(
            transaction,
            db,
            [op.item_id for op in ops],
            [(op.item_id, op.task_id) for op in ops],
        )
        stored = _stored_ops(transaction, replica_id, [op.seq for op in ops])
        fresh = [op for op in ops if op.seq not in stored]
        connection = transaction.connection
        batch.tasks = load_many(connection, "task", [op.task_id for op in fresh])
        missing = {op.item_id for op in fresh} - batch.items.keys()
        batch.deleted_items = tombstoned(connection, "item", missing)

        def apply_all(clock: Clock) -> tuple[list[JSON], list[NewPushedOp], str]:
            results, new_rows = decide_push(
                batch,
                clock,
                ops,
                stored,
                dataset_id=dataset_id,
                user_email=user_email,
                replica_id=replica_id,
            )
            return results, new_rows, str(clock.last)

        results, new_rows, server_hlc = db.with_clock(apply_all)
        batch.flush()
        _store_ops(transaction, replica_id, new_rows)
        return PushOutcome(results=results, server_hlc=server_hlc)

    return db.write(work)


def _stored_ops(
    transaction: Transaction, replica_id: str, seqs: list[int]
) -> dict[int, StoredOp]:
    rows = transaction.execute(
        "SELECT seq, content_hash, result FROM pushed_ops "
        "WHERE replica_id = %s AND seq = ANY(%s)",
        (replica_id, sorted(set(seqs))),
    )
    return {row["seq"]: StoredOp(row["content_hash"], row["result"]) for row in rows}


def _store_ops(
    transaction: Transaction, replica_id: str, rows: list[NewPushedOp]
) -> None:
    """Record pushed ops; rerun the push if a concurrent one recorded them first.

    Two requests with the same ops can both miss the record and apply them; the
    second insert then waits for the first transaction and finds its rows, and the
    rerun returns their stored results without applying anything twice.
    """
    if not rows:
        return
    documents = [
        {
            "seq": row.seq,
            "opId": row.op_id,
            "hash": row.content_hash,
            "result": row.result,
        }
        for row in rows
    ]
    inserted = transaction.execute(
        "INSERT INTO pushed_ops (replica_id, seq, op_id, content_hash, result) "
        "SELECT %s, (op ->> 'seq')::bigint, op ->> 'opId', op ->> 'hash', "
        "op -> 'result' FROM jsonb_array_elements(%s) AS rows (op) "
        "ON CONFLICT (replica_id, seq) DO NOTHING RETURNING seq",
        (replica_id, Jsonb(documents)),
    ).fetchall()
    if len(inserted) != len(rows):
        raise RetryTransaction(
            f"replica {replica_id} pushed the same seqs in two requests at once"
        )


# Pull.


def pull(
    db: PostgresDatabase,
    dataset_id: str,
    *,
    cursor: int,
    limit: int,
    replica_id: str | None = None,
) -> PullPage:
    """Return the changes after ``cursor`` and the cursor to send next.

    Feed rows of one dataset become visible in seq order (see
    :meth:`Transaction.write_feed`), so no change that commits later can have a
    seq below the last row read, and that seq is a safe cursor.
    """
    with db.read() as connection:

        def read_rows(after: int, count: int) -> list[FeedRow]:
            return _feed_rows(connection, dataset_id, after, count)

        scan = scan_page(read_rows, cursor=cursor, limit=limit, replica_id=replica_id)
        documents = _entity_documents(connection, scan.rows)
        replica_seq = None
        if replica_id is not None:
            row = connection.execute(
                "SELECT COALESCE(MAX(seq), 0) AS seq FROM pushed_ops "
                "WHERE replica_id = %s",
                (replica_id,),
            ).fetchone()
            replica_seq = int(row["seq"])
    changes = [change_json(row, documents) for row in scan.rows]

    register_hlcs = [
        Timestamp.parse(row.register["hlc"])
        for row in scan.consumed
        if row.register is not None
    ]

    def receive_all(clock: Clock) -> str:
        # The server's HLC in the response sorts after every HLC the page read,
        # including those written through other server processes.
        for hlc in register_hlcs:
            clock.receive(hlc)
        return str(clock.last)

    server_hlc = db.with_clock(receive_all)
    return PullPage(
        changes=changes,
        cursor=scan.cursor,
        has_more=scan.has_more,
        server_hlc=server_hlc,
        replica_seq=replica_seq,
    )


def _feed_rows(
    connection: Connection, dataset_id: str, cursor: int, count: int
) -> list[FeedRow]:
    """Return up to ``count`` feed rows after ``cursor``, with their registers."""
    rows = connection.execute(
        "SELECT seq, kind, entity_id, deleted FROM changes "
        "WHERE dataset_id = %s AND seq > %s ORDER BY seq LIMIT %s",
        (dataset_id, cursor, count),
    ).fetchall()
    registers = load_registers(
        connection,
        [
            split_register_key(row["entity_id"])
            for row in rows
            if row["kind"] == "register" and not row["deleted"]
        ],
    )
    return [
        FeedRow(
            seq=row["seq"],
            kind=row["kind"],
            entity_id=row["entity_id"],
            deleted=row["deleted"],
            register=(
                registers.get(split_register_key(row["entity_id"]))
                if row["kind"] == "register" and not row["deleted"]
                else None
            ),
        )
        for row in rows
    ]


def _entity_documents(
    connection: Connection, rows: list[FeedRow]
) -> dict[tuple[str, str], JSON]:
    documents: dict[tuple[str, str], JSON] = {}
    for kind, ids in document_ids(rows).items():
        if kind in ENTITY_TABLES:
            for entity_id, document in load_many(connection, kind, ids).items():
                documents[(kind, entity_id)] = document
    return documents
