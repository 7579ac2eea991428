"""The SQLite server storage directly: file handling, feed, LWW, history, deletes."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from localsync.errors import BadRequest, NotFound, SchemaVersionError, StoreError
from localsync.hlc import Timestamp, new_node_id
from localsync.server.registers import SeqConflict
from localsync.server.sqlite_storage import SQLiteStorage
from localsync.server.storage import NewTask, PushOp
from tests.server_fixtures import database_fingerprint, seed_dataset, synthetic_records


@pytest.fixture
def storage(tmp_path: Path) -> SQLiteStorage:
    opened = SQLiteStorage(tmp_path / "server.db")
    yield opened
    opened.close()


@pytest.fixture
def world(storage: SQLiteStorage) -> dict[str, Any]:
    records = synthetic_records(6, folder="/w", prefix="a")
    dataset = seed_dataset(storage, records, dataset="d", project="p")
    task = storage.create_task(
        NewTask(
            project_id=dataset["projects"][0],
            dataset_id=dataset["id"],
            name="t",
            statuses=("completed", "discard"),
            query={"$and": [{"dir": "/w"}, {"metadata.user.index": {"$lt": 5}}]},
            assignees=("ann@example.com",),
        )
    )
    return {"dataset": dataset, "task": task, "items": [r["_id"] for r in records]}


def op(
    seq: int, item_id: str, task_id: str, status: str | None, wall_ms: int
) -> PushOp:
    return PushOp(
        op_id=f"op-{seq}-{wall_ms}",
        seq=seq,
        item_id=item_id,
        task_id=task_id,
        status=status,
        hlc=str(Timestamp(wall_ms, 0, "b" * 32)),
        creator="offline@example.com",
    )


def feed_rows(storage: SQLiteStorage) -> list[tuple[int, str, str, int]]:
    with sqlite3.connect(storage.db.path) as connection:
        return connection.execute(
            "SELECT seq, kind, entity_id, deleted FROM changes ORDER BY seq"
        ).fetchall()


# The database file.


def test_new_database_is_private(tmp_path: Path) -> None:
    SQLiteStorage(tmp_path / "server.db").close()
    mode = stat.S_IMODE(os.stat(tmp_path / "server.db").st_mode)
    assert mode == 0o600


def test_reopen_keeps_meta(tmp_path: Path) -> None:
    first = SQLiteStorage(tmp_path / "server.db")
    meta = first.meta()
    first.close()
    second = SQLiteStorage(tmp_path / "server.db")
    assert second.meta() == meta
    assert len(meta.epoch) == 32
    assert len(meta.secret) >= 32
    second.close()


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are notes, not SQLite " * 100)
    with pytest.raises(StoreError, match="notes.db"):
        SQLiteStorage(path)


def test_newer_schema_version(tmp_path: Path) -> None:
    SQLiteStorage(tmp_path / "server.db").close()
    with sqlite3.connect(tmp_path / "server.db") as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SchemaVersionError, match="version 99"):
        SQLiteStorage(tmp_path / "server.db")


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        SQLiteStorage(tmp_path / "no" / "server.db")


# The change feed.


def test_feed_keeps_newest_change_per_entity(storage: SQLiteStorage, world) -> None:
    item_id = world["items"][0]
    before = [row for row in feed_rows(storage) if row[2] == item_id]

    storage.patch_item(
        item_id, {"metadata": {"user": {"x": 1}}}, system=False, user_email="u"
    )
    storage.patch_item(
        item_id, {"metadata": {"user": {"x": 2}}}, system=False, user_email="u"
    )

    after = [row for row in feed_rows(storage) if row[2] == item_id]
    assert len(before) == 1
    assert len(after) == 1
    assert after[0][0] > before[0][0]
    assert after[0][0] == max(row[0] for row in feed_rows(storage))


def test_unchanged_patch_adds_no_feed_row(storage: SQLiteStorage, world) -> None:
    item_id = world["items"][0]
    storage.patch_item(
        item_id, {"metadata": {"user": {"x": 1}}}, system=False, user_email="u"
    )
    before = database_fingerprint(storage)
    storage.patch_item(
        item_id, {"metadata": {"user": {"x": 1}}}, system=False, user_email="u"
    )
    assert database_fingerprint(storage) == before


def test_patch_unknown_item(storage: SQLiteStorage) -> None:
    with pytest.raises(NotFound, match="ffffffffffffffffffffffff"):
        storage.patch_item("f" * 24, {}, system=False, user_email="u")


# Registers.


def test_lww_by_hlc_and_history(storage: SQLiteStorage, world) -> None:
    item_id, task_id, dataset_id = (
        world["items"][1],
        world["task"]["id"],
        world["dataset"]["id"],
    )
    replica = new_node_id()
    base = 1_700_000_000_000

    first = storage.push(
        replica_id=replica,
        user_email="u@example.com",
        dataset_id=dataset_id,
        ops=[op(1, item_id, task_id, "completed", base + 2)],
    )
    second = storage.push(
        replica_id=replica,
        user_email="u@example.com",
        dataset_id=dataset_id,
        ops=[
            op(2, item_id, task_id, "discard", base + 1),
            op(3, item_id, task_id, None, base + 3),
        ],
    )

    outcomes = [r["outcome"] for r in first.results + second.results]
    assert outcomes == ["applied", "superseded", "applied"]
    assert second.results[0]["winner"]["status"] == "completed"
    register = storage.register(item_id, task_id)
    assert register["status"] is None
    assert register["hlc"] == str(Timestamp(base + 3, 0, "b" * 32))
    history = storage.register_history(item_id, task_id)
    assert [(h["status"], h["outcome"]) for h in history] == [
        ("completed", "applied"),
        ("discard", "superseded"),
        (None, "applied"),
    ]


def test_seq_conflict_rolls_back_batch(storage: SQLiteStorage, world) -> None:
    item_id, task_id, dataset_id = (
        world["items"][2],
        world["task"]["id"],
        world["dataset"]["id"],
    )
    replica = new_node_id()
    push = storage.push
    push(
        replica_id=replica,
        user_email="u@example.com",
        dataset_id=dataset_id,
        ops=[op(1, item_id, task_id, "completed", 1_700_000_000_000)],
    )
    before = database_fingerprint(storage)

    with pytest.raises(SeqConflict):
        push(
            replica_id=replica,
            user_email="u@example.com",
            dataset_id=dataset_id,
            ops=[
                op(2, world["items"][3], task_id, "completed", 1_700_000_000_005),
                op(1, item_id, task_id, "discard", 1_700_000_000_000),
            ],
        )

    assert database_fingerprint(storage) == before


def test_set_statuses_errors_change_nothing(storage: SQLiteStorage, world) -> None:
    task_id, item_id = world["task"]["id"], world["items"][0]
    before = database_fingerprint(storage)

    with pytest.raises(NotFound, match="Task"):
        storage.set_statuses("0" * 24, [item_id], "completed", user_email="u")
    with pytest.raises(BadRequest, match="completed, discard"):
        storage.set_statuses(task_id, [item_id], "approved", user_email="u")
    skipped = storage.set_statuses(
        task_id, [world["items"][5], "f" * 24], "completed", user_email="u"
    )

    assert skipped == []
    assert database_fingerprint(storage) == before


def test_clock_survives_reopen(tmp_path: Path, world, storage: SQLiteStorage) -> None:
    task_id = world["task"]["id"]
    [first] = storage.set_statuses(
        task_id, [world["items"][0]], "completed", user_email="u"
    )
    storage.close()
    reopened = SQLiteStorage(storage.db.path)
    [second] = reopened.set_statuses(
        task_id, [world["items"][1]], "completed", user_email="u"
    )
    reopened.close()
    assert second.hlc > first.hlc


def test_concurrent_writers_all_succeed(storage: SQLiteStorage, world) -> None:
    task_id = world["task"]["id"]
    other = SQLiteStorage(storage.db.path)  # as a second server process would
    errors: list[BaseException] = []

    def write(target: SQLiteStorage, status: str) -> None:
        try:
            for _ in range(10):
                target.set_statuses(task_id, world["items"][:5], status, user_email="u")
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(target, status))
        for target in (storage, other)
        for status in ("completed", "discard")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()

    assert errors == []
    history = storage.register_history(world["items"][0], task_id)
    assert len(history) == 40
    hlcs = [entry["hlc"] for entry in history]
    assert hlcs == sorted(hlcs)
    assert len(set(hlcs)) == 40


# Deletion.


def test_delete_items_tombstones(storage: SQLiteStorage, world) -> None:
    item_id, task_id = world["items"][0], world["task"]["id"]
    storage.set_statuses(task_id, [item_id], "completed", user_email="u")

    deleted = storage.delete_items([item_id, "f" * 24, item_id])

    assert deleted == [item_id]
    assert storage.item(item_id) is None
    assert storage.register(item_id, task_id) is None
    assert len(storage.register_history(item_id, task_id)) == 1
    rows = [row for row in feed_rows(storage) if row[2].startswith(item_id)]
    assert [(kind, deleted_flag) for _, kind, _, deleted_flag in rows] == [("item", 1)]

