"""The PostgreSQL server storage directly: schema, errors, feed, LWW, deletes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from localsync.errors import BadRequest, Forbidden, SchemaVersionError, StoreError
from localsync.exports import exported_items
from localsync.hlc import Timestamp, new_node_id, wall_clock_ms
from localsync.server import postgres_database
from localsync.server.postgres_database import SCHEMA_VERSION, Transaction
from localsync.server.postgres_registers import RegisterBatch, RegisterWrite
from localsync.server.postgres_storage import PostgresStorage
from localsync.server.registers import SeqConflict
from localsync.server.storage import NewTask, PushOp, open_storage
from localsync.statuses import iso_timestamp
from tests import pg_fixtures
from tests.pg_fixtures import fresh_database, postgres_fingerprint
from tests.server_fixtures import seed_dataset, synthetic_records

# The module-scoped database and storage of tests/pg_fixtures.py.
pg_database_url = pg_fixtures.pg_database_url
pg_storage = pg_fixtures.pg_storage

USER = "annotator@example.com"


@pytest.fixture(scope="module")
def world(pg_storage: PostgresStorage) -> dict[str, Any]:
    records = synthetic_records(12, folder="/w", prefix="a")
    dataset = seed_dataset(pg_storage, records, dataset="d", project="p")
    task = pg_storage.create_task(
        NewTask(
            project_id=dataset["projects"][0],
            dataset_id=dataset["id"],
            name="t",
            statuses=("completed", "discard"),
            query={"dir": "/w"},
            assignees=("ann@example.com",),
        )
    )
    return {"dataset": dataset, "task": task, "items": [r["_id"] for r in records]}


@pytest.fixture
def second_storage(pg_database_url: str) -> Iterator[PostgresStorage]:
    """Another storage on the same database: its own pool and clock, as a process."""
    storage = PostgresStorage(pg_database_url)
    yield storage
    storage.close()


def op(
    seq: int, item_id: str, task_id: str, status: str | None, wall_ms: int, node: str
) -> PushOp:
    return PushOp(
        op_id=f"op-{node[:6]}-{seq}",
        seq=seq,
        item_id=item_id,
        task_id=task_id,
        status=status,
        hlc=str(Timestamp(wall_ms, 0, node)),
        creator="offline@example.com",
    )


def drain(storage: PostgresStorage, dataset_id: str, cursor: int) -> list[dict]:
    changes = []
    while True:
        page = storage.pull(dataset_id, cursor=cursor, limit=100)
        changes.extend(page.changes)
        cursor = page.cursor
        if not page.has_more:
            return changes


# Schema and connection.


def test_new_database_gets_schema(pg_storage: PostgresStorage) -> None:
    with pg_storage.db.read() as connection:
        versions = [
            row["version"]
            for row in connection.execute("SELECT version FROM schema_version")
        ]
        keys = {row["key"] for row in connection.execute("SELECT key FROM meta")}
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert keys == {"epoch", "node_id", "last_hlc", "secret"}
    assert pg_storage.meta().schema_version == SCHEMA_VERSION


def test_reopen_keeps_meta(pg_storage: PostgresStorage, pg_database_url: str) -> None:
    again = PostgresStorage(pg_database_url)
    try:
        assert again.meta() == pg_storage.meta()
    finally:
        again.close()
    assert len(pg_storage.meta().epoch) == 32
    assert len(pg_storage.meta().secret) >= 32


def test_open_storage_takes_postgres_urls(pg_database_url: str) -> None:
    storage = open_storage(pg_database_url)
    try:
        assert isinstance(storage, PostgresStorage)
    finally:
        storage.close()


def test_newer_schema_version_rejected() -> None:
    with fresh_database() as url:
        PostgresStorage(url).close()
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("INSERT INTO schema_version (version) VALUES (99)")
        with pytest.raises(SchemaVersionError, match="version 99"):
            PostgresStorage(url)
        with psycopg.connect(url) as connection:
            rows = connection.execute("SELECT version FROM schema_version").fetchall()
        assert sorted(row[0] for row in rows) == [*range(1, SCHEMA_VERSION + 1), 99]


def _with_second_migration(
    monkeypatch: pytest.MonkeyPatch, script: str
) -> list[tuple[int, str]]:
    found = postgres_database.migrations()
    second = [*found, (len(found) + 1, script)]
    monkeypatch.setattr(postgres_database, "migrations", lambda: second)
    monkeypatch.setattr(postgres_database, "SCHEMA_VERSION", len(second))
    return second


def _columns_of_items(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'items'"
        ).fetchall()
    return {row[0] for row in rows}


def test_older_schema_is_migrated(monkeypatch: pytest.MonkeyPatch) -> None:
    with fresh_database() as url:
        PostgresStorage(url).close()
        second = _with_second_migration(
            monkeypatch, "ALTER TABLE items ADD COLUMN note text;"
        )
        storage = PostgresStorage(url)
        storage.close()
        with psycopg.connect(url) as connection:
            rows = connection.execute("SELECT version FROM schema_version").fetchall()
        assert sorted(row[0] for row in rows) == [version for version, _ in second]
        assert storage.meta().schema_version == len(second)
        assert "note" in _columns_of_items(url)


def test_failing_migration_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with fresh_database() as url:
        PostgresStorage(url).close()
        _with_second_migration(
            monkeypatch, "ALTER TABLE items ADD COLUMN note text; SELECT 1 / 0;"
        )
        with pytest.raises(StoreError, match="migration 002 failed.*at version 1"):
            PostgresStorage(url)
        with psycopg.connect(url) as connection:
            rows = connection.execute("SELECT version FROM schema_version").fetchall()
        assert [row[0] for row in rows] == list(range(1, SCHEMA_VERSION + 1))
        assert "note" not in _columns_of_items(url)


def test_database_of_another_program_rejected() -> None:
    with fresh_database() as url:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE invoices (id integer)")
        with pytest.raises(StoreError, match="no localsync schema_version table"):
            PostgresStorage(url)
        with psycopg.connect(url) as connection:
            tables = connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        assert tables == [("invoices",)]


def test_unreachable_server_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match="Cannot connect to PostgreSQL") as caught:
        PostgresStorage("postgresql://someone:hunter2@127.0.0.1:1/nothing")
    assert time.monotonic() - started < 10
    assert "hunter2" not in str(caught.value)
    assert "postgresql://someone@127.0.0.1:1/nothing" in str(caught.value)


def test_missing_database_named(pg_database_url: str) -> None:
    url = pg_database_url.replace("/localsync_test_", "/absent_")
    with pytest.raises(StoreError, match="absent"):
        PostgresStorage(url)


def test_storage_url_hides_password(pg_database_url: str) -> None:
    parts = urlsplit(pg_database_url)
    with_password = urlunsplit(
        parts._replace(netloc=f"{parts.username}:hunter2@{parts.hostname}:{parts.port}")
    )
    storage = PostgresStorage(with_password)
    try:
        assert "hunter2" not in storage.url
        assert storage.url.endswith(parts.path)
    finally:
        storage.close()


def test_unparsable_url_hides_password() -> None:
    with pytest.raises(StoreError, match="cannot be parsed") as caught:
        PostgresStorage("postgresql://u:hunter2@[broken")
    assert "hunter2" not in str(caught.value)


# The change feed and its cursor.


def test_feed_keeps_newest_change_per_entity(
    pg_storage: PostgresStorage, world: dict[str, Any]
) -> None:
    dataset_id, item_id = world["dataset"]["id"], world["items"][0]
    before = [c for c in drain(pg_storage, dataset_id, 0) if c["id"] == item_id]

    for value in (1, 2):
        pg_storage.patch_item(
            item_id, {"metadata": {"user": {"x": value}}}, system=False, user_email="u"
        )

    after = [c for c in drain(pg_storage, dataset_id, 0) if c["id"] == item_id]
    assert len(before) == 1
    assert len(after) == 1
    assert after[0]["seq"] > before[0]["seq"]
    assert after[0]["data"]["metadata"]["user"]["x"] == 2


def test_unchanged_patch_adds_no_feed_row(
    pg_storage: PostgresStorage, world: dict[str, Any]
) -> None:
    item_id = world["items"][1]
    changes = {"metadata": {"user": {"y": True}}}
    pg_storage.patch_item(item_id, changes, system=False, user_email="u")
    before = postgres_fingerprint(pg_storage)
    pg_storage.patch_item(item_id, changes, system=False, user_email="u")
    assert postgres_fingerprint(pg_storage) == before


def test_feed_writer_waits_for_uncommitted_one(
    pg_storage: PostgresStorage, pg_database_url: str, world: dict[str, Any]
) -> None:
    """A seq taken by an open transaction blocks later seqs of its dataset."""
    dataset_id, task_id = world["dataset"]["id"], world["task"]["id"]
    first_item, second_item = world["items"][2], world["items"][3]
    cursor = pg_storage.pull(dataset_id, cursor=0, limit=5000).cursor

    held_connection = psycopg.connect(
        pg_database_url, autocommit=True, row_factory=psycopg.rows.dict_row
    )
    transaction_block = held_connection.transaction()
    transaction_block.__enter__()
    open_writer = Transaction(held_connection)
    open_writer.touch(dataset_id, "item", first_item)
    open_writer.write_feed()

    finished = threading.Event()

    def write_register() -> None:
        pg_storage.set_statuses(task_id, [second_item], "completed", user_email=USER)
        finished.set()

    thread = threading.Thread(target=write_register)
    thread.start()
    try:
        assert not finished.wait(0.5), "a later feed write did not wait"
        page = pg_storage.pull(dataset_id, cursor=cursor, limit=100)
        assert page.changes == []
        assert page.cursor == cursor
    finally:
        transaction_block.__exit__(None, None, None)
        held_connection.close()
    thread.join(timeout=10)

    assert finished.is_set()
    changes = drain(pg_storage, dataset_id, cursor)
    assert [(c["kind"], c["id"]) for c in changes] == [
        ("item", first_item),
        ("register", f"{second_item}:{task_id}"),
    ]
    assert changes[0]["seq"] < changes[1]["seq"]


def test_concurrent_puller_sees_every_change(
    pg_database_url: str, world: dict[str, Any]
) -> None:
    """Writers in four pools commit out of order; a puller never skips a change."""
    dataset_id = world["dataset"]["id"]
    storages = [PostgresStorage(pg_database_url) for _ in range(4)]
    start_cursor = storages[0].pull(dataset_id, cursor=0, limit=5000).cursor
    # Each write changes one register once, so a skipped seq is never repaired
    # by a later change of the same register.
    records = synthetic_records(120, folder="/race", prefix="c")
    seed_dataset(storages[0], records, dataset="d", project="p")
    race_task = storages[0].create_task(
        NewTask(
            project_id=world["dataset"]["projects"][0],
            dataset_id=dataset_id,
            name="race",
            query={"dir": "/race"},
        )
    )
    cursor = storages[0].pull(dataset_id, cursor=start_cursor, limit=5000).cursor
    seen: list[str] = []
    done = threading.Event()

    def write(storage: PostgresStorage, item_ids: list[str]) -> None:
        for item_id in item_ids:
            storage.set_statuses(
                race_task["id"], [item_id], "completed", user_email=USER
            )

    def pull() -> None:
        nonlocal cursor
        while True:
            finished = done.is_set()
            page = storages[0].pull(dataset_id, cursor=cursor, limit=7)
            seen.extend(c["id"] for c in page.changes if c["kind"] == "register")
            cursor = page.cursor
            if finished and not page.has_more:
                return

    item_ids = [record["_id"] for record in records]
    writers = [
        threading.Thread(target=write, args=(storage, item_ids[index::4]))
        for index, storage in enumerate(storages)
    ]
    puller = threading.Thread(target=pull)
    puller.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    done.set()
    puller.join(timeout=60)
    for storage in storages:
        storage.close()

    expected = {f"{item_id}:{race_task['id']}" for item_id in item_ids}
    assert len(seen) == len(expected)
    assert set(seen) == expected


# Registers, pushes and LWW across processes.


def test_concurrent_pushes_keep_newest_hlc(
    pg_storage: PostgresStorage,
    second_storage: PostgresStorage,
    world: dict[str, Any],
) -> None:
    dataset_id, task_id = world["dataset"]["id"], world["task"]["id"]
    item_ids = world["items"][4:8]
    nodes = [new_node_id(), new_node_id()]
    base = wall_clock_ms()
    batches = [
        [
            op(
                seq,
                item_ids[(seq + side) % 4],
                task_id,
                ("completed", "discard")[side],
                base + seq * 2 + side,
                nodes[side],
            )
            for seq in range(1, 41)
        ]
        for side in (0, 1)
    ]
    errors: list[BaseException] = []

    def push(storage: PostgresStorage, side: int) -> None:
        try:
            for start in range(0, 40, 5):
                storage.push(
                    replica_id=nodes[side],
                    user_email=USER,
                    dataset_id=dataset_id,
                    ops=batches[side][start : start + 5],
                )
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [
        threading.Thread(target=push, args=(storage, side))
        for side, storage in enumerate((pg_storage, second_storage))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    for item_id in item_ids:
        ops_here = [o for batch in batches for o in batch if o.item_id == item_id]
        newest = max(ops_here, key=lambda o: o.hlc)
        register = pg_storage.register(item_id, task_id)
        assert register is not None
        assert register["hlc"] == newest.hlc
        assert register["status"] == newest.status
        history = pg_storage.register_history(item_id, task_id)
        replica_rows = [row for row in history if row["source"] == "replica"]
        assert sorted(row["opId"] for row in replica_rows) == sorted(
            o.op_id for o in ops_here
        )
        assert sum(row["outcome"] == "applied" for row in replica_rows) >= 1


def test_push_waits_for_uncommitted_register_write(
    pg_storage: PostgresStorage, world: dict[str, Any]
) -> None:
    """A push reads a register only after the writer holding its item commits."""
    dataset_id, task = world["dataset"]["id"], world["task"]
    item_id = world["items"][9]
    node = new_node_id()
    base = wall_clock_ms()
    newer = str(Timestamp(base + 1000, 0, "c" * 32))

    held_connection = psycopg.connect(
        pg_storage.db.url, autocommit=True, row_factory=psycopg.rows.dict_row
    )
    transaction_block = held_connection.transaction()
    transaction_block.__enter__()
    open_writer = Transaction(held_connection)
    batch = RegisterBatch(
        open_writer, pg_storage.db, [item_id], [(item_id, task["id"])]
    )
    write = RegisterWrite("completed", newer, USER, "rest", USER)
    batch.write(batch.items[item_id], task, write)
    batch.flush()

    outcomes: list[dict[str, Any]] = []

    def push_older() -> None:
        older = op(1, item_id, task["id"], "discard", base, node)
        result = pg_storage.push(
            replica_id=node, user_email=USER, dataset_id=dataset_id, ops=[older]
        )
        outcomes.extend(result.results)

    thread = threading.Thread(target=push_older)
    thread.start()
    try:
        thread.join(timeout=0.5)
        assert thread.is_alive(), "the push did not wait for the item's row lock"
        open_writer.write_feed()
    finally:
        transaction_block.__exit__(None, None, None)
        held_connection.close()
    thread.join(timeout=10)

    assert [result["outcome"] for result in outcomes] == ["superseded"]
    assert outcomes[0]["winner"]["hlc"] == newer
    register = pg_storage.register(item_id, task["id"])
    assert register is not None
    assert register["hlc"] == newer
    assert register["status"] == "completed"


def test_duplicate_concurrent_push_applies_once(
    pg_storage: PostgresStorage,
    second_storage: PostgresStorage,
    world: dict[str, Any],
) -> None:
    dataset_id, task_id = world["dataset"]["id"], world["task"]["id"]
    node = new_node_id()
    base = wall_clock_ms()
    ops = [
        op(seq, world["items"][8 + seq % 2], task_id, "discard", base + seq, node)
        for seq in range(1, 21)
    ]
    answers: list[list[dict]] = []
    barrier = threading.Barrier(2)

    def push(storage: PostgresStorage) -> None:
        barrier.wait()
        outcome = storage.push(
            replica_id=node, user_email=USER, dataset_id=dataset_id, ops=ops
        )
        answers.append(outcome.results)

    threads = [
        threading.Thread(target=push, args=(storage,))
        for storage in (pg_storage, second_storage)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(answers) == 2
    assert answers[0] == answers[1]
    op_ids = {o.op_id for o in ops}
    for item_id in world["items"][8:10]:
        history = pg_storage.register_history(item_id, task_id)
        recorded = [row["opId"] for row in history if row["opId"] in op_ids]
        assert len(recorded) == len(set(recorded)) == 10


def test_rest_write_beats_register_of_faster_clock(
    pg_storage: PostgresStorage,
    second_storage: PostgresStorage,
    world: dict[str, Any],
) -> None:
    """A process whose clock never saw an op still writes after it."""
    dataset_id, task_id = world["dataset"]["id"], world["task"]["id"]
    item_id = world["items"][10]
    node = new_node_id()
    ahead = wall_clock_ms() + 120_000  # within the 5-minute future cap
    pushed = pg_storage.push(
        replica_id=node,
        user_email=USER,
        dataset_id=dataset_id,
        ops=[op(1, item_id, task_id, "discard", ahead, node)],
    )
    assert pushed.results[0]["restamped"] is False

    results = second_storage.set_statuses(
        task_id, [item_id], "completed", user_email=USER
    )

    assert results[0].outcome == "applied"
    assert results[0].hlc > pushed.results[0]["hlc"]
    register = pg_storage.register(item_id, task_id)
    assert register is not None
    assert register["status"] == "completed"


def test_seq_conflict_changes_nothing(
    pg_storage: PostgresStorage, world: dict[str, Any]
) -> None:
    dataset_id, task_id = world["dataset"]["id"], world["task"]["id"]
    node = new_node_id()
    base = wall_clock_ms()
    first = op(1, world["items"][11], task_id, "completed", base, node)
    pg_storage.push(
        replica_id=node, user_email=USER, dataset_id=dataset_id, ops=[first]
    )
    before = postgres_fingerprint(pg_storage)

    changed = op(1, world["items"][11], task_id, "discard", base + 5, node)
    fresh = op(2, world["items"][11], task_id, "discard", base + 6, node)
    with pytest.raises(SeqConflict):
        pg_storage.push(
            replica_id=node,
            user_email=USER,
            dataset_id=dataset_id,
            ops=[fresh, changed],
        )
    assert postgres_fingerprint(pg_storage) == before


def test_replica_of_another_user_changes_nothing(
    pg_storage: PostgresStorage, world: dict[str, Any]
) -> None:
    dataset_id, task_id = world["dataset"]["id"], world["task"]["id"]
    node = new_node_id()
    pg_storage.push(replica_id=node, user_email=USER, dataset_id=dataset_id, ops=[])
    before = postgres_fingerprint(pg_storage)
    with pytest.raises(Forbidden, match="belongs to another user"):
        pg_storage.push(
            replica_id=node,
            user_email="intruder@example.com",
            dataset_id=dataset_id,
            ops=[op(1, world["items"][0], task_id, "discard", wall_clock_ms(), node)],
        )
    assert postgres_fingerprint(pg_storage) == before


def test_import_into_second_dataset_changes_nothing(
    pg_storage: PostgresStorage, world: dict[str, Any]
) -> None:
    project_id = world["dataset"]["projects"][0]
    other = pg_storage.ensure_dataset(project_id, "other", creator="admin@localsync")
    before = postgres_fingerprint(pg_storage)
    now = iso_timestamp()
    records = synthetic_records(3, folder="/w", prefix="a")
    with pytest.raises(BadRequest, match="already belongs to dataset"):
        pg_storage.import_items(
            other["id"],
            exported_items(records, dataset_id=other["id"], now=now),
            now=now,
        )
    assert postgres_fingerprint(pg_storage) == before


def test_clock_survives_reopen(pg_database_url: str, world: dict[str, Any]) -> None:
    storage = PostgresStorage(pg_database_url)
    results = storage.set_statuses(
        world["task"]["id"], [world["items"][0]], "completed", user_email=USER
    )
    storage.close()
    reopened = PostgresStorage(pg_database_url)
    try:
        assert reopened.db.last_hlc() >= results[0].hlc
    finally:
        reopened.close()


def test_delete_items_tombstones_and_rejects_ops(
    pg_storage: PostgresStorage, world: dict[str, Any]
) -> None:
    dataset_id = world["dataset"]["id"]
    records = synthetic_records(2, folder="/gone", prefix="d")
    seed_dataset(pg_storage, records, dataset="d", project="p")
    deleted_item = records[0]["_id"]
    task = pg_storage.create_task(
        NewTask(
            project_id=world["dataset"]["projects"][0],
            dataset_id=dataset_id,
            name="deletions",
            query={"dir": "/gone"},
        )
    )
    pg_storage.set_statuses(task["id"], [deleted_item], "completed", user_email=USER)
    cursor = pg_storage.pull(dataset_id, cursor=0, limit=5000).cursor

    assert pg_storage.delete_items([deleted_item, deleted_item, "f" * 24]) == [
        deleted_item
    ]

    changes = drain(pg_storage, dataset_id, cursor)
    assert [(c["kind"], c["id"], c["deleted"]) for c in changes] == [
        ("item", deleted_item, True)
    ]
    everything = drain(pg_storage, dataset_id, 0)
    assert f"{deleted_item}:{task['id']}" not in {c["id"] for c in everything}
    assert pg_storage.item(deleted_item) is None
    assert pg_storage.register(deleted_item, task["id"]) is None
    assert len(pg_storage.register_history(deleted_item, task["id"])) == 1

    node = new_node_id()
    outcome = pg_storage.push(
        replica_id=node,
        user_email=USER,
        dataset_id=dataset_id,
        ops=[op(1, deleted_item, task["id"], "discard", wall_clock_ms(), node)],
    )
    assert outcome.results[0]["outcome"] == "rejected"
    assert outcome.results[0]["reason"] == f"Item {deleted_item!r} was deleted"
