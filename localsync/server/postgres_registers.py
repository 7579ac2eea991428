"""Register writes of the PostgreSQL backend: REST status calls, push and pull.

A transaction that writes registers first locks the items involved (in id order)
and loads their registers, so concurrent writers of one register take turns and
each compares its HLC with the value the previous one committed. The writes are
then decided in memory, last-write-wins by HLC, and written with one statement per
table.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from localsync.errors import BadRequest, Forbidden, NotFound
from localsync.hlc import Clock, Timestamp
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
    lock_items,
    save_items,
    tombstoned,
)
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
from localsync.server.storage import JSON, PullPage, PushOp, PushOutcome, StatusResult
from localsync.statuses import check_status, has_ref, set_register

RegisterKey = tuple[str, str]

_REGISTER_COLUMNS = (
    "item_id, task_id, dataset_id, status, hlc, creator, timestamp, source, replica_id"
)
_HISTORY_COLUMNS = (
    "item_id, task_id, dataset_id, status, hlc, creator, timestamp, source, "
    "user_email, replica_id, op_id, outcome, reason, restamped, recorded_at"
)


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


def _register_json(row: dict[str, Any]) -> JSON:
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
    return {(row["item_id"], row["task_id"]): _register_json(row) for row in rows}


def load_register(connection: Connection, item_id: str, task_id: str) -> JSON | None:
    return load_registers(connection, [(item_id, task_id)]).get((item_id, task_id))


class RegisterBatch:
    """The register writes of one transaction, decided in memory, written at once.

    Creating a batch locks the items it names, so the registers it loads stay
    current until the transaction ends.
    """

    def __init__(
        self,
        transaction: Transaction,
        db: PostgresDatabase,
        item_ids: Iterable[str],
        register_keys: Iterable[RegisterKey],
    ) -> None:
        self.transaction = transaction
        self.db = db
        self.items = lock_items(transaction, item_ids)
        self.registers = load_registers(transaction.connection, register_keys)
        self._changed_items: dict[str, JSON] = {}
        self._changed_registers: dict[RegisterKey, tuple[str, JSON]] = {}
        self._history: list[JSON] = []

    def current(self, item_id: str, task_id: str) -> JSON | None:
        return self.registers.get((item_id, task_id))

    def merge_current(self, clock: Clock, item_id: str, task_id: str) -> None:
        """Let ``clock`` receive the register's HLC, so its next send sorts later.

        Another process may have written the register with a clock ahead of this
        one's. Merging its HLC keeps a server write from losing to the value it
        replaces.
        """
        current = self.current(item_id, task_id)
        if current is not None:
            clock.receive(Timestamp.parse(current["hlc"]))

    def write(
        self, item: JSON, task: JSON, write: RegisterWrite
    ) -> tuple[str, JSON | None]:
        """Apply a write when it is newer than the register; return outcome, winner."""
        key = (item["id"], task["id"])
        current = self.registers.get(key)
        if not is_newer(write.hlc, current["hlc"] if current else None):
            self.record(item["id"], task["id"], task["datasetId"], write, "superseded")
            return "superseded", current

        timestamp = hlc_time(write.hlc)
        register = {
            "itemId": item["id"],
            "taskId": task["id"],
            "status": write.status,
            "hlc": write.hlc,
            "creator": write.creator,
            "timestamp": timestamp,
            "source": write.source,
            "replicaId": write.replica_id,
        }
        self.registers[key] = register
        self._changed_registers[key] = (task["datasetId"], register)
        set_register(
            item,
            task_id=task["id"],
            assignment_ids=task.get("assignmentIds") or [],
            status=write.status,
            creator=write.creator,
            timestamp=timestamp,
        )
        self._changed_items[item["id"]] = item
        self.transaction.touch(
            task["datasetId"], "register", register_key(item["id"], task["id"])
        )
        self.record(item["id"], task["id"], task["datasetId"], write, "applied")
        return "applied", register

    def record(
        self,
        item_id: str,
        task_id: str,
        dataset_id: str | None,
        write: RegisterWrite,
        outcome: str,
        reason: str | None = None,
    ) -> None:
        """Queue a register history row."""
        self._history.append(
            {
                "item_id": item_id,
                "task_id": task_id,
                "dataset_id": dataset_id,
                "status": write.status,
                "hlc": write.hlc,
                "creator": write.creator,
                "timestamp": hlc_time(write.hlc),
                "source": write.source,
                "user_email": write.user_email,
                "replica_id": write.replica_id,
                "op_id": write.op_id,
                "outcome": outcome,
                "reason": reason,
                "restamped": write.restamped,
                "recorded_at": time.time_ns() // 1_000_000,
            }
        )

    def flush(self) -> None:
        """Write the changed registers and items and the queued history rows.

        Rows travel as one JSON array each, which psycopg sends without the
        per-element escaping that array parameters take.
        """
        if self._changed_registers:
            rows = [
                {
                    "item_id": key[0],
                    "task_id": key[1],
                    "dataset_id": dataset_id,
                    "status": register["status"],
                    "hlc": register["hlc"],
                    "creator": register["creator"],
                    "timestamp": register["timestamp"],
                    "source": register["source"],
                    "replica_id": register["replicaId"],
                }
                for key, (dataset_id, register) in sorted(
                    self._changed_registers.items()
                )
            ]
            self.transaction.execute(
                f"INSERT INTO registers ({_REGISTER_COLUMNS}) "
                f"SELECT {_REGISTER_COLUMNS} "
                "FROM jsonb_populate_recordset(NULL::registers, %s) "
                "ON CONFLICT (item_id, task_id) DO UPDATE SET "
                "status = excluded.status, hlc = excluded.hlc, "
                "creator = excluded.creator, timestamp = excluded.timestamp, "
                "source = excluded.source, replica_id = excluded.replica_id",
                (Jsonb(rows),),
            )
        save_items(self.transaction, self.db, self._changed_items.values())
        if self._history:
            self.transaction.execute(
                f"INSERT INTO register_history ({_HISTORY_COLUMNS}) "
                f"SELECT {_HISTORY_COLUMNS} FROM jsonb_array_elements(%s) "
                "WITH ORDINALITY AS rows (document, position) CROSS JOIN LATERAL "
                "jsonb_populate_record(NULL::register_history, rows.document) "
                "ORDER BY rows.position",
                (Jsonb(self._history),),
            )
        self._changed_registers.clear()
        self._changed_items.clear()
        self._history.clear()


def register_history(db: PostgresDatabase, item_id: str, task_id: str) -> list[JSON]:
    with db.read() as connection:
        rows = connection.execute(
            "SELECT * FROM register_history WHERE item_id = %s AND task_id = %s "
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
            "restamped": row["restamped"],
        }
        for row in rows
    ]


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
        checked = check_status(task, status) if status is not None else None
        batch = RegisterBatch(
            transaction, db, ids, [(item_id, task_id) for item_id in ids]
        )

        def stamp_and_write(clock: Clock) -> list[StatusResult]:
            results = []
            for item_id in ids:
                item = _item_in_task(
                    batch.items.get(item_id), item_id, task, assignment_id
                )
                if item is None:
                    continue
                last = batch.current(item_id, task_id)
                batch.merge_current(clock, item_id, task_id)
                write = RegisterWrite(
                    checked, str(clock.send()), user_email, "rest", user_email
                )
                outcome, winner = batch.write(item, task, write)
                results.append(
                    StatusResult(
                        item_id=item_id,
                        status=winner["status"] if winner else None,
                        last_status=last["status"] if last else None,
                        hlc=write.hlc,
                        outcome=outcome,
                    )
                )
            return results

        results = db.with_clock(stamp_and_write)
        batch.flush()
        return results

    return db.write(work)


def _item_in_task(
    item: JSON | None, item_id: str, task: JSON, assignment_id: str | None
) -> JSON | None:
    """Return the item when it is in the task (and assignment), else ``None``.

    Through an assignment the caller named one item, so a miss raises ``NotFound``.
    """
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


@dataclass(frozen=True)
class _StoredOp:
    content_hash: str
    result: JSON


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
        tasks = load_many(transaction.connection, "task", [op.task_id for op in fresh])
        missing = {op.item_id for op in fresh} - batch.items.keys()
        deleted = tombstoned(transaction.connection, "item", missing)
        context = _PushContext(
            batch, tasks, deleted, dataset_id, user_email, replica_id
        )

        def apply_all(clock: Clock) -> tuple[list[JSON], list[JSON], str]:
            results: list[JSON] = []
            new_rows: list[JSON] = []
            for op in ops:
                digest = op_content_hash(op)
                earlier = stored.get(op.seq)
                if earlier is not None:
                    if earlier.content_hash != digest:
                        raise SeqConflict(replica_id, op.seq)
                    results.append(earlier.result)
                    continue
                result = context.apply(clock, op)
                stored[op.seq] = _StoredOp(digest, result)
                new_rows.append(
                    {"seq": op.seq, "opId": op.op_id, "hash": digest, "result": result}
                )
                results.append(result)
            return results, new_rows, str(clock.last)

        results, new_rows, server_hlc = db.with_clock(apply_all)
        batch.flush()
        _store_ops(transaction, replica_id, new_rows)
        return PushOutcome(results=results, server_hlc=server_hlc)

    return db.write(work)


def _stored_ops(
    transaction: Transaction, replica_id: str, seqs: list[int]
) -> dict[int, _StoredOp]:
    rows = transaction.execute(
        "SELECT seq, content_hash, result FROM pushed_ops "
        "WHERE replica_id = %s AND seq = ANY(%s)",
        (replica_id, sorted(set(seqs))),
    )
    return {row["seq"]: _StoredOp(row["content_hash"], row["result"]) for row in rows}


def _store_ops(transaction: Transaction, replica_id: str, rows: list[JSON]) -> None:
    """Record pushed ops; rerun the push if a concurrent one recorded them first.

    Two requests with the same ops can both miss the record and apply them; the
    second insert then waits for the first transaction and finds its rows, and the
    rerun returns their stored results without applying anything twice.
    """
    if not rows:
        return
    inserted = transaction.execute(
        "INSERT INTO pushed_ops (replica_id, seq, op_id, content_hash, result) "
        "SELECT %s, (op ->> 'seq')::bigint, op ->> 'opId', op ->> 'hash', "
        "op -> 'result' FROM jsonb_array_elements(%s) AS rows (op) "
        "ON CONFLICT (replica_id, seq) DO NOTHING RETURNING seq",
        (replica_id, Jsonb(rows)),
    ).fetchall()
    if len(inserted) != len(rows):
        raise RetryTransaction(
            f"replica {replica_id} pushed the same seqs in two requests at once"
        )


@dataclass
class _PushContext:
    """The items, tasks and tombstones one push reads, loaded before its ops apply."""

    batch: RegisterBatch
    tasks: dict[str, JSON]
    deleted_items: set[str]
    dataset_id: str
    user_email: str
    replica_id: str

    def apply(self, clock: Clock, op: PushOp) -> JSON:
        item = self.batch.items.get(op.item_id)
        task = self.tasks.get(op.task_id)
        reason = self._rejection(op, item, task)
        if reason is None:
            # A restamped op gets the server's HLC, which must beat the register.
            self.batch.merge_current(clock, op.item_id, op.task_id)
        hlc, restamped = stamp_incoming(clock, op.hlc)
        write = RegisterWrite(
            status=op.status,
            hlc=hlc,
            creator=op.creator or self.user_email,
            source="replica",
            user_email=self.user_email,
            replica_id=self.replica_id,
            op_id=op.op_id,
            restamped=restamped,
        )

        if reason is not None:
            # The current value is shown only for a register of this dataset, and
            # an op on another dataset's item stays out of that item's history.
            same_dataset = item is not None and item.get("datasetId") == self.dataset_id
            if item is None or same_dataset:
                self.batch.record(
                    op.item_id, op.task_id, self.dataset_id, write, "rejected", reason
                )
            current = (
                self.batch.current(op.item_id, op.task_id) if same_dataset else None
            )
            outcome, winner = "rejected", current
        else:
            assert item is not None and task is not None
            outcome, winner = self.batch.write(item, task, write)

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
        self, op: PushOp, item: JSON | None, task: JSON | None
    ) -> str | None:
        """Return why an op can never apply, or ``None`` when it can."""
        dataset_id = self.dataset_id
        if item is None:
            if op.item_id in self.deleted_items:
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


# Pull.


def pull(db: PostgresDatabase, dataset_id: str, *, cursor: int, limit: int) -> PullPage:
    """Return the changes after ``cursor`` and the cursor to send next.

    Feed rows of one dataset become visible in seq order (see
    :meth:`Transaction.write_feed`), so no change that commits later can have a
    seq below the last one returned, and that seq is a safe cursor.
    """
    with db.read() as connection:
        rows = connection.execute(
            "SELECT seq, kind, entity_id, deleted FROM changes "
            "WHERE dataset_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (dataset_id, cursor, limit + 1),
        ).fetchall()
        has_more = len(rows) > limit
        rows = rows[:limit]
        data = _change_data(connection, rows)
    changes = [
        {
            "seq": row["seq"],
            "kind": row["kind"],
            "id": row["entity_id"],
            "deleted": row["deleted"],
            "data": data.get((row["kind"], row["entity_id"])),
        }
        for row in rows
    ]

    register_hlcs = [
        Timestamp.parse(change["data"]["hlc"])
        for change in changes
        if change["kind"] == "register" and change["data"]
    ]

    def receive_all(clock: Clock) -> str:
        # The server's HLC in the response sorts after every HLC of the page,
        # including those written through other server processes.
        for hlc in register_hlcs:
            clock.receive(hlc)
        return str(clock.last)

    server_hlc = db.with_clock(receive_all)
    next_cursor = changes[-1]["seq"] if changes else cursor
    return PullPage(
        changes=changes, cursor=next_cursor, has_more=has_more, server_hlc=server_hlc
    )


def _change_data(
    connection: Connection, rows: list[dict[str, Any]]
) -> dict[tuple[str, str], JSON]:
    """Return the current data of each changed entity that was not deleted."""
    wanted: dict[str, list[str]] = {}
    for row in rows:
        if not row["deleted"]:
            wanted.setdefault(row["kind"], []).append(row["entity_id"])

    data: dict[tuple[str, str], JSON] = {}
    for kind, ids in wanted.items():
        if kind == "register":
            keys = [_split_register_key(entity_id) for entity_id in ids]
            for key, register in load_registers(connection, keys).items():
                data[(kind, register_key(*key))] = register_change_data(register)
        elif kind in ENTITY_TABLES:
            for entity_id, document in load_many(connection, kind, ids).items():
                data[(kind, entity_id)] = document
    return data


def _split_register_key(entity_id: str) -> RegisterKey:
    item_id, _, task_id = entity_id.partition(":")
    return item_id, task_id
