"""The sync engine against a real server on 127.0.0.1: clone, push, pull, offline
work, newer and older pending ops, epochs, restored replicas, deleted items."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from localsync.hlc import wall_clock_ms
from localsync.store import Replica
from localsync.sync import SyncEngine, open_remote
from localsync.sync.views import RegisterValue
from tests.sync_support import (
    World,
    fast_retry,
    journal_states,
    make_world,
    replica_statuses,
    run_cli,
    set_statuses,
    size,
    wait_past_clock,
)

ITEMS = 60


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = make_world(tmp_path, ITEMS)
    yield world
    world.runner.close()


def sync(replica: Replica, **options: int):
    with open_remote(replica, retry=fast_retry()) as remote:
        return SyncEngine(replica, remote, **options).sync()


def remote_register(
    replica: Replica, item_id: str, task_id: str
) -> RegisterValue | None:
    row = replica.conn.execute(
        "SELECT status, hlc, creator, timestamp FROM remote_registers"
        " WHERE item_id = ? AND task_id = ?",
        (item_id, task_id),
    ).fetchone()
    return RegisterValue(*row) if row else None


def test_clone_pulls_every_entity(world: World) -> None:
    replica = world.clone()
    items = replica.conn.execute(
        "SELECT COUNT(*) FROM items WHERE json LIKE '%\"file\"%'"
    )

    assert items.fetchone()[0] == ITEMS
    assert replica.get_task(world.task["id"])["name"] == "labeling"
    assert len(replica.assignments(world.task["id"])) == 1
    assert replica.dataset_id == world.dataset["id"]
    assert replica.setting("epoch") == world.storage.meta().epoch
    assert int(replica.setting("cursor") or 0) > 0
    assert replica.setting("remote_url") == f"{world.url}/api/v1"
    assert replica.setting("user_email") == "annotator@example.com"
    assert set(replica_statuses(replica, world.task["id"])) == set(world.item_ids)


def test_push_applies_ops_and_views_agree(world: World) -> None:
    replica = world.clone()
    task_id = world.task["id"]
    set_statuses(replica, task_id, world.item_ids[:20], "completed")
    set_statuses(replica, task_id, world.item_ids[10:30], "discard")

    report = sync(replica, batch_size=7)

    assert report.push.pushed == 40
    assert report.push.applied == 40
    assert report.push.batches == 6
    assert report.conflicts == 0
    assert journal_states(replica) == {"applied": 40}
    assert world.server_statuses() == {
        item_id: status
        for item_id, status in replica_statuses(replica, task_id).items()
        if status is not None
    }
    assert remote_register(replica, world.item_ids[15], task_id).status == "discard"


def test_offline_ops_converge_in_one_sync(world: World) -> None:
    replica = world.clone()
    task_id = world.task["id"]
    world.runner.stop()
    ops = size("OFFLINE_OPS", 1000, 10000)
    statuses = ("completed", "discard", "approved", None)
    written = 0
    while written < ops:
        round_number = written // ITEMS
        batch = world.item_ids[: min(ITEMS, ops - written)]
        written += len(
            set_statuses(replica, task_id, batch, statuses[round_number % 4])
        )
    replica_view = replica_statuses(replica, task_id)
    replica.close()

    down = run_cli(
        "sync",
        "--store",
        str(replica.path),
        "--max-attempts",
        "2",
        "--max-wait",
        "0.05",
    )
    assert down.returncode == 1
    assert "Error: POST" in down.stderr
    assert "failed after 2 attempts" in down.stderr
    with Replica(replica.path) as check:
        assert journal_states(check) == {"pending": ops}

    world.runner.start()
    up = run_cli("sync", "--store", str(replica.path), "--format", "json")

    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    assert summary["pushed"] == ops
    assert summary["applied"] == ops
    assert summary["pending"] == 0
    with Replica(replica.path) as after:
        assert replica_statuses(after, task_id) == replica_view
        assert journal_states(after) == {"applied": ops}
    expected = {
        item: status for item, status in replica_view.items() if status is not None
    }
    server = {
        item: status for item, status in world.server_statuses().items() if status
    }
    assert server == expected
    assert world.server_count("SELECT COUNT(*) FROM pushed_ops") == ops


def test_pull_keeps_newer_pending_op(world: World) -> None:
    replica = world.clone()
    task_id, item_id = world.task["id"], world.item_ids[0]
    # The replica's edit is stamped 60 s ahead: newer than the online write below.
    replica.set_setting("clock_offset_ms", 60_000)
    set_statuses(replica, task_id, [item_id], "completed")
    world.rest_set_status([item_id], "discard")

    with open_remote(replica, retry=fast_retry()) as remote:
        SyncEngine(replica, remote).pull()
    assert replica_statuses(replica, task_id)[item_id] == "completed"
    assert remote_register(replica, item_id, task_id).status == "discard"

    report = sync(replica)
    assert report.push.applied == 1
    assert world.server_statuses()[item_id] == "completed"
    assert replica_statuses(replica, task_id)[item_id] == "completed"


def test_older_pending_op_loses_with_conflict_row(world: World) -> None:
    replica = world.clone()
    task_id, item_id = world.task["id"], world.item_ids[1]
    replica.set_setting("clock_offset_ms", -60_000)
    op_id = set_statuses(replica, task_id, [item_id], "completed")[0]
    wait_past_clock(replica)
    world.rest_set_status([item_id], "discard", user="online@example.com")

    with open_remote(replica, retry=fast_retry()) as remote:
        SyncEngine(replica, remote).pull()
    # Pulling shows the newer remote value; the older op stays pending.
    assert replica_statuses(replica, task_id)[item_id] == "discard"
    assert journal_states(replica) == {"pending": 1}

    report = sync(replica)
    assert report.push.superseded == 1
    assert report.conflicts == 1
    conflict = next(replica.db.query("SELECT * FROM conflicts"))
    assert conflict["op_id"] == op_id
    assert conflict["local_status"] == "completed"
    assert conflict["winner_status"] == "discard"
    assert conflict["winner_creator"] == "online@example.com"
    assert conflict["winner_source"] == "rest"
    assert conflict["winner_hlc"] > conflict["local_hlc"]
    assert world.server_statuses()[item_id] == "discard"
    assert replica_statuses(replica, task_id)[item_id] == "discard"


def test_new_epoch_refetches_and_loses_nothing(world: World, tmp_path: Path) -> None:
    replica = world.clone()
    task_id = world.task["id"]
    backup = tmp_path / "backup.db"
    with (
        sqlite3.connect(world.runner.db_path) as source,
        sqlite3.connect(backup) as copy,
    ):
        source.backup(copy)

    applied_items = world.item_ids[:10]
    set_statuses(replica, task_id, applied_items, "completed")
    assert sync(replica).push.applied == 10
    pending_items = world.item_ids[20:30]
    set_statuses(replica, task_id, pending_items, "discard")

    # Restore the server from the backup with a new epoch, as an administrator
    # would. An online user then writes one item that the lost ops had written.
    with sqlite3.connect(backup) as restored:
        restored.execute("UPDATE meta SET value = 'restored0epoch' WHERE key = 'epoch'")
    world.runner.replace_database(backup)
    world.rest_set_status([applied_items[0]], "approved")

    with open_remote(replica, retry=fast_retry()) as remote:
        refetch = SyncEngine(replica, remote).pull()
    assert refetch.epoch_changed
    # The re-fetched items show the pending ops, which are newer than the server.
    view = replica_statuses(replica, task_id)
    assert all(view[item] == "discard" for item in pending_items)

    report = sync(replica)

    assert replica.setting("epoch") == "restored0epoch"
    assert refetch.reasserted == 9
    assert report.push.applied == 19
    server = world.server_statuses()
    assert server[applied_items[0]] == "approved"
    assert all(server[item] == "completed" for item in applied_items[1:])
    assert all(server[item] == "discard" for item in pending_items)
    view = replica_statuses(replica, task_id)
    assert {item: view[item] for item in server} == server
    assert journal_states(replica).get("pending", 0) == 0


def test_restored_replica_takes_new_id(world: World, tmp_path: Path) -> None:
    replica = world.clone()
    task_id = world.task["id"]
    set_statuses(replica, task_id, world.item_ids[:5], "completed")
    sync(replica)
    old_copy = tmp_path / "old-copy.db"
    with sqlite3.connect(old_copy) as copy:
        replica.conn.backup(copy)
    set_statuses(replica, task_id, world.item_ids[5:10], "discard")
    sync(replica)
    old_id = replica.replica_id
    replica.close()

    for suffix in ("", "-wal", "-shm"):
        Path(f"{replica.path}{suffix}").unlink(missing_ok=True)
    shutil.copy(old_copy, replica.path)
    restored = Replica(replica.path)
    new_ops = set_statuses(restored, task_id, world.item_ids[40:43], "approved")

    report = sync(restored)

    assert report.new_replica_id is not None
    assert restored.replica_id == report.new_replica_id != old_id
    assert report.push.applied == 3
    dropped = restored.conn.execute(
        "SELECT op_id, reason FROM journal WHERE state = 'dropped'"
    ).fetchall()
    assert sorted(op for op, _ in dropped) == sorted(new_ops)
    assert all("journaled again as op" in reason for _, reason in dropped)
    server = world.server_statuses()
    assert all(server[item] == "approved" for item in world.item_ids[40:43])
    # The edits of the lost future copy stay on the server and come back by pull.
    assert all(server[item] == "discard" for item in world.item_ids[5:10])
    view = replica_statuses(restored, task_id)
    assert {item: view[item] for item in server} == server


def test_deleted_item_quarantines_its_ops(world: World) -> None:
    replica = world.clone()
    task_id = world.task["id"]
    gone, kept = world.item_ids[3], world.item_ids[4]
    set_statuses(replica, task_id, [gone, kept], "completed")
    world.storage.delete_items([gone])
    replica.close()

    result = run_cli("sync", "--store", str(replica.path))

    assert result.returncode == 3, result.stderr
    assert "1 op rejected; see 'localsync conflicts'." in result.stdout
    with Replica(replica.path) as after:
        rows = after.conn.execute(
            "SELECT item_id, state, reason FROM journal"
        ).fetchall()
        states = {item: (state, reason) for item, state, reason in rows}
        assert states[kept][0] == "applied"
        assert states[gone][0] == "rejected"
        assert "deleted" in states[gone][1]
        assert (
            after.conn.execute(
                "SELECT COUNT(*) FROM items WHERE id = ?", (gone,)
            ).fetchone()[0]
            == 0
        )


def test_pulled_item_keeps_pending_status(world: World) -> None:
    replica = world.clone()
    task_id, item_id = world.task["id"], world.item_ids[6]
    set_statuses(replica, task_id, [item_id], "approved")
    world.storage.patch_item(
        item_id,
        {"metadata": {"user": {"reviewed": True}}},
        system=False,
        user_email="online@example.com",
    )

    with open_remote(replica, retry=fast_retry()) as remote:
        report = SyncEngine(replica, remote).pull()

    assert report.pull.items == 1
    item = replica.get_item(item_id)
    assert item["metadata"]["user"]["reviewed"] is True
    assert replica_statuses(replica, task_id)[item_id] == "approved"
    assert item["metadata"]["system"]["annotationStatus"] == ["approved"]


def test_pulled_tombstone_rejects_pending_ops(world: World) -> None:
    replica = world.clone()
    task_id, gone = world.task["id"], world.item_ids[5]
    set_statuses(replica, task_id, [gone], "discard")
    world.storage.delete_items([gone])

    with open_remote(replica, retry=fast_retry()) as remote:
        report = SyncEngine(replica, remote).pull()

    assert report.pull.rejected == 1
    assert replica.journal()[0]["state"] == "rejected"
    assert replica.journal()[0]["reason"] == "item deleted"
    assert gone not in replica_statuses(replica, task_id)
    assert sync(replica).push.pushed == 0


def test_clock_offset_measured_from_server(world: World) -> None:
    replica = world.clone()
    replica.set_setting("clock_offset_ms", 3_600_000)
    sync(replica)
    offset = int(replica.setting("clock_offset_ms") or 0)
    assert abs(offset) < 2_000
    last = replica.setting("last_hlc") or ""
    assert int(last.split("-")[0]) <= wall_clock_ms() + 2_000
