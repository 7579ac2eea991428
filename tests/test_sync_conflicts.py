"""Conflicts between an offline replica and the real dtlpy client writing online, and
the commands that work on ops afterwards: conflicts, retry, revert, drop, history.

Times are simulated with the replica's clock offset: "A writes at t=10 s, dtlpy at
t=20 s" is an op stamped 10 s in the past, then a dtlpy call now.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from localsync.cli import main
from localsync.server.auth import issue_token
from localsync.store import Replica
from localsync.sync import SyncEngine, open_remote
from tests.server_fixtures import LOOPBACK_ENV, connect_dtlpy, install_loopback_guard
from tests.sync_support import (
    DATASET,
    PROJECT,
    World,
    fast_retry,
    journal_states,
    make_world,
    replica_statuses,
    set_statuses,
    wait_past_clock,
)

ONLINE_USER = "online@example.com"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    # One server per test: an op stamped ahead moves the server's clock ahead too,
    # which would reorder the writes of the next test.
    world = make_world(tmp_path, 10)
    yield world
    world.runner.close()


@pytest.fixture(scope="module")
def dataloop_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dataloop")


@pytest.fixture
def dl(world: World, dataloop_home: Path) -> Iterator[ModuleType]:
    """The real dtlpy, logged in to the world's server as an online user."""
    install_loopback_guard()
    token = issue_token(
        world.storage.meta().secret,
        email=ONLINE_USER,
        project_ids=[world.project["id"]],
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in LOOPBACK_ENV.items():
            patch.setenv(name, value)
        patch.chdir(dataloop_home)
        yield connect_dtlpy(f"{world.url}/api/v1", token, dataloop_home)


@pytest.fixture
def replica(world: World, tmp_path: Path) -> Iterator[Replica]:
    replica = world.clone(name="a.db")
    yield replica
    replica.close()


def sync(replica: Replica):
    with open_remote(replica, retry=fast_retry()) as remote:
        return SyncEngine(replica, remote).sync()


def online_status(dl: ModuleType, item_id: str, status: str, task_id: str) -> None:
    dataset = dl.projects.get(project_name=PROJECT).datasets.get(dataset_name=DATASET)
    dataset.items.get(item_id=item_id).update_status(status=status, task_id=task_id)


def cli(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_later_online_write_wins(
    world: World, dl: ModuleType, replica: Replica
) -> None:
    task_id, item_id = world.task["id"], world.item_ids[0]
    replica.set_setting("clock_offset_ms", -10_000)  # A writes at t=10 s
    op_id = set_statuses(replica, task_id, [item_id], "completed")[0]
    wait_past_clock(replica)
    online_status(dl, item_id, dl.ItemStatus.DISCARDED, task_id)  # dtlpy at t=20 s

    report = sync(replica)  # A pushes at t=30 s

    assert report.push.superseded == 1
    assert world.server_statuses()[item_id] == "discard"
    assert replica_statuses(replica, task_id)[item_id] == "discard"
    listed = cli("conflicts", "--store", str(replica.path), "--format", "json")
    conflicts = json.loads(listed.output)["conflicts"]
    assert [c["opId"] for c in conflicts] == [op_id]
    assert conflicts[0]["local"]["status"] == "completed"
    assert conflicts[0]["winner"] == {
        "status": "discard",
        "hlc": conflicts[0]["winner"]["hlc"],
        "creator": ONLINE_USER,
        "source": "rest",
        "replicaId": None,
    }
    assert conflicts[0]["winner"]["hlc"] > conflicts[0]["local"]["hlc"]
    dl_item = dl.items.get(item_id=item_id)
    assert dl_item.status(task_id=task_id) == "discard"


def test_later_offline_write_wins(
    world: World, dl: ModuleType, replica: Replica
) -> None:
    task_id, item_id = world.task["id"], world.item_ids[1]
    online_status(dl, item_id, dl.ItemStatus.DISCARDED, task_id)  # dtlpy at t=10 s
    replica.set_setting("clock_offset_ms", 10_000)  # A writes at t=20 s, offline
    set_statuses(replica, task_id, [item_id], "completed")

    report = sync(replica)  # A pushes at t=30 s

    assert report.push.applied == 1
    assert report.conflicts == 0
    assert world.server_statuses()[item_id] == "completed"
    assert replica_statuses(replica, task_id)[item_id] == "completed"
    history = world.storage.register_history(item_id, task_id)
    assert [(h["status"], h["source"]) for h in history] == [
        ("discard", "rest"),
        ("completed", "replica"),
    ]
    assert dl.items.get(item_id=item_id).status(task_id=task_id) == "completed"


def test_history_lists_local_and_remote_writes(
    world: World, dl: ModuleType, replica: Replica
) -> None:
    task_id, item_id = world.task["id"], world.item_ids[2]
    online_status(dl, item_id, "approved", task_id)
    # Earlier tests leave the server's HLC ahead of wall time, so the local write
    # is stamped a minute later to be later than the online one whatever ran first.
    replica.set_setting("clock_offset_ms", 60_000)
    set_statuses(replica, task_id, [item_id], "completed")
    sync(replica)

    result = cli("history", item_id, "--store", str(replica.path), "--format", "json")

    body = json.loads(result.output)
    local = [w for w in body["writes"] if w["localState"] is not None]
    assert [(w["status"], w["localState"]) for w in local] == [("completed", "applied")]
    # The remote keeps a history: the online write shows up too, and the
    # replica's op appears once, merged with the remote's record of it.
    assert body["note"] is None
    assert [(w["status"], w["source"]) for w in body["writes"]] == [
        ("approved", "rest"),
        ("completed", "replica"),
    ]
    assert local[0]["outcome"] == "applied"


def test_retry_reasserts_superseded_op(world: World, replica: Replica) -> None:
    task_id, item_id = world.task["id"], world.item_ids[3]
    replica.set_setting("clock_offset_ms", -60_000)
    op_id = set_statuses(replica, task_id, [item_id], "completed")[0]
    wait_past_clock(replica)
    world.rest_set_status([item_id], "discard")
    sync(replica)
    replica.set_setting("clock_offset_ms", 0)

    result = cli("retry", op_id[:8], "--store", str(replica.path))

    assert result.exit_code == 0, result.output
    assert "Journaled op" in result.output
    new_op = replica.journal(limit=1)[0]
    assert new_op["origin_op_id"] == op_id
    assert new_op["state"] == "pending"
    assert replica_statuses(replica, task_id)[item_id] == "completed"
    assert sync(replica).push.applied == 1
    assert world.server_statuses()[item_id] == "completed"
    conflicts = json.loads(
        cli("conflicts", "--store", str(replica.path), "--format", "json").output
    )["conflicts"]
    assert conflicts[0]["followedBy"] == [new_op["op_id"]]


def test_revert_restores_previous_value(world: World, replica: Replica) -> None:
    task_id, item_id = world.task["id"], world.item_ids[4]
    set_statuses(replica, task_id, [item_id], "approved")
    sync(replica)
    op_id = set_statuses(replica, task_id, [item_id], "discard")[0]
    sync(replica)

    result = cli("revert", op_id, "--store", str(replica.path))

    assert result.exit_code == 0, result.output
    assert "restoring 'approved'" in result.output
    assert replica_statuses(replica, task_id)[item_id] == "approved"
    sync(replica)
    assert world.server_statuses()[item_id] == "approved"


def test_revert_of_first_write_clears(world: World, replica: Replica) -> None:
    task_id, item_id = world.task["id"], world.item_ids[5]
    op_id = set_statuses(replica, task_id, [item_id], "completed")[0]

    result = cli("revert", op_id, "--store", str(replica.path))

    assert result.exit_code == 0, result.output
    assert "restoring no status" in result.output
    assert replica_statuses(replica, task_id)[item_id] is None
    sync(replica)
    assert world.server_statuses()[item_id] is None


def test_drop_pending_op_recomputes_view(world: World, replica: Replica) -> None:
    task_id, item_id = world.task["id"], world.item_ids[6]
    world.rest_set_status([item_id], "approved")
    sync(replica)
    op_id = set_statuses(replica, task_id, [item_id], "discard")[0]
    assert replica_statuses(replica, task_id)[item_id] == "discard"

    result = cli("drop", op_id, "--store", str(replica.path))

    assert result.exit_code == 0, result.output
    assert replica.journal(limit=1)[0]["state"] == "dropped"
    assert replica_statuses(replica, task_id)[item_id] == "approved"
    assert sync(replica).push.pushed == 0
    assert world.server_statuses()[item_id] == "approved"


@pytest.mark.parametrize(
    ("command", "state_wanted", "message"),
    [
        ("retry", "applied", "only rejected or superseded ops can be retried"),
        (
            "drop",
            "applied",
            "only pending or rejected ops can be dropped; use 'localsync revert",
        ),
        ("revert", "dropped", "never took effect"),
    ],
)
def test_op_command_rejects_wrong_state(
    world: World, replica: Replica, command: str, state_wanted: str, message: str
) -> None:
    task_id, item_id = world.task["id"], world.item_ids[7]
    op_id = set_statuses(replica, task_id, [item_id], "completed")[0]
    if state_wanted == "applied":
        sync(replica)
    else:
        cli("drop", op_id, "--store", str(replica.path))
    before = journal_states(replica)

    result = CliRunner().invoke(main, [command, op_id, "--store", str(replica.path)])

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert message in result.stderr
    assert op_id in result.stderr
    assert journal_states(replica) == before


@pytest.mark.parametrize(
    ("op_id", "message"),
    [
        ("abc", "is too short"),
        ("ffffffffffffffff", "not found in the journal"),
    ],
)
def test_op_command_rejects_bad_op_id(
    replica: Replica, op_id: str, message: str
) -> None:
    for command in ("retry", "revert", "drop"):
        result = CliRunner().invoke(
            main, [command, op_id, "--store", str(replica.path)]
        )
        assert result.exit_code == 1
        assert message in result.stderr
        assert repr(op_id) in result.stderr
    assert journal_states(replica) == {}
