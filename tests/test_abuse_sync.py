"""Bad input to the sync endpoints, over HTTP and through the CLI.

The cases: malformed push bodies and pull parameters, batches over the maximum,
ops for items of another dataset, replayed ops with changed content, and a
replica id bound to another user. Each is rejected with the stated status and
changes nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localsync.hlc import Timestamp, new_node_id
from localsync.server.storage import NewTask
from localsync.store import Replica
from tests.abuse_support import assert_no_leak
from tests.reliability_report import Tally
from tests.server_fixtures import (
    LiveServer,
    database_fingerprint,
    seed_dataset,
    synthetic_records,
)
from tests.sync_support import (
    USER,
    journal_states,
    make_world,
    run_cli,
    set_statuses,
)

tally = Tally("bad_input")
VALID_HLC = "000000000000001-000000-" + "a" * 32


@pytest.fixture(scope="module", autouse=True)
def write_report() -> Iterator[None]:
    yield
    tally.flush()


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> dict[str, Any]:
    storage = live_server.storage
    dataset = seed_dataset(
        storage, synthetic_records(8, folder="/s", prefix="d"), dataset="abuse-sync"
    )
    neighbour = seed_dataset(
        storage, synthetic_records(2, folder="/n", prefix="e"), dataset="neighbour"
    )
    secret = seed_dataset(
        storage,
        synthetic_records(2, folder="/x", prefix="f"),
        dataset="secret",
        project="other-project",
    )
    task = storage.create_task(
        NewTask(
            project_id=live_server.project["id"],
            dataset_id=dataset["id"],
            name="review",
            statuses=("completed", "discard"),
        )
    )
    neighbour_task = storage.create_task(
        NewTask(
            project_id=live_server.project["id"],
            dataset_id=neighbour["id"],
            name="neighbour-review",
            statuses=("completed", "discard"),
        )
    )
    return {
        "dataset": dataset,
        "neighbour": neighbour,
        "secret": secret,
        "task": task,
        "neighbour_task": neighbour_task,
        "items": [f"d{n:023x}" for n in range(8)],
        "neighbour_items": [f"e{n:023x}" for n in range(2)],
    }


@pytest.fixture(scope="module")
def client(live_server: LiveServer, token_factory) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=live_server.api,
        headers={"Authorization": f"Bearer {token_factory()}"},
        timeout=60,
    ) as http:
        yield http


class Pusher:
    """A stand-in replica: its id and its next seq."""

    def __init__(self) -> None:
        self.replica_id = new_node_id()
        self.seq = 0

    def op(self, item_id: str, task_id: str, status: str | None) -> dict[str, Any]:
        self.seq += 1
        wall = time.time_ns() // 1_000_000
        return {
            "opId": uuid.uuid4().hex,
            "seq": self.seq,
            "itemId": item_id,
            "taskId": task_id,
            "status": status,
            "hlc": str(Timestamp(wall, 0, self.replica_id)),
            "creator": USER,
        }

    def body(self, live: LiveServer, dataset_id: str, ops: list[Any]) -> dict:
        return {
            "replicaId": self.replica_id,
            "epoch": live.storage.meta().epoch,
            "datasetId": dataset_id,
            "ops": ops,
        }


def push(client: httpx.Client, body: Any, **options: Any) -> httpx.Response:
    if isinstance(body, bytes):
        headers = {"Content-Type": "application/json", **options.pop("headers", {})}
        return client.post("/sync/push", content=body, headers=headers, **options)
    return client.post("/sync/push", json=body, **options)


def good_op(**changes: Any) -> dict[str, Any]:
    op = {
        "opId": "op-1",
        "seq": 1,
        "itemId": "d" + "0" * 23,
        "taskId": "t",
        "status": "completed",
        "hlc": VALID_HLC,
        "creator": None,
    }
    op.update(changes)
    return op


BAD_BODIES = [
    ("body list", [1], "expected a JSON object"),
    ("body string", "push", "expected a JSON object"),
    ("replica id uppercase", {"replicaId": "A" * 32}, "replicaId"),
    ("replica id short", {"replicaId": "a" * 31}, "replicaId"),
    ("epoch missing", {"epoch": None}, "epoch"),
    ("dataset id int", {"datasetId": 5}, "datasetId"),
    ("ops object", {"ops": {"0": {}}}, "ops must be a list"),
    ("op list", {"ops": [[1]]}, "ops[0] must be an object"),
    ("seq bool", {"ops": [good_op(seq=True)]}, "seq"),
    ("seq string", {"ops": [good_op(seq="1")]}, "seq"),
    ("seq too large", {"ops": [good_op(seq=2**70)]}, "seq must be an integer from 1"),
    ("seq zero", {"ops": [good_op(seq=0)]}, "seq"),
    ("op id int", {"ops": [good_op(opId=7)]}, "opId"),
    ("item id empty", {"ops": [good_op(itemId="")]}, "itemId"),
    ("status int", {"ops": [good_op(status=3)]}, "status"),
    (
        "status missing",
        {"ops": [{k: v for k, v in good_op().items() if k != "status"}]},
        "status is missing",
    ),
    ("creator list", {"ops": [good_op(creator=["a"])]}, "creator"),
    ("hlc wrong node", {"ops": [good_op(hlc="000000000000001-000000-XYZ")]}, "hlc"),
    (
        "hlc counter wide",
        {"ops": [good_op(hlc="000000000000001-0000000-" + "a" * 32)]},
        "hlc",
    ),
]


@pytest.mark.parametrize(
    ("name", "change", "fragment"), BAD_BODIES, ids=[case[0] for case in BAD_BODIES]
)
def test_bad_push_body_changes_nothing(
    client: httpx.Client,
    live_server: LiveServer,
    world: dict[str, Any],
    name: str,
    change: Any,
    fragment: str,
) -> None:
    body: Any = change
    if isinstance(change, dict):
        body = {**Pusher().body(live_server, world["dataset"]["id"], []), **change}
    before = database_fingerprint(live_server.storage)

    response = push(client, body)

    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]
    assert_no_leak(response.json()["message"])
    assert database_fingerprint(live_server.storage) == before
    tally.add("sync")


@pytest.mark.parametrize(
    ("name", "raw", "fragment"),
    [
        ("not JSON", b'{"ops": [', "not valid JSON"),
        ("too deep", b'{"ops": ' + b"[" * 50_000, "nested too deeply"),
        (
            "unpaired surrogate",
            b'{"replicaId": "' + b"a" * 32 + b'", "ops": [{"opId": "\\ud800"}]}',
            "unpaired surrogate",
        ),
    ],
)
def test_unreadable_push_body_is_400(
    client: httpx.Client, live_server: LiveServer, name: str, raw: bytes, fragment: str
) -> None:
    before = database_fingerprint(live_server.storage)
    response = push(client, raw)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before
    tally.add("sync")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"cursor": "9" * 30}, "cursor=" + "9" * 30 + " is too large"),
        ({"cursor": "1e3"}, "is not an integer"),
        ({"limit": "5001"}, "use 1 to 5000"),
        ({"limit": "-5"}, "is below 1"),
        ({"dataset": ""}, "Missing query parameter 'dataset'"),
    ],
)
def test_bad_pull_parameters_are_400(
    client: httpx.Client, world: dict[str, Any], params: dict[str, str], fragment: str
) -> None:
    query = {"dataset": world["dataset"]["id"], **params}
    response = client.get("/sync/pull", params=query)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]
    tally.add("sync")


def test_batch_limit_is_exact(
    client: httpx.Client, live_server: LiveServer, world: dict[str, Any]
) -> None:
    """1,000 ops are taken in one push; 1,001 get 413 before anything is applied."""
    pusher = Pusher()
    item, task_id = world["items"][0], world["task"]["id"]
    ops = [pusher.op(item, task_id, "completed") for _ in range(1001)]
    dataset_id = world["dataset"]["id"]
    before = database_fingerprint(live_server.storage)

    over = push(client, pusher.body(live_server, dataset_id, ops))

    assert over.status_code == 413
    assert over.json()["maxBatch"] == 1000
    assert "more than the maximum of 1000" in over.json()["message"]
    assert database_fingerprint(live_server.storage) == before
    taken = push(client, pusher.body(live_server, dataset_id, ops[:1000]))
    assert taken.status_code == 200, taken.text
    assert len(taken.json()["results"]) == 1000
    tally.add("sync", 2)


def test_ops_for_other_datasets_are_rejected(
    client: httpx.Client, live_server: LiveServer, world: dict[str, Any]
) -> None:
    """An op on another dataset's item or task is rejected, naming no value there."""
    pusher = Pusher()
    neighbour_item = world["neighbour_items"][0]
    neighbour_task = world["neighbour_task"]["id"]
    ops = [
        pusher.op(neighbour_item, world["task"]["id"], "completed"),
        pusher.op(neighbour_item, neighbour_task, "completed"),
        pusher.op(world["items"][1], neighbour_task, "completed"),
    ]
    storage = live_server.storage
    register_before = storage.register(neighbour_item, neighbour_task)

    response = push(client, pusher.body(live_server, world["dataset"]["id"], ops))

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [result["outcome"] for result in results] == ["rejected"] * 3
    assert "not found in dataset" in results[0]["reason"]
    assert "not found in dataset" in results[1]["reason"]
    assert "belongs to another dataset" in results[2]["reason"]
    assert all(result["winner"] is None for result in results)
    assert storage.register(neighbour_item, neighbour_task) == register_before
    assert storage.register_history(neighbour_item, neighbour_task) == []
    tally.add("sync", 3)


def test_rejection_does_not_tell_foreign_item_from_unknown(
    client: httpx.Client, live_server: LiveServer, world: dict[str, Any]
) -> None:
    """An item of a project the token lacks is rejected as if it did not exist."""
    pusher = Pusher()
    task_id = world["task"]["id"]
    foreign, unknown = f"f{0:023x}", f"f{9:023x}"
    assert live_server.storage.item(foreign) is not None
    assert live_server.storage.item(unknown) is None
    ops = [pusher.op(foreign, task_id, "completed"), pusher.op(unknown, task_id, None)]

    response = push(client, pusher.body(live_server, world["dataset"]["id"], ops))

    first, second = response.json()["results"]
    assert first["reason"].replace(foreign, "ID") == second["reason"].replace(
        unknown, "ID"
    )
    assert live_server.storage.register_history(foreign, task_id) == []
    tally.add("sync", 2)


def test_push_to_dataset_of_other_project_is_403(
    client: httpx.Client, live_server: LiveServer, world: dict[str, Any]
) -> None:
    pusher = Pusher()
    secret_item = f"f{0:023x}"
    ops = [pusher.op(secret_item, world["task"]["id"], "completed")]
    before = database_fingerprint(live_server.storage)

    response = push(client, pusher.body(live_server, world["secret"]["id"], ops))

    assert response.status_code == 403
    assert "does not grant project" in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before
    tally.add("sync")


@pytest.mark.parametrize(
    "change",
    [
        {"status": "discard"},
        {"status": None},
        {"hlc": str(Timestamp(4_000_000_000_000, 0, "c" * 32))},
        {"itemId": f"d{2:023x}"},
        {"creator": "someone-else@example.com"},
    ],
    ids=["status", "cleared", "hlc", "item", "creator"],
)
def test_replayed_op_with_changed_content_is_409(
    client: httpx.Client,
    live_server: LiveServer,
    world: dict[str, Any],
    change: dict[str, Any],
) -> None:
    """The same op id and seq with other content: 409, and nothing changes."""
    pusher = Pusher()
    dataset_id = world["dataset"]["id"]
    op = pusher.op(world["items"][3], world["task"]["id"], "completed")
    first = push(client, pusher.body(live_server, dataset_id, [op]))
    assert first.status_code == 200, first.text
    before = database_fingerprint(live_server.storage)

    replayed = push(client, pusher.body(live_server, dataset_id, [{**op, **change}]))
    identical = push(client, pusher.body(live_server, dataset_id, [op]))

    assert replayed.status_code == 409
    assert replayed.json()["code"] == "seq_conflict"
    assert replayed.json()["seq"] == op["seq"]
    assert identical.status_code == 200
    assert identical.json()["results"] == first.json()["results"]
    assert database_fingerprint(live_server.storage) == before
    tally.add("sync", 2)


def test_replica_of_another_user_gets_403_every_time(
    client: httpx.Client,
    live_server: LiveServer,
    world: dict[str, Any],
    token_factory,
) -> None:
    pusher = Pusher()
    dataset_id, task_id = world["dataset"]["id"], world["task"]["id"]
    first = push(
        client,
        pusher.body(
            live_server, dataset_id, [pusher.op(world["items"][4], task_id, None)]
        ),
    )
    assert first.status_code == 200
    intruder = {"Authorization": f"Bearer {token_factory(email='mallory@example.com')}"}
    before = database_fingerprint(live_server.storage)

    empty = push(client, pusher.body(live_server, dataset_id, []), headers=intruder)
    replay = push(
        client,
        pusher.body(
            live_server,
            dataset_id,
            [pusher.op(world["items"][5], task_id, "completed")],
        ),
        headers=intruder,
    )

    for response in (empty, replay):
        assert response.status_code == 403
        assert pusher.replica_id in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before
    owner = push(client, pusher.body(live_server, dataset_id, []))
    assert owner.status_code == 200
    tally.add("sync", 2)


def test_cli_sync_with_other_users_token_fails_cleanly(tmp_path: Path) -> None:
    """A replica with another user's token: login refuses it, the server 403s."""
    world = make_world(tmp_path, 5)
    try:
        replica = world.clone()
        set_statuses(replica, world.task["id"], world.item_ids[:2], "completed")
        first = run_cli("sync", "--store", str(replica.path))
        assert first.returncode == 0, first.stderr
        set_statuses(replica, world.task["id"], world.item_ids[2:4], "discard")
        replica.close()
        from localsync.server.auth import issue_token

        other = issue_token(
            world.storage.meta().secret,
            email="mallory@example.com",
            project_ids=[world.project["id"]],
        )
        login = run_cli("login", "--token", other, "--store", str(replica.path))
        assert login.returncode == 1
        assert "belongs to annotator@example.com" in login.stderr
        # The server refuses such a token too, when it is written into the file.
        with Replica(replica.path) as edited:
            edited.set_setting("token", other)
        before = world.server_count("SELECT COUNT(*) FROM register_history")

        refused = run_cli("sync", "--store", str(replica.path), "--max-attempts", "1")

        assert refused.returncode == 1
        assert "returned 403" in refused.stderr
        assert "belongs to another user" in refused.stderr
        assert_no_leak(refused.stderr)
        assert world.server_count("SELECT COUNT(*) FROM register_history") == before
        with Replica(replica.path) as check:
            assert journal_states(check) == {"applied": 2, "pending": 2}
        tally.add("sync")
    finally:
        world.runner.close()
