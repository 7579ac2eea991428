"""What one sync round costs and learns, against a real server on 127.0.0.1.

A push records the winner of each op from its result, so the pull after it sends
the replica id and the server leaves out the registers this replica wrote last.
These tests show that the replica still learns every value it needs: online
writes made after the push, its own values after a new epoch or a push whose
response was lost, and the writes of another copy of its file. They also show
which push results render an item again and which leave it as it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localsync.store import Replica
from localsync.sync import SyncEngine
from localsync.sync.apply import apply_page
from localsync.sync.conflicts import drop_op
from localsync.sync.remote import LocalsyncRemote
from localsync.sync.retry import RemoteUnavailable, RetryPolicy
from localsync.sync.views import hlc_time
from tests.proxy import Fault, FaultKind, FaultProxy
from tests.sync_support import (
    USER,
    World,
    fast_retry,
    journal_states,
    make_world,
    replica_statuses,
    set_statuses,
    wait_past_clock,
)

ITEMS = 40
PUSH = "/api/v1/sync/push"
ONLINE_USER = "online@example.com"


class RecordingTransport(httpx.HTTPTransport):
    """An httpx transport that keeps the URL of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[httpx.URL] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(request.url)
        return super().handle_request(request)

    def pull_params(self) -> list[dict[str, str]]:
        return [dict(url.params) for url in self.urls if url.path.endswith("/pull")]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = make_world(tmp_path, ITEMS)
    yield world
    world.runner.close()


def engine(
    replica: Replica,
    transport: httpx.BaseTransport | None = None,
    *,
    url: str | None = None,
    retry: RetryPolicy | None = None,
    **options: int,
) -> SyncEngine:
    remote = LocalsyncRemote(
        url or replica.setting("remote_url") or "",
        replica.setting("token") or "",
        retry=retry or fast_retry(),
        transport=transport,
    )
    return SyncEngine(replica, remote, **options)


def item_json(replica: Replica, item_id: str) -> str:
    row = replica.conn.execute(
        "SELECT json FROM items WHERE id = ?", (item_id,)
    ).fetchone()
    return str(row[0])


def task_ref(replica: Replica, item_id: str, task_id: str) -> dict[str, Any]:
    item = replica.get_item(item_id)
    for ref in item["metadata"]["system"]["refs"]:
        if ref.get("id") == task_id and ref.get("type") == "task":
            return dict(ref.get("metadata") or {})
    raise AssertionError(f"item {item_id} has no ref of task {task_id}")


def known_remote(replica: Replica) -> dict[str, tuple[Any, ...]]:
    rows = replica.conn.execute(
        "SELECT item_id, status, hlc, creator FROM remote_registers"
    )
    return {item_id: (status, hlc, creator) for item_id, status, hlc, creator in rows}


def server_registers(world: World) -> dict[str, tuple[Any, ...]]:
    """Return the server's register of each item in the task, read from storage."""
    registers: dict[str, tuple[Any, ...]] = {}
    for item_id in world.item_ids:
        register = world.storage.register(item_id, world.task["id"])
        if register is not None:
            registers[item_id] = (
                register["status"],
                register["hlc"],
                register["creator"],
            )
    return registers


def applied_ops(replica: Replica) -> dict[str, tuple[Any, ...]]:
    rows = replica.conn.execute(
        "SELECT item_id, status, hlc, creator FROM journal WHERE state = 'applied'"
    )
    return {item_id: (status, hlc, creator) for item_id, status, hlc, creator in rows}


# The pull after a push


def test_pull_after_push_skips_own_changes(world: World) -> None:
    replica = world.clone()
    task_id, items = world.task["id"], world.item_ids[:12]
    set_statuses(replica, task_id, items, "completed")
    transport = RecordingTransport()

    report = engine(replica, transport).sync()

    assert report.push.applied == 12
    assert report.pull.registers == 0
    assert report.pull.changes == 0
    assert transport.pull_params()[0]["replica"] == replica.replica_id
    view = replica_statuses(replica, task_id)
    assert all(view[item] == "completed" for item in items)


def test_online_write_after_push_arrives(world: World) -> None:
    replica = world.clone()
    task_id, items = world.task["id"], world.item_ids[:12]
    set_statuses(replica, task_id, items, "completed")
    engine(replica).sync()
    wait_past_clock(replica)
    world.rest_set_status([items[3]], "approved", user=ONLINE_USER)

    report = engine(replica).sync()

    assert report.pull.registers == 1
    assert replica_statuses(replica, task_id)[items[3]] == "approved"
    assert task_ref(replica, items[3], task_id)["creator"] == ONLINE_USER
    assert known_remote(replica)[items[3]] == server_registers(world)[items[3]]
    assert replica_statuses(replica, task_id)[items[4]] == "completed"


def test_push_records_each_winner(world: World) -> None:
    replica = world.clone()
    task_id = world.task["id"]
    set_statuses(replica, task_id, world.item_ids[:20], "completed")
    set_statuses(replica, task_id, world.item_ids[10:30], "discard")

    engine(replica, batch_size=7).sync()

    known = known_remote(replica)
    assert len(known) == 30
    assert known == server_registers(world)
    newest = {item: known[item] for item in world.item_ids[10:30]}
    assert all(value[0] == "discard" for value in newest.values())
    assert all(value[2] == USER for value in known.values())


# Which push results render the item again


def test_applied_op_leaves_item_unwritten(world: World) -> None:
    replica = world.clone()
    task_id, item_id = world.task["id"], world.item_ids[2]
    # Two seconds ahead: rendering the remote value would change the ref's
    # timestamp from the local write time to the HLC's wall time.
    replica.set_setting("clock_offset_ms", 2_000)
    set_statuses(replica, task_id, [item_id], "completed")
    before = item_json(replica, item_id)

    report = engine(replica).push()

    assert report.push.applied == 1
    assert item_json(replica, item_id) == before
    [op] = applied_ops(replica).values()
    assert known_remote(replica)[item_id] == op


def test_remote_filled_creator_renders_item(world: World) -> None:
    replica = world.clone()
    task_id, item_id = world.task["id"], world.item_ids[2]
    replica.set_status([item_id], task_id=task_id, status="completed", creator=None)
    assert task_ref(replica, item_id, task_id)["creator"] is None

    engine(replica).push()

    # The server records the token's user as the creator; the view shows it
    # without waiting for a pull to bring the register back.
    ref = task_ref(replica, item_id, task_id)
    assert ref["creator"] == USER
    assert ref["status"] == "completed"
    assert known_remote(replica)[item_id] == server_registers(world)[item_id]


def test_restamped_op_renders_server_time(world: World) -> None:
    replica = world.clone()
    task_id, item_id = world.task["id"], world.item_ids[5]
    # One hour ahead is past the server's cap, so the server stamps the op itself.
    replica.set_setting("clock_offset_ms", 3_600_000)
    set_statuses(replica, task_id, [item_id], "approved")

    report = engine(replica).push()

    assert report.push.restamped == 1
    server_hlc = server_registers(world)[item_id][1]
    [op] = applied_ops(replica).values()
    assert server_hlc < op[1]
    assert known_remote(replica)[item_id][1] == server_hlc
    ref = task_ref(replica, item_id, task_id)
    assert ref["status"] == "approved"
    assert ref["timestamp"] == hlc_time(server_hlc)


def test_superseded_op_renders_winner(world: World) -> None:
    replica = world.clone()
    task_id, item_id = world.task["id"], world.item_ids[1]
    replica.set_setting("clock_offset_ms", -60_000)
    set_statuses(replica, task_id, [item_id], "completed")
    wait_past_clock(replica)
    world.rest_set_status([item_id], "discard", user=ONLINE_USER)

    report = engine(replica).push()

    assert report.pull.pages == 0
    assert report.push.superseded == 1
    assert report.conflicts == 1
    assert replica_statuses(replica, task_id)[item_id] == "discard"
    ref = task_ref(replica, item_id, task_id)
    assert ref["creator"] == ONLINE_USER
    assert known_remote(replica)[item_id] == server_registers(world)[item_id]


def test_older_op_under_newer_pending_keeps_view(world: World) -> None:
    replica = world.clone()
    task_id, item_id = world.task["id"], world.item_ids[7]
    set_statuses(replica, task_id, [item_id], "completed")
    set_statuses(replica, task_id, [item_id], "discard")

    report = engine(replica, batch_size=1).push()

    assert report.push.applied == 2
    assert report.push.batches == 2
    assert journal_states(replica) == {"applied": 2}
    assert replica_statuses(replica, task_id)[item_id] == "discard"
    assert known_remote(replica)[item_id][0] == "discard"
    assert server_registers(world)[item_id][0] == "discard"


# Pulls that must learn the replica's own values


def test_new_epoch_refetch_learns_own_values(world: World, tmp_path: Path) -> None:
    replica = world.clone()
    task_id, items = world.task["id"], world.item_ids[:10]
    set_statuses(replica, task_id, items, "completed")
    engine(replica).sync()
    pushed = known_remote(replica)

    # The same database under a new epoch: it still holds the replica's writes.
    copy = tmp_path / "restored.db"
    with sqlite3.connect(world.runner.db_path) as source, sqlite3.connect(copy) as dst:
        source.backup(dst)
    with sqlite3.connect(copy) as restored:
        restored.execute("UPDATE meta SET value = 'restored0epoch' WHERE key = 'epoch'")
    world.runner.replace_database(copy)
    transport = RecordingTransport()

    report = engine(replica, transport, page_limit=15).pull()

    assert report.epoch_changed
    assert report.pull.pages > 1
    assert report.pull.registers == 10
    # The first pull is incremental and gets the 409; the re-fetch pages follow.
    first, *refetch = transport.pull_params()
    assert first["replica"] == replica.replica_id
    assert refetch[0]["cursor"] == "0"
    assert all("replica" not in params for params in refetch)
    assert known_remote(replica) == pushed
    view = replica_statuses(replica, task_id)
    assert all(view[item] == "completed" for item in items)
    assert report.reasserted == 0


def test_pull_from_cursor_zero_sends_no_replica(world: World) -> None:
    replica = world.clone()
    task_id = world.task["id"]
    set_statuses(replica, task_id, world.item_ids[:5], "completed")
    engine(replica).sync()
    replica.set_setting("cursor", 0)
    transport = RecordingTransport()

    report = engine(replica, transport, page_limit=10).pull()

    assert report.pull.pages > 1
    assert report.pull.registers == 5
    assert all("replica" not in params for params in transport.pull_params())


def test_unanswered_push_pulls_own_values(world: World) -> None:
    proxy = FaultProxy(world.runner.port).start()
    try:
        replica = world.clone(url=proxy.url)
        task_id, item_id = world.task["id"], world.item_ids[9]
        [op_id] = set_statuses(replica, task_id, [item_id], "completed")
        proxy.add(Fault.cut_after_response_start(), path=PUSH)

        with pytest.raises(RemoteUnavailable):
            engine(replica, retry=RetryPolicy(max_attempts=1)).sync()
        assert proxy.count(FaultKind.CUT_AFTER_RESPONSE_START) == 1
    finally:
        proxy.stop()
    assert world.server_statuses()[item_id] == "completed"
    # The user drops the op, so no push can tell the replica what the server did.
    drop_op(replica, op_id)
    assert replica_statuses(replica, task_id)[item_id] is None
    transport = RecordingTransport()

    report = engine(replica, transport, url=world.url).pull()

    assert all("replica" not in params for params in transport.pull_params())
    assert report.pull.registers == 1
    assert replica_statuses(replica, task_id)[item_id] == "completed"
    assert known_remote(replica)[item_id] == server_registers(world)[item_id]


def test_dropped_unsent_op_keeps_filter(world: World) -> None:
    replica = world.clone()
    task_id = world.task["id"]
    engine(replica).sync()
    [dropped] = set_statuses(replica, task_id, [world.item_ids[11]], "completed")
    drop_op(replica, dropped)
    set_statuses(replica, task_id, [world.item_ids[12]], "discard")
    engine(replica).sync()
    transport = RecordingTransport()

    engine(replica, transport).pull()

    params = transport.pull_params()
    assert params
    assert all(p.get("replica") == replica.replica_id for p in params)
    assert world.server_statuses().get(world.item_ids[11]) is None


def test_copied_replica_learns_other_copy_writes(world: World, tmp_path: Path) -> None:
    first = world.clone("first.db")
    task_id = world.task["id"]
    second_path = tmp_path / "second.db"
    with sqlite3.connect(second_path) as copy:
        first.conn.backup(copy)
    second = Replica(second_path)
    assert second.replica_id == first.replica_id
    written = world.item_ids[20:25]
    set_statuses(first, task_id, written, "approved")
    engine(first).sync()

    # The copy syncs without ops of its own and then with one. The server
    # reports a seq for its replica id past its journal's end on the first pull.
    report = engine(second).sync()
    set_statuses(second, task_id, [world.item_ids[30]], "discard")
    later = engine(second).sync()

    assert report.new_replica_id is not None
    assert later.new_replica_id is None
    assert second.replica_id != first.replica_id
    view = replica_statuses(second, task_id)
    assert all(view[item] == "approved" for item in written)
    assert view[world.item_ids[30]] == "discard"
    assert known_remote(second) == server_registers(world)


def test_copy_without_ops_learns_other_copy_writes(
    world: World, tmp_path: Path
) -> None:
    first = world.clone("first.db")
    task_id = world.task["id"]
    set_statuses(first, task_id, world.item_ids[:2], "completed")
    engine(first).sync()
    second_path = tmp_path / "second.db"
    with sqlite3.connect(second_path) as copy:
        first.conn.backup(copy)
    second = Replica(second_path)
    written = world.item_ids[20:25]
    set_statuses(first, task_id, written, "approved")
    engine(first).sync()

    # The copy has pushed nothing since it was made, so only the seq the server
    # reports for its replica id shows that another file wrote under that id.
    report = engine(second).sync()

    assert report.new_replica_id is not None
    assert second.replica_id != first.replica_id
    view = replica_statuses(second, task_id)
    assert all(view[item] == "approved" for item in written)
    assert known_remote(second) == server_registers(world)
    again = engine(second).sync()
    assert again.new_replica_id is None


def test_replica_seq_reported_for_filtered_pull(world: World) -> None:
    replica = world.clone()
    set_statuses(replica, world.task["id"], world.item_ids[:3], "completed")
    engine(replica).sync()
    remote = LocalsyncRemote(
        replica.setting("remote_url") or "", replica.setting("token") or ""
    )
    cursor = int(replica.setting("cursor") or 0)
    dataset_id = replica.dataset_id or ""

    with remote:
        filtered = remote.pull(
            dataset_id=dataset_id,
            cursor=cursor,
            limit=10,
            epoch=None,
            replica_id=replica.replica_id,
        )
        unknown = remote.pull(
            dataset_id=dataset_id,
            cursor=cursor,
            limit=10,
            epoch=None,
            replica_id="f" * 32,
        )
        plain = remote.pull(dataset_id=dataset_id, cursor=cursor, limit=10, epoch=None)

    assert filtered.replica_seq == 3
    assert unknown.replica_seq == 0
    assert plain.replica_seq is None


# Applying pulled register changes


def test_pulled_own_value_leaves_item_unwritten(world: World) -> None:
    replica = world.clone()
    task_id, items = world.task["id"], world.item_ids[:6]
    cursor = int(replica.setting("cursor") or 0)
    replica.set_setting("clock_offset_ms", 2_000)
    set_statuses(replica, task_id, items, "completed")
    engine(replica).push()
    before = {item: item_json(replica, item) for item in items}
    wait_past_clock(replica)
    world.rest_set_status([items[0]], "discard", user=ONLINE_USER)
    remote = LocalsyncRemote(
        world.url, replica.setting("token") or "", retry=fast_retry()
    )
    with remote:
        # Without the replica id the page carries the replica's own writes back.
        page = remote.pull(
            dataset_id=replica.dataset_id or "",
            cursor=cursor,
            limit=100,
            epoch=replica.setting("epoch"),
        )

    counts = apply_page(replica, page)

    assert counts.registers == 6
    assert item_json(replica, items[0]) != before[items[0]]
    assert replica_statuses(replica, task_id)[items[0]] == "discard"
    for item in items[1:]:
        assert item_json(replica, item) == before[item], item
    assert known_remote(replica) == server_registers(world)


def test_online_clear_after_push_shows(world: World) -> None:
    replica = world.clone()
    task_id, item_id = world.task["id"], world.item_ids[11]
    set_statuses(replica, task_id, [item_id], "completed")
    engine(replica).sync()
    wait_past_clock(replica)
    world.rest_set_status([item_id], None, user=ONLINE_USER)

    report = engine(replica).sync()

    assert report.pull.registers == 1
    assert replica_statuses(replica, task_id)[item_id] is None
    assert "status" not in task_ref(replica, item_id, task_id)
    assert known_remote(replica).get(item_id) == server_registers(world).get(item_id)
