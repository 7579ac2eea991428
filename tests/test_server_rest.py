"""The REST subset over HTTP: auth, projects, datasets, items, tasks, statuses."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from localsync.server.storage import NewTask
from tests.server_fixtures import (
    FIXTURE_USER,
    LiveServer,
    database_fingerprint,
    seed_dataset,
    synthetic_records,
)


STATUSES = ("completed", "approved", "discard")


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> dict[str, Any]:
    storage = live_server.storage
    records = synthetic_records(12, folder="/a", prefix="a") + synthetic_records(
        3, folder="/b", prefix="b"
    )
    dataset = seed_dataset(storage, records, dataset="rest")
    project_id = live_server.project["id"]
    review = storage.create_task(
        NewTask(
            project_id=project_id,
            dataset_id=dataset["id"],
            name="review",
            statuses=STATUSES,
            query={"$and": [{"dir": "/a"}]},
            assignees=("ann1@example.com", "ann2@example.com"),
        )
    )
    plain = storage.create_task(
        NewTask(
            project_id=project_id,
            dataset_id=dataset["id"],
            name="plain",
            query={"$and": [{"dir": "/b"}]},
        )
    )
    other = seed_dataset(
        storage,
        synthetic_records(2, folder="/x", prefix="c"),
        dataset="secret",
        project="other",
    )
    other_task = storage.create_task(
        NewTask(
            project_id=other["projects"][0],
            dataset_id=other["id"],
            name="hidden-task",
            query={"$and": [{"dir": "/x"}]},
            assignees=("someone@example.com",),
        )
    )
    return {
        "dataset": dataset,
        "review": review,
        "plain": plain,
        "other": other,
        "other_task": other_task,
        "a_items": [r["_id"] for r in records[:12]],
        "b_items": [r["_id"] for r in records[12:]],
    }


@pytest.fixture(scope="module")
def client(live_server: LiveServer, token_factory) -> httpx.Client:
    with httpx.Client(
        base_url=live_server.api,
        headers={"Authorization": f"Bearer {token_factory()}"},
        timeout=30,
    ) as http:
        yield http


def item_query(
    client: httpx.Client, dataset_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = client.post(f"/datasets/{dataset_id}/query", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def unsigned_token(email: str, projects: list[str]) -> str:
    def encode(part: dict[str, Any]) -> str:
        raw = json.dumps(part).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"email": email, "projects": projects, "exp": 4_000_000_000}
    return f"{encode({'alg': 'none', 'typ': 'JWT'})}.{encode(claims)}."


# Health and authentication.


def test_health_needs_no_token(live_server: LiveServer) -> None:
    response = httpx.get(f"{live_server.api}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["epoch"] == live_server.storage.meta().epoch
    assert body["version"]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Token abc",
        "Bearer",
        "Bearer not-a-jwt",
        "Bearer unsigned",
        "Bearer wrong-secret",
        "Bearer expired",
        "Bearer no-projects",
    ],
)
def test_bad_tokens_get_401(
    live_server: LiveServer,
    token_factory,
    world,
    header: str | None,
) -> None:
    import jwt

    project_ids = [live_server.project["id"]]
    tokens = {
        "Bearer unsigned": unsigned_token(FIXTURE_USER, project_ids),
        "Bearer wrong-secret": jwt.encode(
            {"email": FIXTURE_USER, "projects": project_ids, "exp": 4_000_000_000},
            "another-secret-that-is-long-enough-for-hs256",
            algorithm="HS256",
        ),
        "Bearer expired": token_factory(expires_in=10, now=1_000_000),
        "Bearer no-projects": jwt.encode(
            {"email": FIXTURE_USER, "exp": 4_000_000_000},
            live_server.secret,
            algorithm="HS256",
        ),
    }
    if header in tokens:
        header = f"Bearer {tokens[header]}"
    headers = {"Authorization": header} if header else {}
    before = database_fingerprint(live_server.storage)

    me = httpx.get(f"{live_server.api}/users/me", headers=headers)
    write = httpx.post(
        f"{live_server.api}/assignments/items/tasks/{world['review']['id']}/status",
        json={
            "itemIds": world["a_items"],
            "statusPayload": {"operation": "create", "status": "completed"},
        },
        headers=headers,
    )

    assert me.status_code == 401
    assert me.json()["message"]
    assert write.status_code == 401
    assert database_fingerprint(live_server.storage) == before


def test_token_for_other_project_cannot_write(
    live_server: LiveServer, token_factory, world
) -> None:
    token = token_factory(projects=[world["other"]["projects"][0]])
    before = database_fingerprint(live_server.storage)

    response = httpx.post(
        f"{live_server.api}/assignments/items/tasks/{world['review']['id']}/status",
        json={
            "itemIds": world["a_items"],
            "statusPayload": {"operation": "create", "status": "completed"},
        },
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 403
    assert live_server.project["id"] in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before


def test_expired_token_message(live_server: LiveServer, token_factory) -> None:
    token = token_factory(expires_in=10, now=1_000_000)
    response = httpx.get(
        f"{live_server.api}/projects/{live_server.project['id']}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401
    assert "expired" in response.json()["message"].lower()


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert "No endpoint" in response.json()["message"]


# Users, projects and datasets.


def test_users_me(client: httpx.Client) -> None:
    response = client.get("/users/me")
    assert response.status_code == 200
    assert response.json()["email"] == FIXTURE_USER


def test_project_by_name_and_id(client: httpx.Client, live_server: LiveServer) -> None:
    project = live_server.project
    by_name = client.get(f"/projects/{project['name']}/name")
    by_id = client.get(f"/projects/{project['id']}")
    assert by_name.status_code == 200
    assert by_name.json() == [project]
    assert by_id.json() == project


def test_project_errors(client: httpx.Client, world: dict[str, Any]) -> None:
    assert client.get("/projects/no-such-project/name").status_code == 404
    assert client.get("/projects/000000000000000000000000").status_code == 404
    other = client.get("/projects/other/name")
    assert other.status_code == 403
    assert "does not grant" in other.json()["message"]


def test_dataset_query_by_name(
    client: httpx.Client, live_server: LiveServer, world
) -> None:
    body = {
        "filter": {"$and": [{"name": "rest"}]},
        "page": 0,
        "pageSize": 1000,
        "resource": "datasets",
        "context": {"projects": [live_server.project["id"]]},
    }
    response = client.post("/datasets/query", json=body)
    assert response.status_code == 200
    page = response.json()
    assert page["totalItemsCount"] == 1
    assert page["hasNextPage"] is False
    assert page["items"][0]["id"] == world["dataset"]["id"]


def test_dataset_query_other_project_403(client: httpx.Client, world) -> None:
    body = {"filter": {}, "context": {"projects": [world["other"]["projects"][0]]}}
    assert client.post("/datasets/query", json=body).status_code == 403


def test_dataset_get(client: httpx.Client, world) -> None:
    dataset = client.get(f"/datasets/{world['dataset']['id']}").json()
    assert dataset["name"] == "rest"
    assert dataset["itemsCount"] == 17  # 15 files and the folders /a and /b
    assert client.get("/datasets/000000000000000000000000").status_code == 404
    assert client.get(f"/datasets/{world['other']['id']}").status_code == 403


# Items.


def test_item_get_has_links(
    client: httpx.Client, live_server: LiveServer, world
) -> None:
    item_id = world["a_items"][0]
    item = client.get(f"/items/{item_id}").json()
    assert item["url"] == f"{live_server.api}/items/{item_id}"
    assert item["dataset"] == f"{live_server.api}/datasets/{world['dataset']['id']}"
    assert item["stream"].endswith("/stream")
    assert item["thumbnail"].endswith("/thumbnail")
    assert item["annotations"].endswith("/annotations")
    ref_types = [ref["type"] for ref in item["metadata"]["system"]["refs"]]
    assert ref_types == ["task", "assignment"]


def test_item_get_errors(client: httpx.Client, world) -> None:
    missing = client.get("/items/ffffffffffffffffffffffff")
    assert missing.status_code == 404
    assert "ffffffffffffffffffffffff" in missing.json()["message"]
    other_item = f"c{0:023x}"
    assert client.get(f"/items/{other_item}").status_code == 403


def test_item_patch_merges_user_metadata(client: httpx.Client, world) -> None:
    item_id = world["b_items"][0]
    before = client.get(f"/items/{item_id}").json()
    response = client.patch(
        f"/items/{item_id}",
        json={
            "metadata": {"user": {"reviewed": True}},
            "id": "changed",
            "datasetId": "changed",
        },
    )
    assert response.status_code == 200
    patched = response.json()
    assert patched["metadata"]["user"] == {"index": 0, "reviewed": True}
    assert patched["id"] == item_id
    assert patched["datasetId"] == before["datasetId"]
    assert patched["updatedBy"] == FIXTURE_USER
    assert (
        client.get(f"/items/{item_id}").json()["metadata"]["user"]["reviewed"] is True
    )


def test_item_patch_protects_system_metadata(client: httpx.Client, world) -> None:
    item_id = world["b_items"][1]
    refs = client.get(f"/items/{item_id}").json()["metadata"]["system"]["refs"]
    change = {"metadata": {"system": {"refs": [], "mimetype": "image/png"}}}

    plain = client.patch(f"/items/{item_id}", json=change).json()
    system = client.patch(f"/items/{item_id}?system=true", json=change).json()

    assert plain["metadata"]["system"]["mimetype"] == "image/jpeg"
    assert plain["metadata"]["system"]["refs"] == refs
    assert system["metadata"]["system"]["mimetype"] == "image/png"
    assert system["metadata"]["system"]["refs"] == refs


def test_item_patch_null_removes_key(client: httpx.Client, world) -> None:
    item_id = world["b_items"][2]
    client.patch(f"/items/{item_id}", json={"metadata": {"user": {"tmp": 1}}})
    removed = client.patch(
        f"/items/{item_id}", json={"metadata": {"user": {"tmp": None}}}
    )
    assert "tmp" not in removed.json()["metadata"]["user"]


def test_item_query_filter_and_counts(client: httpx.Client, world) -> None:
    body = {
        "filter": {"$and": [{"hidden": False}, {"type": "file"}, {"dir": "/a"}]},
        "page": 0,
        "pageSize": 5,
        "resource": "items",
    }
    page = item_query(client, world["dataset"]["id"], body)
    assert page["totalItemsCount"] == 12
    assert page["totalPagesCount"] == 3
    assert page["hasNextPage"] is True
    assert len(page["items"]) == 5
    assert all(item["url"].endswith(item["id"]) for item in page["items"])


def test_item_query_keyset_pages(client: httpx.Client, world) -> None:
    dataset_id = world["dataset"]["id"]
    base = [{"hidden": False}, {"type": "file"}, {"dir": "/a"}]
    seen: list[str] = []
    last = None
    for _ in range(5):
        conditions = base + ([{"id": {"$gt": last}}] if last else [])
        body = {
            "filter": {"$and": conditions},
            "sort": {"id": "ascending"},
            "page": 0,
            "pageSize": 5,
            "resource": "items",
        }
        page = item_query(client, dataset_id, body)
        seen += [item["id"] for item in page["items"]]
        if not page["hasNextPage"]:
            break
        last = page["items"][-1]["id"]
    assert seen == sorted(world["a_items"])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"filter": {"$and": [', "not valid JSON"),
        (json.dumps({"filter": {"dir": {"$regexp": "a"}}}).encode(), "$regexp"),
        (json.dumps([1, 2]).encode(), "JSON object"),
        (json.dumps({"filter": {}, "resource": "annotations"}).encode(), "annotations"),
        (json.dumps({"filter": {}, "pageSize": 0}).encode(), "pageSize"),
    ],
)
def test_item_query_bad_input(
    client: httpx.Client,
    live_server: LiveServer,
    world,
    content: bytes,
    expected: str,
) -> None:
    before = database_fingerprint(live_server.storage)
    response = client.post(
        f"/datasets/{world['dataset']['id']}/query",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert expected in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before


def test_item_query_other_project_403(client: httpx.Client, world) -> None:
    response = client.post(
        f"/datasets/{world['other']['id']}/query", json={"filter": {}}
    )
    assert response.status_code == 403


# Tasks and assignments.


def test_task_query_by_name(
    client: httpx.Client, live_server: LiveServer, world
) -> None:
    project_id = live_server.project["id"]
    body = {
        "filter": {
            "$and": [
                {"name": "review"},
                {"projectId": project_id},
                {"datasetId": world["dataset"]["id"]},
            ]
        },
        "page": 0,
        "pageSize": 1000,
        "resource": "tasks",
        "context": {"projectIds": [project_id]},
    }
    page = client.post("/annotationtasks/query", json=body).json()
    assert page["totalItemsCount"] == 1
    assert page["items"][0]["id"] == world["review"]["id"]


def test_task_get(client: httpx.Client, world) -> None:
    task = client.get(f"/annotationtasks/{world['review']['id']}").json()
    assert task["datasetId"] == world["dataset"]["id"]
    assert [a["action"] for a in task["availableActions"]] == list(STATUSES)
    assert client.get("/annotationtasks/000000000000000000000000").status_code == 404
    assert (
        client.get(f"/annotationtasks/{world['other_task']['id']}").status_code == 403
    )


def test_assignments_list_and_get(
    client: httpx.Client, live_server: LiveServer, world
) -> None:
    params = {
        "projects": live_server.project["id"],
        "taskId": world["review"]["id"],
        "pageSize": 500,
    }
    page = client.get("/assignments", params=params).json()
    annotators = sorted(a["annotator"] for a in page["items"])
    assert annotators == ["ann1@example.com", "ann2@example.com"]
    assert sum(a["totalItems"] for a in page["items"]) == 12

    assignment = page["items"][0]
    assert client.get(f"/assignments/{assignment['id']}").json() == assignment
    assert client.get("/assignments/000000000000000000000000").status_code == 404
    other_id = world["other_task"]["assignmentIds"][0]
    assert client.get(f"/assignments/{other_id}").status_code == 403
    forbidden = client.get(
        "/assignments", params={"projects": world["other"]["projects"][0]}
    )
    assert forbidden.status_code == 403
    assert client.get("/assignments", params={"pageSize": 0}).status_code == 400
    assert client.get("/assignments", params={"page": "x"}).status_code == 400


def test_items_dealt_round_robin(client: httpx.Client, world) -> None:
    assignment_ids = world["review"]["assignmentIds"]
    for index, item_id in enumerate(sorted(world["a_items"])):
        refs = client.get(f"/items/{item_id}").json()["metadata"]["system"]["refs"]
        assert refs[1] == {"type": "assignment", "id": assignment_ids[index % 2]}


# Status endpoints.


def task_status(
    client: httpx.Client,
    task_id: str,
    item_ids: list[str],
    status: str,
    operation: str = "create",
) -> httpx.Response:
    body = {
        "itemIds": item_ids,
        "statusPayload": {
            "operation": operation,
            "returnLastStatus": True,
            "status": status,
        },
    }
    return client.post(f"/assignments/items/tasks/{task_id}/status", json=body)


def refs_of(client: httpx.Client, item_id: str) -> list[dict[str, Any]]:
    return client.get(f"/items/{item_id}").json()["metadata"]["system"]["refs"]


def test_task_status_sets_every_ref(
    client: httpx.Client, live_server: LiveServer, world
) -> None:
    item_id = world["a_items"][3]
    response = task_status(
        client,
        world["review"]["id"],
        [item_id, "ffffffffffffffffffffffff", world["b_items"][0]],
        "approved",
    )
    assert response.status_code == 200
    reply = response.json()
    assert list(reply) == [item_id]
    assert reply[item_id]["status"] == "approved"

    item = client.get(f"/items/{item_id}").json()
    statuses = [ref["metadata"]["status"] for ref in item["metadata"]["system"]["refs"]]
    assert statuses == ["approved", "approved"]
    assert item["metadata"]["system"]["annotationStatus"] == ["approved"]
    creators = {
        ref["metadata"]["creator"] for ref in item["metadata"]["system"]["refs"]
    }
    assert creators == {FIXTURE_USER}

    history = live_server.storage.register_history(item_id, world["review"]["id"])
    assert [(h["source"], h["outcome"], h["user"]) for h in history] == [
        ("rest", "applied", FIXTURE_USER)
    ]


def test_status_writes_enter_change_feed(
    client: httpx.Client, live_server: LiveServer, world
) -> None:
    item_id = world["a_items"][4]
    task_id = world["review"]["id"]
    before = database_fingerprint(live_server.storage)[0]
    task_status(client, task_id, [item_id], "completed")
    page = live_server.storage.pull(world["dataset"]["id"], cursor=before, limit=100)
    assert [(c["kind"], c["id"]) for c in page.changes] == [
        ("register", f"{item_id}:{task_id}")
    ]
    assert page.changes[0]["data"]["status"] == "completed"


def test_later_rest_write_has_later_hlc(
    client: httpx.Client, live_server: LiveServer, world
) -> None:
    item_id = world["a_items"][5]
    task_id = world["review"]["id"]
    first = task_status(client, task_id, [item_id], "completed").json()[item_id]["hlc"]
    second = task_status(client, task_id, [item_id], "completed").json()[item_id]["hlc"]
    assert second > first
    assert live_server.storage.register(item_id, task_id)["hlc"] == second


def test_clear_keeps_ref(client: httpx.Client, world) -> None:
    item_id = world["a_items"][6]
    task_id = world["review"]["id"]
    task_status(client, task_id, [item_id], "discard")
    cleared = task_status(client, task_id, [item_id], "completed", operation="delete")
    assert cleared.json()[item_id]["status"] is None
    assert cleared.json()[item_id]["lastStatus"] == "discard"
    refs = refs_of(client, item_id)
    assert [ref["type"] for ref in refs] == ["task", "assignment"]
    assert all("status" not in (ref.get("metadata") or {}) for ref in refs)
    assert (
        client.get(f"/items/{item_id}").json()["metadata"]["system"]["annotationStatus"]
        == []
    )


def test_assignment_status_endpoint(client: httpx.Client, world) -> None:
    item_id = sorted(world["a_items"])[0]
    assignment_id = world["review"]["assignmentIds"][0]
    response = client.post(
        f"/assignments/{assignment_id}/items/{item_id}/status",
        json={"operation": "create", "status": "completed"},
    )
    assert response.status_code == 200
    refs = refs_of(client, item_id)
    assert [ref["metadata"]["status"] for ref in refs] == ["completed", "completed"]


def test_default_statuses_of_annotation_task(client: httpx.Client, world) -> None:
    item_id = world["b_items"][0]
    assert (
        task_status(client, world["plain"]["id"], [item_id], "completed").status_code
        == 200
    )
    rejected = task_status(client, world["plain"]["id"], [item_id], "approved")
    assert rejected.status_code == 400
    assert "completed, discard" in rejected.json()["message"]


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        (
            "/assignments/items/tasks/{review}/status",
            {
                "itemIds": ["{item}"],
                "statusPayload": {"operation": "create", "status": "needs_review"},
            },
            400,
            "completed, approved, discard",
        ),
        (
            "/assignments/items/tasks/{review}/status",
            {
                "itemIds": ["{item}"],
                "statusPayload": {"operation": "upsert", "status": "completed"},
            },
            400,
            "upsert",
        ),
        (
            "/assignments/items/tasks/{review}/status",
            {
                "itemIds": "{item}",
                "statusPayload": {"operation": "create", "status": "completed"},
            },
            400,
            "itemIds",
        ),
        (
            "/assignments/items/tasks/000000000000000000000000/status",
            {
                "itemIds": ["{item}"],
                "statusPayload": {"operation": "create", "status": "completed"},
            },
            404,
            "000000000000000000000000",
        ),
        (
            "/assignments/000000000000000000000000/items/{item}/status",
            {"operation": "create", "status": "completed"},
            404,
            "000000000000000000000000",
        ),
        (
            "/assignments/{assignment}/items/ffffffffffffffffffffffff/status",
            {"operation": "create", "status": "completed"},
            404,
            "ffffffffffffffffffffffff",
        ),
        (
            "/assignments/{assignment}/items/{plain_item}/status",
            {"operation": "create", "status": "completed"},
            404,
            "not in assignment",
        ),
        (
            "/assignments/{assignment}/items/{item}/status",
            {"operation": "create", "status": "bogus"},
            400,
            "bogus",
        ),
        (
            "/assignments/items/tasks/{other_task}/status",
            {
                "itemIds": ["{item}"],
                "statusPayload": {"operation": "create", "status": "completed"},
            },
            403,
            "does not grant",
        ),
    ],
)
def test_status_bad_input_changes_nothing(
    client: httpx.Client,
    live_server: LiveServer,
    world: dict[str, Any],
    path: str,
    body: dict[str, Any],
    status: int,
    expected: str,
) -> None:
    names = {
        "review": world["review"]["id"],
        "other_task": world["other_task"]["id"],
        "assignment": world["review"]["assignmentIds"][0],
        "item": sorted(world["a_items"])[0],
        "plain_item": world["b_items"][0],
    }
    url = path.format(**names)
    content = json.dumps(body).replace("{item}", names["item"])
    before = database_fingerprint(live_server.storage)

    response = client.post(
        url, content=content, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == status
    assert expected in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before


def test_malformed_status_body_changes_nothing(
    client: httpx.Client,
    live_server: LiveServer,
    world,
) -> None:
    before = database_fingerprint(live_server.storage)
    response = client.post(
        f"/assignments/items/tasks/{world['review']['id']}/status",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]
    assert database_fingerprint(live_server.storage) == before


def test_request_log_lines(live_server: LiveServer, client: httpx.Client) -> None:
    before = live_server.requests.count("GET /api/v1/users/me 200")
    client.get("/users/me")
    assert live_server.requests.count("GET /api/v1/users/me 200") == before + 1
