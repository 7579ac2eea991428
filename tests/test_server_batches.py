"""Set-based register writes: push batches and REST status calls on a live server.

A batch is decided in memory and written with one statement per table. These tests
compare it with the same ops applied one request at a time, replay it, kill the
server halfway through it, and check the item JSON and the array-path catalog it
leaves.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from localsync.crash_points import CRASH_ENV
from localsync.dql import array_paths_of
from localsync.hlc import Timestamp, new_node_id
from localsync.server.auth import issue_token
from localsync.server.sqlite_storage import SQLiteStorage
from localsync.server.storage import NewTask, Storage
from tests.server_fixtures import (
    BACKENDS,
    FIXTURE_PROJECT,
    FIXTURE_USER,
    LiveServer,
    database_fingerprint,
    new_storage,
    seed_dataset,
    synthetic_records,
)
from tests.sync_support import cli_env, free_port, localsync_command

STATUSES = ("completed", "approved", "discard")
REGISTER_FIELDS = ("status", "hlc", "creator", "timestamp", "source", "replicaId")


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> dict[str, Any]:
    storage = live_server.storage
    records = synthetic_records(20, folder="/b", prefix="b")
    dataset = seed_dataset(storage, records, dataset="batches")
    neighbour = seed_dataset(
        storage, synthetic_records(2, folder="/n", prefix="c"), dataset="next-door"
    )
    task = storage.create_task(
        NewTask(
            project_id=live_server.project["id"],
            dataset_id=dataset["id"],
            name="batch-review",
            statuses=STATUSES,
            query={"metadata.user.index": {"$lt": 18}},
            assignees=("ann@example.com",),
        )
    )
    return {
        "dataset": dataset,
        "neighbour": neighbour,
        "task": task,
        "items": [record["_id"] for record in records],
    }


@pytest.fixture(scope="module")
def client(live_server: LiveServer, token_factory) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=live_server.api,
        headers={"Authorization": f"Bearer {token_factory()}"},
        timeout=30,
    ) as http:
        yield http


class Replica:
    """A stand-in replica: its id and its next seq."""

    def __init__(self) -> None:
        self.replica_id = new_node_id()
        self.seq = 0

    def op(
        self, item_id: str, task_id: str, status: str | None, wall_ms: int
    ) -> dict[str, Any]:
        self.seq += 1
        return {
            "opId": str(uuid.uuid4()),
            "seq": self.seq,
            "itemId": item_id,
            "taskId": task_id,
            "status": status,
            "hlc": str(Timestamp(wall_ms, 0, self.replica_id)),
            "creator": "offline@example.com",
        }


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def push(
    client: httpx.Client,
    storage: Storage,
    replica: Replica,
    dataset_id: str,
    ops: list[dict[str, Any]],
) -> httpx.Response:
    body = {
        "replicaId": replica.replica_id,
        "epoch": storage.meta().epoch,
        "datasetId": dataset_id,
        "ops": ops,
    }
    return client.post("/sync/push", json=body)


def results_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return response.json()["results"]


def comparable(result: dict[str, Any]) -> tuple[Any, ...]:
    """Return the parts of a push result that do not name the op or the item."""
    winner = result["winner"]
    return (
        result["outcome"],
        result["reason"],
        result["hlc"],
        result["restamped"],
        tuple(winner[key] for key in winner) if winner else None,
    )


def register_values(storage: Storage, item_id: str, task_id: str) -> tuple[Any, ...]:
    register = storage.register(item_id, task_id)
    assert register is not None
    return tuple(register[field] for field in REGISTER_FIELDS)


def history_values(storage: Storage, item_id: str, task_id: str) -> list[tuple]:
    return [
        (row["status"], row["hlc"], row["outcome"], row["source"], row["restamped"])
        for row in storage.register_history(item_id, task_id)
    ]


def ref_statuses(storage: Storage, item_id: str) -> list[str | None]:
    item = storage.item(item_id)
    assert item is not None
    refs = item["metadata"]["system"]["refs"]
    return [(ref.get("metadata") or {}).get("status") for ref in refs]


def feed_cursor(storage: Storage, dataset_id: str) -> int:
    return storage.pull(dataset_id, cursor=0, limit=5000).cursor


def register_feed(storage: Storage, dataset_id: str, cursor: int) -> list[str]:
    changes = storage.pull(dataset_id, cursor=cursor, limit=5000).changes
    return [change["id"] for change in changes if change["kind"] == "register"]


# Last-write-wins within one batch.

# (status, wall-clock offset in ms, register): two registers, written in turns.
SEQUENCE = [
    ("completed", 0, 0),
    ("discard", 100, 1),
    ("discard", -5_000, 0),
    ("approved", 3_000, 0),
    ("completed", 50, 1),
    (None, 1_000, 0),
    ("discard", 4_000, 0),
]


def test_repeated_registers_match_sequential(client, live_server, world) -> None:
    storage, task_id = live_server.storage, world["task"]["id"]
    dataset_id = world["dataset"]["id"]
    batched, one_by_one = world["items"][0:2], world["items"][2:4]
    replica = Replica()
    base = now_ms()
    cursor = feed_cursor(storage, dataset_id)

    batch_ops = [
        replica.op(batched[register], task_id, status, base + offset)
        for status, offset, register in SEQUENCE
    ]
    batch_results = results_of(push(client, storage, replica, dataset_id, batch_ops))
    middle = feed_cursor(storage, dataset_id)
    single_results = []
    for status, offset, register in SEQUENCE:
        op = replica.op(one_by_one[register], task_id, status, base + offset)
        single_results += results_of(push(client, storage, replica, dataset_id, [op]))

    outcomes = [result["outcome"] for result in batch_results]
    assert outcomes == [
        "applied",
        "applied",
        "superseded",
        "applied",
        "superseded",
        "superseded",
        "applied",
    ]
    assert batch_results[2]["winner"]["status"] == "completed"
    assert batch_results[5]["winner"]["status"] == "approved"
    assert [comparable(r) for r in batch_results] == [
        comparable(r) for r in single_results
    ]
    for mine, theirs in zip(batched, one_by_one, strict=True):
        assert register_values(storage, mine, task_id) == register_values(
            storage, theirs, task_id
        )
        assert history_values(storage, mine, task_id) == history_values(
            storage, theirs, task_id
        )
        assert ref_statuses(storage, mine) == ref_statuses(storage, theirs)
    assert ref_statuses(storage, batched[0]) == ["discard", "discard"]
    assert ref_statuses(storage, batched[1]) == ["discard", "discard"]
    # Each register has one feed row, in the order of its last applied write.
    assert register_feed(storage, dataset_id, cursor)[:2] == [
        f"{batched[1]}:{task_id}",
        f"{batched[0]}:{task_id}",
    ]
    assert register_feed(storage, dataset_id, middle) == [
        f"{one_by_one[1]}:{task_id}",
        f"{one_by_one[0]}:{task_id}",
    ]


def test_restamped_op_wins_in_batch(client, live_server, world) -> None:
    storage, task_id = live_server.storage, world["task"]["id"]
    item_id = world["items"][4]
    replica = Replica()
    base = now_ms()
    ops = [
        replica.op(item_id, task_id, "approved", base + 3_600_000),
        replica.op(item_id, task_id, "discard", base - 60_000),
    ]

    results = results_of(push(client, storage, replica, world["dataset"]["id"], ops))

    assert results[0]["restamped"] is True
    assert results[0]["outcome"] == "applied"
    assert results[1]["outcome"] == "superseded"
    assert results[1]["winner"]["hlc"] == results[0]["hlc"]
    assert storage.register(item_id, task_id)["status"] == "approved"
    history = storage.register_history(item_id, task_id)
    assert [row["restamped"] for row in history] == [True, False]


def test_rejections_keep_history_rules(client, live_server, world) -> None:
    storage, task_id = live_server.storage, world["task"]["id"]
    neighbour_item = f"c{0:023x}"
    unknown_item = "f" * 24
    replica = Replica()
    base = now_ms()
    ops = [
        replica.op(neighbour_item, task_id, "completed", base),
        replica.op(unknown_item, task_id, "completed", base + 1),
        replica.op(world["items"][5], task_id, "completed", base + 2),
        replica.op(world["items"][5], task_id, "needs-review", base + 3),
    ]

    results = results_of(push(client, storage, replica, world["dataset"]["id"], ops))

    assert [r["outcome"] for r in results] == [
        "rejected",
        "rejected",
        "applied",
        "rejected",
    ]
    assert results[0]["winner"] is None
    assert results[0]["reason"] == results[1]["reason"].replace(
        unknown_item, neighbour_item
    )
    assert results[3]["winner"]["status"] == "completed"
    assert storage.register_history(neighbour_item, task_id) == []
    [unknown] = storage.register_history(unknown_item, task_id)
    assert unknown["outcome"] == "rejected"
    outcomes = [
        row["outcome"] for row in storage.register_history(world["items"][5], task_id)
    ]
    assert outcomes == ["applied", "rejected"]


# Exactly once.


def test_replayed_batch_changes_nothing(client, live_server, world) -> None:
    storage, task_id = live_server.storage, world["task"]["id"]
    dataset_id = world["dataset"]["id"]
    item_ids = world["items"][6:9]
    replica = Replica()
    base = now_ms()
    ops = [
        replica.op(item_ids[0], task_id, "completed", base),
        replica.op(item_ids[1], task_id, "approved", base + 1),
        replica.op(item_ids[0], task_id, "discard", base + 2),
        replica.op("f" * 24, task_id, "completed", base + 3),
        replica.op(item_ids[2], task_id, "completed", base + 4),
        replica.op(item_ids[0], task_id, "approved", base - 10_000),
    ]
    first = results_of(push(client, storage, replica, dataset_id, ops[:3]))

    whole = results_of(push(client, storage, replica, dataset_id, ops))
    before = database_fingerprint(storage)
    again = results_of(push(client, storage, replica, dataset_id, ops))

    assert whole[:3] == first
    assert [r["outcome"] for r in whole[3:]] == ["rejected", "applied", "superseded"]
    assert again == whole
    assert database_fingerprint(storage) == before
    history = storage.register_history(item_ids[0], task_id)
    assert [row["opId"] for row in history] == [
        ops[0]["opId"],
        ops[2]["opId"],
        ops[5]["opId"],
    ]


def test_seq_twice_in_batch(client, live_server, world) -> None:
    storage, task_id = live_server.storage, world["task"]["id"]
    dataset_id = world["dataset"]["id"]
    item_id = world["items"][9]
    replica = Replica()
    op = replica.op(item_id, task_id, "completed", now_ms())

    results = results_of(push(client, storage, replica, dataset_id, [op, op]))

    assert results[0] == results[1]
    assert results[0]["outcome"] == "applied"
    assert len(storage.register_history(item_id, task_id)) == 1

    before = database_fingerprint(storage)
    fresh = replica.op(world["items"][10], task_id, "approved", now_ms())
    changed = dict(fresh, status="discard")
    response = push(client, storage, replica, dataset_id, [fresh, changed])

    assert response.status_code == 409
    assert response.json()["code"] == "seq_conflict"
    assert database_fingerprint(storage) == before
    assert storage.register(world["items"][10], task_id) is None


def test_rest_batch_writes_each_item_once(client, live_server, world) -> None:
    storage, task_id = live_server.storage, world["task"]["id"]
    first, second = world["items"][11], world["items"][12]
    outside = world["items"][19]  # metadata.user.index 19 is not in the task

    response = client.post(
        f"/assignments/items/tasks/{task_id}/status",
        json={
            "itemIds": [first, second, first, outside],
            "statusPayload": {"operation": "create", "status": "approved"},
        },
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {first, second}
    assert body[first]["outcome"] == "applied"
    assert body[first]["lastStatus"] is None
    assert body[first]["hlc"] < body[second]["hlc"]
    assert len(storage.register_history(first, task_id)) == 1
    assert storage.register(first, task_id)["source"] == "rest"
    assert ref_statuses(storage, first) == ["approved", "approved"]
    assert storage.register(outside, task_id) is None


# Item JSON and the array-path catalog.


def stored_array_paths(storage: Storage, dataset_id: str) -> frozenset[str]:
    if isinstance(storage, SQLiteStorage):
        from localsync.server.sqlite_rows import array_paths
    else:
        from localsync.server.postgres_rows import array_paths
    with storage.db.read() as connection:
        return array_paths(connection, dataset_id, "item")


def without_register_fields(item: dict[str, Any]) -> dict[str, Any]:
    system = dict(item["metadata"]["system"])
    system.pop("refs")
    system.pop("annotationStatus")
    return {**item, "metadata": {**item["metadata"], "system": system}}


def test_status_write_changes_only_refs(client, live_server, world) -> None:
    storage, task_id = live_server.storage, world["task"]["id"]
    item_id = world["items"][13]
    before = storage.item(item_id)
    replica = Replica()
    op = replica.op(item_id, task_id, "discard", now_ms())

    results_of(push(client, storage, replica, world["dataset"]["id"], [op]))

    after = storage.item(item_id)
    assert without_register_fields(after) == without_register_fields(before)
    assert after["metadata"]["system"]["annotationStatus"] == ["discard"]
    assert ref_statuses(storage, item_id) == ["discard", "discard"]
    if isinstance(storage, SQLiteStorage):
        from localsync.dql.rows import stale_projections

        with storage.db.read() as connection:
            assert stale_projections(connection) == []


def query_ids(client: httpx.Client, dataset_id: str, query_filter: dict) -> set[str]:
    response = client.post(
        f"/datasets/{dataset_id}/query",
        json={"resource": "items", "filter": query_filter, "page": 0, "pageSize": 100},
    )
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def test_new_array_path_queryable_after_writes(client, live_server, world) -> None:
    storage, task_id = live_server.storage, world["task"]["id"]
    dataset_id = world["dataset"]["id"]
    written = world["items"][14:16]
    client.post(
        f"/assignments/items/tasks/{task_id}/status",
        json={
            "itemIds": written,
            "statusPayload": {"operation": "create", "status": "completed"},
        },
    )
    tagged = synthetic_records(2, folder="/b", prefix="d")
    tagged[0]["itemMetadata"]["user"]["tags"] = ["red", "blue"]
    tagged[1]["itemMetadata"]["user"]["tags"] = [{"name": "green"}]

    seed_dataset(storage, tagged, dataset="batches")

    catalog = stored_array_paths(storage, dataset_id)
    for item_id in world["items"] + [record["_id"] for record in tagged]:
        assert array_paths_of(storage.item(item_id)) <= catalog
    assert query_ids(client, dataset_id, {"metadata.user.tags": "red"}) == {
        tagged[0]["_id"]
    }
    assert query_ids(client, dataset_id, {"metadata.user.tags.name": "green"}) == {
        tagged[1]["_id"]
    }
    completed = query_ids(
        client, dataset_id, {"metadata.system.annotationStatus": "completed"}
    )
    assert set(written) <= completed


# A crash halfway through a batch, on a server process of its own.


@contextmanager
def serving(database: str, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``localsync serve`` over ``database``; yield its API URL and process."""
    port = free_port()
    process = subprocess.Popen(
        localsync_command("serve", "--db", database, "--port", str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(**env),
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(api):
            assert process.poll() is None, "localsync serve exited at start"
            assert time.monotonic() < deadline, "localsync serve did not start"
            time.sleep(0.1)
        yield api, process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("backend", BACKENDS)
def test_crash_mid_batch_leaves_nothing(tmp_path: Path, backend: str) -> None:
    with new_storage(backend, tmp_path) as storage:
        project = storage.ensure_project(FIXTURE_PROJECT, creator="admin@localsync")
        records = synthetic_records(6, folder="/k", prefix="a")
        dataset = seed_dataset(storage, records, dataset="crash")
        task = storage.create_task(
            NewTask(
                project_id=project["id"],
                dataset_id=dataset["id"],
                name="crash-review",
                statuses=STATUSES,
            )
        )
        token = issue_token(
            storage.meta().secret, email=FIXTURE_USER, project_ids=[project["id"]]
        )
        database = str(storage.db.path) if backend == "sqlite" else storage.db.url
        replica = Replica()
        ops = [
            replica.op(record["_id"], task["id"], "completed", now_ms())
            for record in records
        ]
        before = database_fingerprint(storage)

        crash = {CRASH_ENV: "server-push-applying"}
        with serving(database, **crash) as (api, process):
            with pytest.raises(httpx.TransportError):
                httpx.post(
                    f"{api}/sync/push",
                    headers={"Authorization": f"Bearer {token}"},
                    json={
                        "replicaId": replica.replica_id,
                        "epoch": storage.meta().epoch,
                        "datasetId": dataset["id"],
                        "ops": ops,
                    },
                    timeout=30,
                )

            process.wait(timeout=30)

        assert process.returncode == -signal.SIGKILL
        assert database_fingerprint(storage) == before
        for record in records:
            assert storage.register(record["_id"], task["id"]) is None
