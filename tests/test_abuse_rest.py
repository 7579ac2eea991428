"""Bad input to the REST endpoints: bodies that are not JSON, too deep or not valid
Unicode, fields of the wrong type, unknown operations and statuses, huge queries,
and writes aimed at items of another dataset. Each gets a 4xx with a JSON message
that shows no SQL or traceback, and the server database stays unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from localsync.server.storage import NewTask
from tests.abuse_support import assert_no_leak
from tests.reliability_report import Tally
from tests.server_fixtures import (
    LiveServer,
    database_fingerprint,
    seed_dataset,
    synthetic_records,
)

STATUSES = ("completed", "discard")
HUGE_IDS = 200_000  # about 5 MB of JSON

tally = Tally("bad_input")


@pytest.fixture(scope="module", autouse=True)
def write_report() -> Iterator[None]:
    yield
    tally.flush()


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> dict[str, Any]:
    storage = live_server.storage
    dataset = seed_dataset(
        storage, synthetic_records(6, folder="/r", prefix="a"), dataset="abuse-rest"
    )
    neighbour = seed_dataset(
        storage, synthetic_records(2, folder="/n", prefix="b"), dataset="neighbour"
    )
    task = storage.create_task(
        NewTask(
            project_id=live_server.project["id"],
            dataset_id=dataset["id"],
            name="review",
            statuses=STATUSES,
            assignees=("ann@example.com",),
        )
    )
    neighbour_task = storage.create_task(
        NewTask(
            project_id=live_server.project["id"],
            dataset_id=neighbour["id"],
            name="neighbour-review",
            statuses=STATUSES,
        )
    )
    [assignment] = storage.assignments([live_server.project["id"]], task_id=task["id"])
    return {
        "dataset": dataset,
        "task": task,
        "assignment": assignment,
        "neighbour_task": neighbour_task,
        "items": [f"a{n:023x}" for n in range(6)],
        "neighbour_items": [f"b{n:023x}" for n in range(2)],
    }


@pytest.fixture(scope="module")
def client(live_server: LiveServer, token_factory) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=live_server.api,
        headers={"Authorization": f"Bearer {token_factory()}"},
        timeout=60,
    ) as http:
        yield http


def deep(levels: int) -> bytes:
    return b'{"filter": ' + b'{"$and": [' * levels + b"{}" + b"]}" * levels + b"}"


def status_body(item_ids: Any, operation: Any = "create", status: Any = "completed"):
    return {
        "itemIds": item_ids,
        "statusPayload": {"operation": operation, "status": status},
    }


def cases(world: dict[str, Any]) -> list[tuple[str, str, str, Any, int, str]]:
    """Return ``(name, method, path, body, status, fragment)`` for each bad request.

    A ``bytes`` body is sent as it is; any other body is sent as JSON.
    """
    dataset_id, task_id = world["dataset"]["id"], world["task"]["id"]
    item = world["items"][0]
    status_path = f"/assignments/items/tasks/{task_id}/status"
    assignment_path = f"/assignments/{world['assignment']['id']}/items/{item}/status"
    query_path = f"/datasets/{dataset_id}/query"
    return [
        (
            "status not JSON",
            "POST",
            status_path,
            b'{"itemIds": [',
            400,
            "not valid JSON",
        ),
        ("status bad UTF-8", "POST", status_path, b'{"a": "\xff"}', 400, "not valid"),
        ("status list body", "POST", status_path, [1], 400, "must be a JSON object"),
        (
            "status item ids string",
            "POST",
            status_path,
            status_body(item),
            400,
            "itemIds",
        ),
        ("status item ids ints", "POST", status_path, status_body([1]), 400, "itemIds"),
        (
            "status payload missing",
            "POST",
            status_path,
            {"itemIds": [item]},
            400,
            "statusPayload must be an object",
        ),
        (
            "status operation unknown",
            "POST",
            status_path,
            status_body([item], operation="set"),
            400,
            "Unknown operation 'set'",
        ),
        (
            "status operation object",
            "POST",
            status_path,
            status_body([item], operation={"a": 1}),
            400,
            "Unknown operation",
        ),
        (
            "status int",
            "POST",
            status_path,
            status_body([item], status=5),
            400,
            "Status 5 is invalid",
        ),
        (
            "status not allowed",
            "POST",
            status_path,
            status_body([item], status="approved"),
            400,
            "use one of: completed, discard",
        ),
        (
            "status unknown task",
            "POST",
            "/assignments/items/tasks/000000000000000000000000/status",
            status_body([item]),
            404,
            "not found",
        ),
        (
            "status surrogate item id",
            "POST",
            status_path,
            b'{"itemIds": ["\\ud800"], "statusPayload": {"operation": "create", '
            b'"status": "completed"}}',
            400,
            "unpaired surrogate",
        ),
        (
            "status raw surrogate bytes",
            "POST",
            status_path,
            b'{"itemIds": ["\xed\xa0\x80"], "statusPayload": {"operation": "create", '
            b'"status": "completed"}}',
            400,
            "not valid",
        ),
        ("status too deep", "POST", status_path, b"[" * 100_000, 400, "nested too"),
        ("assignment list body", "POST", assignment_path, [1], 400, "JSON object"),
        (
            "assignment unknown",
            "POST",
            f"/assignments/000000000000000000000000/items/{item}/status",
            {"operation": "create", "status": "completed"},
            404,
            "not found",
        ),
        (
            "assignment item of other dataset",
            "POST",
            f"/assignments/{world['assignment']['id']}/items/"
            f"{world['neighbour_items'][0]}/status",
            {"operation": "create", "status": "completed"},
            404,
            "is not in assignment",
        ),
        ("query filter list", "POST", query_path, {"filter": []}, 400, "JSON object"),
        (
            "query operator unknown",
            "POST",
            query_path,
            {"filter": {"dir": {"$where": "1"}}},
            400,
            "unknown operator '$where'",
        ),
        ("query page string", "POST", query_path, {"page": "x"}, 400, "page must"),
        ("query page size 0", "POST", query_path, {"pageSize": 0}, 400, "pageSize"),
        ("query resource", "POST", query_path, {"resource": 5}, 400, "resource 5"),
        ("query update", "POST", query_path, {"update": {}}, 400, "not supported"),
        ("query too deep", "POST", query_path, deep(2000), 400, "nested too deeply"),
        ("query 400 levels", "POST", query_path, deep(400), 400, "nested"),
        (
            "query surrogate key",
            "POST",
            query_path,
            b'{"filter": {"\\udfff": 1}}',
            400,
            "unpaired surrogate",
        ),
        (
            "query huge in",
            "POST",
            query_path,
            {"filter": {"id": {"$in": [f"{n:024x}" for n in range(HUGE_IDS)]}}},
            400,
            "more than 10000 values",
        ),
        (
            "dataset query context objects",
            "POST",
            "/datasets/query",
            {"filter": {}, "context": {"projects": [{"id": 1}]}},
            400,
            "context.projects must be a list of project ids",
        ),
        (
            "task query context lists",
            "POST",
            "/annotationtasks/query",
            {"context": {"projectIds": [["x"]]}},
            400,
            "context.projectIds must be a list",
        ),
        ("task query filter", "POST", "/annotationtasks/query", {"filter": 5}, 400, ""),
        ("patch list body", "PATCH", f"/items/{item}", [1], 400, "JSON object"),
        (
            "patch surrogate",
            "PATCH",
            f"/items/{item}",
            b'{"name": "\\udc00"}',
            400,
            "unpaired surrogate",
        ),
        ("patch unknown item", "PATCH", "/items/" + "0" * 24, {}, 404, "not found"),
        ("assignments page size", "GET", "/assignments?pageSize=-1", None, 400, ""),
        ("assignments page", "GET", "/assignments?page=x", None, 400, "page='x'"),
    ]


def send(client: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        headers = {"Content-Type": "application/json"}
        return client.request(method, path, content=body, headers=headers)
    if body is None:
        return client.request(method, path)
    return client.request(method, path, json=body)


def test_bad_rest_requests_change_nothing(
    client: httpx.Client, live_server: LiveServer, world: dict[str, Any]
) -> None:
    before = database_fingerprint(live_server.storage)
    failures = []
    for name, method, path, body, status, fragment in cases(world):
        response = send(client, method, path, body)
        message = response.json().get("message", "")
        if response.status_code != status or fragment not in message:
            failures.append((name, response.status_code, message[:200]))
        assert_no_leak(message)
        tally.add("rest")
    assert failures == []
    assert database_fingerprint(live_server.storage) == before
    assert live_server.requests.count("POST") > 0
    assert not [line for line in live_server.requests.lines if line.endswith(" 500")]


def test_status_write_skips_items_of_other_dataset(
    client: httpx.Client, live_server: LiveServer, world: dict[str, Any]
) -> None:
    """Ids of another dataset's items, and unknown ids, are left out unchanged."""
    before = database_fingerprint(live_server.storage)
    ids = [*world["neighbour_items"], "f" * 24] + [f"{n:024x}" for n in range(HUGE_IDS)]
    assert len(json.dumps(ids)) > 5_000_000

    response = client.post(
        f"/assignments/items/tasks/{world['task']['id']}/status",
        json=status_body(ids),
    )

    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert database_fingerprint(live_server.storage) == before
    neighbour = world["neighbour_items"][0]
    assert (
        live_server.storage.register(neighbour, world["neighbour_task"]["id"]) is None
    )
    tally.add("rest")


def test_patch_keeps_identity_and_registers(
    client: httpx.Client, live_server: LiveServer, world: dict[str, Any]
) -> None:
    """A patch cannot move an item, rename its id or rewrite its statuses."""
    item_id = world["items"][1]
    task_id = world["task"]["id"]
    written = client.post(
        f"/assignments/items/tasks/{task_id}/status", json=status_body([item_id])
    )
    assert written.status_code == 200
    stored = live_server.storage.item(item_id)
    assert stored is not None

    response = client.patch(
        f"/items/{item_id}?system=true",
        json={
            "id": "0" * 24,
            "datasetId": world["neighbour_task"]["datasetId"],
            "metadata": {"system": {"refs": [], "annotationStatus": ["discard"]}},
        },
    )

    assert response.status_code == 200, response.text
    after = live_server.storage.item(item_id)
    assert after is not None
    assert after["id"] == item_id
    assert after["datasetId"] == world["dataset"]["id"]
    assert after["metadata"]["system"]["refs"] == stored["metadata"]["system"]["refs"]
    assert after["metadata"]["system"]["annotationStatus"] == ["completed"]
    assert live_server.storage.register(item_id, task_id)["status"] == "completed"
    tally.add("rest")
