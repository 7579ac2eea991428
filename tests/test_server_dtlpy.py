"""The documented dtlpy snippets, unchanged, against the server on real exports."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from localsync.exports import exported_items, read_export_records
from localsync.server.storage import NewTask
from localsync.statuses import iso_timestamp
from tests.server_fixtures import (
    FIXTURE_PROJECT,
    LiveServer,
    database_fingerprint,
    seed_dataset,
    synthetic_records,
)


STATUSES = ("completed", "approved", "discard")
TEST_FOLDER = "/test"  # 59 FruitImage items whose files sit in the validation folder


@pytest.fixture(scope="module")
def world(live_server: LiveServer, exports_dir: Path) -> dict[str, Any]:
    storage = live_server.storage
    project_id = live_server.project["id"]
    dataset = storage.ensure_dataset(project_id, "exports", creator="admin@localsync")
    now = iso_timestamp()
    entries = exported_items(
        read_export_records(exports_dir), dataset_id=dataset["id"], now=now
    )
    storage.import_items(dataset["id"], entries, now=now)
    task = storage.create_task(
        NewTask(
            project_id=project_id,
            dataset_id=dataset["id"],
            name="review",
            statuses=STATUSES,
            assignees=("ann1@example.com", "ann2@example.com"),
        )
    )
    return {"dataset": dataset, "task": task}


@pytest.fixture(scope="module")
def http(live_server: LiveServer, token_factory) -> httpx.Client:
    with httpx.Client(
        base_url=live_server.api,
        headers={"Authorization": f"Bearer {token_factory()}"},
        timeout=60,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def dl(dtlpy_client: ModuleType, world) -> ModuleType:
    return dtlpy_client


@pytest.fixture(scope="module")
def dataset(dl: ModuleType) -> Any:
    project = dl.projects.get(project_name=FIXTURE_PROJECT)
    return project.datasets.get(dataset_name="exports")


def count_with_status(
    http: httpx.Client, world: dict[str, Any], status: str, extra: list | None = None
) -> int:
    """Count items whose task ref has ``status``, by the server's query endpoint."""
    condition = {
        "metadata.system.refs": {
            "$match": {
                "id": world["task"]["id"],
                "type": "task",
                "metadata": {"status": {"$in": [status]}},
            }
        }
    }
    body = {
        "filter": {
            "$and": [{"hidden": False}, {"type": "file"}, condition, *(extra or [])]
        },
        "page": 0,
        "pageSize": 1,
        "resource": "items",
    }
    response = http.post(f"/datasets/{world['dataset']['id']}/query", json=body)
    assert response.status_code == 200, response.text
    return response.json()["totalItemsCount"]


def server_status(live_server: LiveServer, world: dict[str, Any], item_id: str) -> Any:
    register = live_server.storage.register(item_id, world["task"]["id"])
    return register["status"] if register else None


def first_item_id(http: httpx.Client, world: dict[str, Any], folder: str) -> str:
    body = {
        "filter": {"$and": [{"type": "file"}, {"dir": folder}]},
        "sort": {"id": "ascending"},
        "page": 0,
        "pageSize": 1,
    }
    response = http.post(f"/datasets/{world['dataset']['id']}/query", json=body)
    return response.json()["items"][0]["id"]


def test_login_by_token(dl, live_server, token_factory) -> None:
    before = live_server.requests.count("GET /api/v1/users/me 200")
    dl.login_token(token_factory())
    assert live_server.requests.count("GET /api/v1/users/me 200") == before + 1


def test_project_and_dataset_by_name(dl, dataset, world, live_server) -> None:
    project = dl.projects.get(project_name=FIXTURE_PROJECT)
    assert project.id == live_server.project["id"]
    assert dataset.id == world["dataset"]["id"]
    assert dataset.name == "exports"


def test_item_get(dataset, http, world) -> None:
    item_id = first_item_id(http, world, "/Merino")
    item = dataset.items.get(item_id=item_id)
    assert item.id == item_id
    assert item.dir == "/Merino"
    assert item.filename.startswith("/Merino/")
    ref_types = [ref["type"] for ref in item.metadata["system"]["refs"]]
    assert ref_types == ["task", "assignment"]


def test_item_get_unknown_is_not_found(dl, dataset) -> None:
    with pytest.raises(dl.exceptions.NotFound):
        dataset.items.get(item_id="ffffffffffffffffffffffff")


def test_single_status(dl, dataset, http, world, live_server) -> None:
    item_id = first_item_id(http, world, "/Suffolk")
    item = dataset.items.get(item_id=item_id)

    item.update_status(status=dl.ItemStatus.COMPLETED)

    assert server_status(live_server, world, item_id) == "completed"
    assert count_with_status(http, world, "completed", [{"id": item_id}]) == 1
    refetched = dataset.items.get(item_id=item_id)
    assert refetched.status(task_id=world["task"]["id"]) == "completed"
    assignment_id = refetched.metadata["system"]["refs"][1]["id"]
    assert refetched.status(assignment_id=assignment_id) == "completed"


def test_clear_status(dl, dataset, http, world, live_server) -> None:
    item_id = first_item_id(http, world, "/Poll Dorset")
    item = dataset.items.get(item_id=item_id)
    item.update_status(status=dl.ItemStatus.COMPLETED)
    assert server_status(live_server, world, item_id) == "completed"

    item.update_status(status=dl.ITEM_STATUS_COMPLETED, clear=True)

    assert server_status(live_server, world, item_id) is None
    refs = dataset.items.get(item_id=item_id).metadata["system"]["refs"]
    assert [ref["type"] for ref in refs] == ["task", "assignment"]
    assert count_with_status(http, world, "completed", [{"id": item_id}]) == 0


def test_status_through_task_id(dl, dataset, http, world, live_server) -> None:
    item_id = first_item_id(http, world, "/White Suffolk")
    item = dataset.items.get(item_id=item_id)
    before = live_server.requests.count("POST /api/v1/assignments/items/tasks/")

    item.update_status(status=dl.ItemStatus.DISCARDED, task_id=world["task"]["id"])

    assert (
        live_server.requests.count("POST /api/v1/assignments/items/tasks/")
        == before + 1
    )
    assert server_status(live_server, world, item_id) == "discard"


def test_list_by_filter(dl, dataset) -> None:
    filters = dl.Filters(field="dir", values=TEST_FOLDER)
    items = dataset.items.list(filters=filters)
    assert items.items_count == 59
    assert all(item.dir == TEST_FOLDER for item in items.all())


def test_bulk_by_items(dl, dataset, http, world) -> None:
    filters = dl.Filters(field="dir", values=TEST_FOLDER)
    items = dataset.items.list(filters=filters)

    dataset.items.update_status(status=dl.ItemStatus.APPROVED, items=items)

    assert count_with_status(http, world, "approved", [{"dir": TEST_FOLDER}]) == 59


def test_bulk_by_filters(dl, dataset, http, world) -> None:
    filters = dl.Filters(field="dir", values=TEST_FOLDER)

    dataset.items.update_status(status=dl.ItemStatus.DISCARDED, filters=filters)

    assert count_with_status(http, world, "discard", [{"dir": TEST_FOLDER}]) == 59
    assert count_with_status(http, world, "approved", [{"dir": TEST_FOLDER}]) == 0


def test_bulk_by_item_ids_fails_inside_dtlpy(
    dl, dataset, http, world, live_server
) -> None:
    item_ids = [
        first_item_id(http, world, "/train"),
        first_item_id(http, world, "/Merino"),
    ]
    before_requests = len(live_server.requests.lines)
    before = database_fingerprint(live_server.storage)

    with pytest.raises(
        dl.exceptions.BadRequest, match="must provide assignment_id or task_id"
    ):
        dataset.items.update_status(status=dl.ItemStatus.COMPLETED, item_ids=item_ids)

    assert len(live_server.requests.lines) == before_requests
    assert database_fingerprint(live_server.storage) == before


def test_status_not_allowed(dl, dataset, http, world, live_server) -> None:
    item = dataset.items.get(item_id=first_item_id(http, world, "/train"))
    before = database_fingerprint(live_server.storage)

    with pytest.raises(dl.exceptions.BadRequest, match="completed, approved, discard"):
        item.update_status(status="needs_review")

    assert database_fingerprint(live_server.storage) == before


def test_task_by_name_and_items(dl, dataset, world) -> None:
    task = dataset.tasks.get(task_name="review")
    assert task.id == world["task"]["id"]
    assert [action.action for action in task.available_actions] == list(STATUSES)

    pages = task.get_items()

    assert pages.items_count == world["task"]["totalItems"] == 1979


def test_task_set_status(dl, dataset, http, world, live_server) -> None:
    task = dataset.tasks.get(task_name="review")
    item_id = first_item_id(http, world, "/train")

    done = task.set_status(
        status="completed",
        operation="create",
        item_ids=[item_id, "ffffffffffffffffffffffff"],
    )

    assert done is True
    assert server_status(live_server, world, item_id) == "completed"


def test_item_update_patches_user_metadata(dataset, http, world, live_server) -> None:
    item = dataset.items.get(item_id=first_item_id(http, world, "/Merino"))
    item.metadata.setdefault("user", {})["reviewed"] = True

    item.update()

    stored = live_server.storage.item(item.id)
    assert stored["metadata"]["user"]["reviewed"] is True
    assert "url" not in stored


def test_keyset_iteration_yields_each_item_once(dl, dtlpy_client, live_server) -> None:
    records = synthetic_records(2500, folder="/keyset", prefix="9")
    seed_dataset(live_server.storage, records, dataset="keyset")
    dataset = dl.projects.get(project_name=FIXTURE_PROJECT).datasets.get(
        dataset_name="keyset"
    )
    query_path = f"POST /api/v1/datasets/{dataset.id}/query 200"
    before = live_server.requests.count(query_path)

    pages = dataset.items.list(filters=dl.Filters(field="dir", values="/keyset"))
    seen = [item.id for item in pages.all()]

    assert pages.page_size == 1000
    assert len(seen) == 2500
    assert sorted(seen) == sorted(record["_id"] for record in records)
    # One request for list() and three for the pages of the iteration.
    assert live_server.requests.count(query_path) - before == 4


def test_item_get_by_filepath(dataset, http, world) -> None:
    item_id = first_item_id(http, world, "/Merino")
    filename = dataset.items.get(item_id=item_id).filename

    item = dataset.items.get(filepath=filename)

    assert item.id == item_id


def test_task_assignments(dl, dataset, world) -> None:
    task = dataset.tasks.get(task_id=world["task"]["id"])

    assignments = task.assignments.list()
    one = dl.assignments.get(assignment_id=world["task"]["assignmentIds"][0])

    annotators = sorted(assignment.annotator for assignment in assignments)
    assert annotators == ["ann1@example.com", "ann2@example.com"]
    assert one.annotator == "ann1@example.com"
    assert one.task_id == world["task"]["id"]


def test_tasks_list(dataset, world) -> None:
    tasks = dataset.tasks.list()
    assert [task.id for task in tasks] == [world["task"]["id"]]
