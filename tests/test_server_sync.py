"""The sync protocol over HTTP: push (LWW, exactly once, errors) and pull paging."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from localsync.hlc import Timestamp, new_node_id
from localsync.schema_files import schema_dir
from localsync.server.registers import PULL_SCAN_FACTOR
from localsync.server.storage import NewTask
from tests.server_fixtures import (
    LiveServer,
    database_fingerprint,
    seed_dataset,
    synthetic_records,
)

STATUSES = ("completed", "approved", "discard")


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> dict[str, Any]:
    storage = live_server.storage
    records = synthetic_records(30, folder="/s", prefix="d")
    dataset = seed_dataset(storage, records, dataset="sync")
    neighbour = seed_dataset(
        storage, synthetic_records(2, folder="/n", prefix="e"), dataset="neighbour"
    )
    task = storage.create_task(
        NewTask(
            project_id=live_server.project["id"],
            dataset_id=dataset["id"],
            name="review",
            statuses=STATUSES,
            query={"$and": [{"dir": "/s"}, {"metadata.user.index": {"$lt": 25}}]},
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
def client(live_server: LiveServer, token_factory) -> httpx.Client:
    with httpx.Client(
        base_url=live_server.api,
        headers={"Authorization": f"Bearer {token_factory()}"},
        timeout=30,
    ) as http:
        yield http


class Replica:
    """A stand-in replica: its id, its next seq and an HLC node."""

    def __init__(self) -> None:
        self.replica_id = new_node_id()
        self.seq = 0

    def op(
        self,
        item_id: str,
        task_id: str,
        status: str | None,
        *,
        offset_ms: int = 0,
        seq: int | None = None,
    ) -> dict[str, Any]:
        if seq is None:
            self.seq += 1
            seq = self.seq
        wall = time.time_ns() // 1_000_000 + offset_ms
        return {
            "opId": str(uuid.uuid4()),
            "seq": seq,
            "itemId": item_id,
            "taskId": task_id,
            "status": status,
            "hlc": str(Timestamp(wall, 0, self.replica_id)),
            "creator": "offline@example.com",
        }


def push(
    client: httpx.Client,
    live_server: LiveServer,
    replica: Replica,
    dataset_id: str,
    ops: list[dict[str, Any]],
    *,
    epoch: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {
        "replicaId": replica.replica_id,
        "epoch": epoch or live_server.storage.meta().epoch,
        "datasetId": dataset_id,
        "ops": ops,
    }
    return client.post("/sync/push", json=body, headers=headers)


def results_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return response.json()["results"]


def ref_statuses(live_server: LiveServer, item_id: str) -> list[str | None]:
    item = live_server.storage.item(item_id)
    assert item is not None
    refs = item["metadata"]["system"]["refs"]
    return [(ref.get("metadata") or {}).get("status") for ref in refs]


def test_push_applies_op(client, live_server, world) -> None:
    replica = Replica()
    item_id, task_id = world["items"][0], world["task"]["id"]
    op = replica.op(item_id, task_id, "completed")

    response = push(client, live_server, replica, world["dataset"]["id"], [op])

    [result] = results_of(response)
    assert result["outcome"] == "applied"
    assert result["hlc"] == op["hlc"]
    assert result["restamped"] is False
    assert result["winner"]["status"] == "completed"
    assert result["winner"]["source"] == "replica"
    assert result["winner"]["replicaId"] == replica.replica_id
    assert ref_statuses(live_server, item_id) == ["completed", "completed"]
    register = live_server.storage.register(item_id, task_id)
    # The op names offline@example.com; the token's user is recorded instead.
    assert register["creator"] == "annotator@example.com"
    assert result["winner"]["creator"] == "annotator@example.com"
    history = live_server.storage.register_history(item_id, task_id)
    assert [(h["source"], h["outcome"], h["opId"]) for h in history] == [
        ("replica", "applied", op["opId"])
    ]


def test_push_clear_op(client, live_server, world) -> None:
    replica = Replica()
    item_id, task_id = world["items"][1], world["task"]["id"]
    ops = [
        replica.op(item_id, task_id, "approved", offset_ms=-10),
        replica.op(item_id, task_id, None),
    ]
    results = results_of(
        push(client, live_server, replica, world["dataset"]["id"], ops)
    )
    assert [r["outcome"] for r in results] == ["applied", "applied"]
    assert results[1]["winner"]["status"] is None
    assert ref_statuses(live_server, item_id) == [None, None]
    assert (
        live_server.storage.item(item_id)["metadata"]["system"]["annotationStatus"]
        == []
    )


def test_older_op_is_superseded(client, live_server, world) -> None:
    item_id, task_id = world["items"][2], world["task"]["id"]
    rest = client.post(
        f"/assignments/items/tasks/{task_id}/status",
        json={
            "itemIds": [item_id],
            "statusPayload": {"operation": "create", "status": "discard"},
        },
    )
    assert rest.status_code == 200
    replica = Replica()
    op = replica.op(item_id, task_id, "completed", offset_ms=-60_000)

    [result] = results_of(
        push(client, live_server, replica, world["dataset"]["id"], [op])
    )

    assert result["outcome"] == "superseded"
    assert result["winner"]["status"] == "discard"
    assert result["winner"]["source"] == "rest"
    assert ref_statuses(live_server, item_id) == ["discard", "discard"]
    outcomes = [
        h["outcome"] for h in live_server.storage.register_history(item_id, task_id)
    ]
    assert outcomes == ["applied", "superseded"]


def test_newer_op_beats_rest_write(client, live_server, world) -> None:
    item_id, task_id = world["items"][3], world["task"]["id"]
    client.post(
        f"/assignments/items/tasks/{task_id}/status",
        json={
            "itemIds": [item_id],
            "statusPayload": {"operation": "create", "status": "discard"},
        },
    )
    replica = Replica()
    op = replica.op(item_id, task_id, "approved", offset_ms=60_000)
    [result] = results_of(
        push(client, live_server, replica, world["dataset"]["id"], [op])
    )
    assert result["outcome"] == "applied"
    assert ref_statuses(live_server, item_id) == ["approved", "approved"]


def test_retried_batch_changes_nothing(client, live_server, world) -> None:
    replica = Replica()
    task_id = world["task"]["id"]
    ops = [replica.op(world["items"][i], task_id, "completed") for i in (4, 5, 6)]
    first = results_of(push(client, live_server, replica, world["dataset"]["id"], ops))
    before = database_fingerprint(live_server.storage)

    again = results_of(push(client, live_server, replica, world["dataset"]["id"], ops))

    assert again == first
    assert database_fingerprint(live_server.storage) == before


def test_seq_conflict_is_409(client, live_server, world) -> None:
    replica = Replica()
    task_id = world["task"]["id"]
    op = replica.op(world["items"][7], task_id, "completed")
    results_of(push(client, live_server, replica, world["dataset"]["id"], [op]))
    before = database_fingerprint(live_server.storage)
    fresh = replica.op(world["items"][8], task_id, "approved")
    other = dict(op, status="discard")

    response = push(
        client, live_server, replica, world["dataset"]["id"], [fresh, other]
    )

    assert response.status_code == 409
    assert response.json()["code"] == "seq_conflict"
    assert "new replica id" in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before
    assert ref_statuses(live_server, world["items"][8]) == [None, None]


def test_epoch_mismatch_is_409(client, live_server, world) -> None:
    replica = Replica()
    op = replica.op(world["items"][9], world["task"]["id"], "completed")
    before = database_fingerprint(live_server.storage)

    response = push(
        client, live_server, replica, world["dataset"]["id"], [op], epoch="0" * 32
    )

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "epoch_mismatch"
    assert body["epoch"] == live_server.storage.meta().epoch
    assert database_fingerprint(live_server.storage) == before

    pulled = client.get(
        "/sync/pull", params={"dataset": world["dataset"]["id"], "epoch": "0" * 32}
    )
    assert pulled.status_code == 409
    assert pulled.json()["code"] == "epoch_mismatch"


def test_batch_over_limit_is_413(client, live_server, world) -> None:
    replica = Replica()
    ops = [
        replica.op(world["items"][10], world["task"]["id"], "completed")
        for _ in range(1001)
    ]
    before = database_fingerprint(live_server.storage)

    response = push(client, live_server, replica, world["dataset"]["id"], ops)

    assert response.status_code == 413
    assert "1000" in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before


def test_replica_of_another_user_is_403(
    client, live_server, world, token_factory
) -> None:
    replica = Replica()
    task_id = world["task"]["id"]
    first = replica.op(world["items"][11], task_id, "completed")
    results_of(push(client, live_server, replica, world["dataset"]["id"], [first]))
    before = database_fingerprint(live_server.storage)
    other_user = {
        "Authorization": f"Bearer {token_factory(email='intruder@example.com')}"
    }
    second = replica.op(world["items"][12], task_id, "completed")

    response = push(
        client,
        live_server,
        replica,
        world["dataset"]["id"],
        [second],
        headers=other_user,
    )

    assert response.status_code == 403
    assert replica.replica_id in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before


def test_token_for_another_project_is_403(
    client, live_server, world, token_factory
) -> None:
    outsider = {"Authorization": f"Bearer {token_factory(projects=['f' * 24])}"}
    replica = Replica()
    op = replica.op(world["items"][13], world["task"]["id"], "completed")
    before = database_fingerprint(live_server.storage)

    pushed = push(
        client, live_server, replica, world["dataset"]["id"], [op], headers=outsider
    )
    pulled = client.get(
        "/sync/pull", params={"dataset": world["dataset"]["id"]}, headers=outsider
    )

    assert pushed.status_code == 403
    assert pulled.status_code == 403
    assert database_fingerprint(live_server.storage) == before


def test_far_future_op_is_restamped(client, live_server, world) -> None:
    replica = Replica()
    item_id, task_id = world["items"][14], world["task"]["id"]
    op = replica.op(item_id, task_id, "approved", offset_ms=3_600_000)

    [result] = results_of(
        push(client, live_server, replica, world["dataset"]["id"], [op])
    )

    assert result["outcome"] == "applied"
    assert result["restamped"] is True
    recorded = Timestamp.parse(result["hlc"])
    assert recorded.node == live_server.storage.meta().node_id
    assert abs(recorded.wall_ms - time.time_ns() // 1_000_000) < 60_000
    assert live_server.storage.register(item_id, task_id)["hlc"] == result["hlc"]
    [entry] = live_server.storage.register_history(item_id, task_id)
    assert entry["restamped"] is True


def test_near_future_op_moves_server_clock(client, live_server, world) -> None:
    replica = Replica()
    task_id = world["task"]["id"]
    op = replica.op(world["items"][15], task_id, "approved", offset_ms=120_000)
    [result] = results_of(
        push(client, live_server, replica, world["dataset"]["id"], [op])
    )
    assert result["restamped"] is False

    rest = client.post(
        f"/assignments/items/tasks/{task_id}/status",
        json={
            "itemIds": [world["items"][16]],
            "statusPayload": {"operation": "create", "status": "completed"},
        },
    )
    assert rest.json()[world["items"][16]]["hlc"] > op["hlc"]


def test_permanent_rejections(client, live_server, world) -> None:
    replica = Replica()
    task_id = world["task"]["id"]
    not_in_task = world["items"][27]
    neighbour_item = f"e{0:023x}"
    ops = [
        replica.op("ffffffffffffffffffffffff", task_id, "completed"),
        replica.op(neighbour_item, task_id, "completed"),
        replica.op(world["items"][17], "0" * 24, "completed"),
        replica.op(world["items"][17], task_id, "needs_review"),
        replica.op(not_in_task, task_id, "completed"),
        replica.op(world["items"][18], task_id, "completed"),
    ]

    results = results_of(
        push(client, live_server, replica, world["dataset"]["id"], ops)
    )

    outcomes = [r["outcome"] for r in results]
    assert outcomes == ["rejected"] * 5 + ["applied"]
    reasons = [r["reason"] for r in results]
    assert "not found" in reasons[0]
    assert "another dataset" in reasons[1]
    assert reasons[2].startswith("Task ")
    assert "not found" in reasons[2]
    assert "completed, approved, discard" in reasons[3]
    assert "is not in task" in reasons[4]
    assert reasons[5] is None
    assert ref_statuses(live_server, world["items"][17]) == [None, None]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"replicaId": "not-hex"}, "replicaId"),
        ({"replicaId": "a" * 32 + "\n"}, "replicaId"),
        ({"ops": "nope"}, "ops"),
        ({"datasetId": ""}, "datasetId"),
        ({"ops": [{"seq": 0}]}, "seq"),
        ({"ops": [{"seq": 1, "hlc": "yesterday", "status": "completed"}]}, "hlc"),
        ({"ops": [{"seq": 1, "hlc": "000000000000001-000000-" + "a" * 32}]}, "status"),
    ],
)
def test_bad_push_body_is_400(client, live_server, world, change, expected) -> None:
    body = {
        "replicaId": new_node_id(),
        "epoch": live_server.storage.meta().epoch,
        "datasetId": world["dataset"]["id"],
        "ops": [],
        **change,
    }
    before = database_fingerprint(live_server.storage)
    response = client.post("/sync/push", json=body)
    assert response.status_code == 400
    assert expected in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before


def test_malformed_push_json_is_400(client, live_server) -> None:
    before = database_fingerprint(live_server.storage)
    response = client.post(
        "/sync/push", content=b'{"ops": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({}, 400),
        ({"dataset": "DATASET", "cursor": "-1"}, 400),
        ({"dataset": "DATASET", "cursor": "x"}, 400),
        ({"dataset": "DATASET", "limit": "0"}, 400),
        ({"dataset": "DATASET", "limit": "5001"}, 400),
        ({"dataset": "0" * 24}, 404),
    ],
)
def test_bad_pull_parameters(client, world, params, status) -> None:
    dataset_id = world["dataset"]["id"]
    query = {key: value.replace("DATASET", dataset_id) for key, value in params.items()}
    response = client.get("/sync/pull", params=query)
    assert response.status_code == status
    assert response.json()["message"]


@pytest.mark.parametrize(
    "value",
    ["not-hex", "A" * 32, "a" * 31, "a" * 33, "a" * 32 + "\n", "g" * 32],
)
def test_bad_pull_replica_is_400(client, live_server, world, value) -> None:
    before = database_fingerprint(live_server.storage)

    response = client.get(
        "/sync/pull", params={"dataset": world["dataset"]["id"], "replica": value}
    )

    assert response.status_code == 400
    message = response.json()["message"]
    assert "replica=" in message
    assert "32 lowercase hex digits" in message
    assert database_fingerprint(live_server.storage) == before


def pull_pages(
    client: httpx.Client,
    dataset_id: str,
    cursor: int,
    limit: int,
    *,
    replica_id: str | None = None,
) -> list[dict[str, Any]]:
    """Pull from ``cursor`` until ``hasMore`` is false; return every page."""
    params: dict[str, Any] = {"dataset": dataset_id, "limit": limit}
    if replica_id is not None:
        params["replica"] = replica_id
    pages: list[dict[str, Any]] = []
    for _ in range(1000):
        response = client.get("/sync/pull", params={**params, "cursor": cursor})
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        cursor = page["cursor"]
        if not page["hasMore"]:
            return pages
    raise AssertionError("pull did not finish")


def pull_all(
    client: httpx.Client, dataset_id: str, cursor: int, limit: int
) -> tuple[list, int]:
    pages = pull_pages(client, dataset_id, cursor, limit)
    changes = [change for page in pages for change in page["changes"]]
    return changes, pages[-1]["cursor"]


def test_pull_pages_each_entity_once(client, live_server, world) -> None:
    # One status write of its own, so the feed has a register whatever ran first.
    replica = Replica()
    op = replica.op(world["items"][24], world["task"]["id"], "completed")
    [result] = results_of(
        push(client, live_server, replica, world["dataset"]["id"], [op])
    )
    assert result["outcome"] == "applied"
    changes, cursor = pull_all(client, world["dataset"]["id"], 0, 7)

    keys = [(c["kind"], c["id"]) for c in changes]
    assert len(keys) == len(set(keys))
    seqs = [c["seq"] for c in changes]
    assert seqs == sorted(seqs)
    assert cursor == seqs[-1]
    kinds = {c["kind"] for c in changes}
    assert kinds == {"project", "dataset", "task", "assignment", "item", "register"}
    item_ids = {c["id"] for c in changes if c["kind"] == "item"}
    assert set(world["items"]) <= item_ids
    # The neighbour dataset's files stay out (its folder item has a random id).
    neighbour = {r["_id"] for r in synthetic_records(2, folder="/n", prefix="e")}
    assert not item_ids & neighbour

    register = next(c for c in changes if c["kind"] == "register")
    assert set(register["data"]) == {
        "itemId",
        "taskId",
        "status",
        "hlc",
        "creator",
        "timestamp",
    }


def test_pull_after_delete_has_tombstones(client, live_server, world) -> None:
    dataset_id = world["dataset"]["id"]
    _, cursor = pull_all(client, dataset_id, 0, 1000)
    doomed = [world["items"][28], world["items"][0]]  # the second has a register

    assert live_server.storage.delete_items(doomed) == doomed
    changes, _ = pull_all(client, dataset_id, cursor, 1)
    _, full_cursor = pull_all(client, dataset_id, 0, 1000)
    everything, _ = pull_all(client, dataset_id, 0, 1000)

    tombstones = [(c["kind"], c["id"], c["deleted"], c["data"]) for c in changes]
    assert tombstones == [
        ("item", doomed[0], True, None),
        ("item", doomed[1], True, None),
    ]
    registers = {c["id"] for c in everything if c["kind"] == "register"}
    assert f"{doomed[1]}:{world['task']['id']}" not in registers

    replica = Replica()
    op = replica.op(doomed[1], world["task"]["id"], "completed")
    [result] = results_of(push(client, live_server, replica, dataset_id, [op]))
    assert result["outcome"] == "rejected"
    assert "deleted" in result["reason"]


def task_world(live_server: LiveServer, name: str, count: int, prefix: str) -> dict:
    """Seed a dataset of ``count`` items, all in one new task; return both."""
    storage = live_server.storage
    records = synthetic_records(count, folder=f"/{name}", prefix=prefix)
    dataset = seed_dataset(storage, records, dataset=name)
    task = storage.create_task(
        NewTask(
            project_id=live_server.project["id"],
            dataset_id=dataset["id"],
            name=f"{name}-task",
            statuses=STATUSES,
        )
    )
    return {
        "dataset": dataset,
        "task": task,
        "items": [record["_id"] for record in records],
    }


def test_pull_leaves_out_own_writes(client, live_server) -> None:
    world = task_world(live_server, "own-writes", 10, "a")
    dataset_id, task_id, items = (
        world["dataset"]["id"],
        world["task"]["id"],
        world["items"],
    )
    _, start = pull_all(client, dataset_id, 0, 5000)
    own, other = Replica(), Replica()

    ops = [
        own.op(item_id, task_id, "completed", offset_ms=-5000) for item_id in items[:8]
    ]
    results_of(push(client, live_server, own, dataset_id, ops))
    [by_other] = results_of(
        push(
            client,
            live_server,
            other,
            dataset_id,
            [other.op(items[2], task_id, "discard")],
        )
    )
    rest = client.post(
        f"/assignments/items/tasks/{task_id}/status",
        json={
            "itemIds": [items[3]],
            "statusPayload": {"operation": "create", "status": "approved"},
        },
    )
    assert rest.status_code == 200
    results_of(
        push(
            client,
            live_server,
            other,
            dataset_id,
            [other.op(items[4], task_id, "discard")],
        )
    )
    results_of(
        push(
            client,
            live_server,
            own,
            dataset_id,
            [own.op(items[4], task_id, "approved", offset_ms=1000)],
        )
    )
    _, end = pull_all(client, dataset_id, start, 5000)

    filtered = pull_pages(client, dataset_id, start, 1, replica_id=own.replica_id)
    unfiltered = pull_pages(client, dataset_id, start, 1)
    stranger = pull_pages(client, dataset_id, start, 1, replica_id=new_node_id())

    # The feed after start: own writes on 0, 1, 5, 6, 7, then 2 (other), 3 (REST)
    # and 4 (own again, after the other replica's write).
    assert len(unfiltered) == 8
    assert [page["changes"] for page in stranger] == [
        page["changes"] for page in unfiltered
    ]
    assert [page["cursor"] for page in stranger] == [
        page["cursor"] for page in unfiltered
    ]
    assert [page["hasMore"] for page in filtered] == [True, False]
    assert [len(page["changes"]) for page in filtered] == [1, 1]
    changes = [change for page in filtered for change in page["changes"]]
    assert [change["id"] for change in changes] == [
        f"{items[2]}:{task_id}",
        f"{items[3]}:{task_id}",
    ]
    assert changes[0]["data"]["status"] == "discard"
    assert changes[0]["data"]["hlc"] == by_other["hlc"]
    assert changes[1]["data"]["status"] == "approved"
    assert changes[1]["data"]["hlc"] == rest.json()[items[3]]["hlc"]
    assert filtered[0]["cursor"] == changes[0]["seq"]
    assert filtered[-1]["cursor"] == end


def test_pull_scan_stops_at_limit_multiple(client, live_server) -> None:
    world = task_world(live_server, "scan-limit", 25, "9")
    dataset_id, task_id = world["dataset"]["id"], world["task"]["id"]
    _, start = pull_all(client, dataset_id, 0, 5000)
    own = Replica()
    ops = [own.op(item_id, task_id, "completed") for item_id in world["items"]]
    results_of(push(client, live_server, own, dataset_id, ops))
    feed, _ = pull_all(client, dataset_id, start, 5000)
    seqs = [change["seq"] for change in feed]
    limit = 2
    scan = limit * PULL_SCAN_FACTOR

    pages = pull_pages(client, dataset_id, start, limit, replica_id=own.replica_id)

    assert len(seqs) == 25
    assert scan < len(seqs)
    assert [page["changes"] for page in pages] == [[], []]
    assert [page["hasMore"] for page in pages] == [True, False]
    assert [page["cursor"] for page in pages] == [seqs[scan - 1], seqs[-1]]


def test_responses_match_schemas(client, live_server, world) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from referencing import Registry, Resource

    folder = schema_dir() / "sync"
    schemas = {
        path.name: json.loads(path.read_text()) for path in folder.glob("*.json")
    }
    registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )

    def check(name: str, document: Any) -> None:
        validator = jsonschema.Draft202012Validator(schemas[name], registry=registry)
        errors = [error.message for error in validator.iter_errors(document)]
        assert errors == []

    replica = Replica()
    task_id = world["task"]["id"]
    ops = [
        replica.op(world["items"][19], task_id, "completed"),
        replica.op(world["items"][19], task_id, None),
        replica.op("ffffffffffffffffffffffff", task_id, "completed"),
    ]
    body = {
        "replicaId": replica.replica_id,
        "epoch": live_server.storage.meta().epoch,
        "datasetId": world["dataset"]["id"],
        "ops": ops,
    }
    check("push_request.json", body)
    pushed = client.post("/sync/push", json=body)
    check("push_response.json", pushed.json())
    pulled = client.get(
        "/sync/pull", params={"dataset": world["dataset"]["id"], "limit": 5000}
    )
    check("pull_response.json", pulled.json())


def test_history_endpoint_lists_every_write(client, live_server, world) -> None:
    """Every write of an item's registers comes back, the overwritten ones too."""
    task_id, item_id = world["task"]["id"], world["items"][20]
    before = len(live_server.storage.register_history(item_id, task_id))
    for status in ("completed", "discard"):
        reply = client.post(
            f"/assignments/items/tasks/{task_id}/status",
            json={
                "itemIds": [item_id],
                "statusPayload": {"operation": "create", "status": status},
            },
        )
        assert reply.status_code == 200, reply.text

    reply = client.get("/sync/history", params={"item": item_id})
    missing = client.get("/sync/history", params={"item": "f" * 24})
    no_item = client.get("/sync/history")
    anonymous = httpx.get(f"{live_server.api}/sync/history", params={"item": item_id})

    assert reply.status_code == 200
    writes = reply.json()["history"]
    assert len(writes) == before + 2
    assert [write["status"] for write in writes[-2:]] == ["completed", "discard"]
    assert [write["source"] for write in writes[-2:]] == ["rest", "rest"]
    assert writes == sorted(writes, key=lambda write: write["hlc"])
    assert missing.status_code == 404
    assert no_item.status_code == 400
    assert anonymous.status_code == 401
