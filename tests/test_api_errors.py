"""Bad input to the API: each error is the SDK's or names the problem, and the
journal stays unchanged."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import localsync as dl
from localsync.store import Replica
from tests.test_api_support import (
    DATASET,
    FILES,
    TASK,
    add_task,
    exports_replica,
    journal_rows,
    stored_ids,
)

MERINO = "json_extract(json, '$.dir') = '/Merino'"


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory, exports_dir: Path) -> Path:
    """The exports replica where /Merino files are in three tasks (four refs)."""
    path = tmp_path_factory.mktemp("errors") / "replica.db"
    exports_replica(path, exports_dir)
    merino = {"$and": [{"type": "file"}, {"dir": "/Merino"}]}
    add_task(path, "merino-a", merino)
    add_task(path, "merino-b", merino)
    add_task(path, "folders", {"type": "dir"})
    return path


@pytest.fixture
def api(template: Path, tmp_path: Path) -> Iterator[dl.Replica]:
    path = tmp_path / "replica.db"
    shutil.copyfile(template, path)
    with dl.Replica(path) as handle:
        yield handle


@pytest.fixture
def dataset(api: dl.Replica) -> dl.Dataset:
    return api.datasets.get(dataset_name=DATASET)


def test_unknown_status_lists_allowed(api: dl.Replica, dataset: dl.Dataset) -> None:
    item = dataset.items.get(
        item_id=min(stored_ids(api.path, FILES + " AND NOT " + MERINO))
    )
    with pytest.raises(dl.exceptions.BadRequest) as caught:
        item.update_status("needs_review")
    assert "'needs_review'" in caught.value.message
    assert "completed, approved, discard" in caught.value.message
    with pytest.raises(dl.exceptions.BadRequest, match="completed, approved, discard"):
        dataset.items.update_status(
            "done", filters=dl.Filters(field="dir", values="/train")
        )
    assert journal_rows(api.path) == []


def test_unknown_status_in_second_task(api: dl.Replica, dataset: dl.Dataset) -> None:
    """A status is checked in every task of a bulk call before any is written."""
    folders = dataset.tasks.get(task_name="folders")
    with Replica(api.path) as store:
        store.put_task(
            {
                **store.get_task(folders.id),
                "availableActions": [
                    {
                        "action": "archived",
                        "displayName": "archived",
                        "color": "#FFFFFF",
                    }
                ],
            }
        )
    file_id = min(stored_ids(api.path, FILES + " AND NOT " + MERINO))
    folder_id = min(stored_ids(api.path, "json_extract(json, '$.type') = 'dir'"))
    with pytest.raises(dl.exceptions.BadRequest, match="use one of: archived"):
        dataset.items.update_status("completed", item_ids=[file_id, folder_id])
    assert journal_rows(api.path) == []


def test_missing_item_id(api: dl.Replica, dataset: dl.Dataset) -> None:
    missing = "f" * 24
    with pytest.raises(dl.exceptions.NotFound, match=missing):
        dataset.items.get(item_id=missing)
    result = dataset.items.update_status("completed", item_ids=[missing])
    assert result.skipped == {missing: "item not found"}
    assert result.journaled == 0
    assert journal_rows(api.path) == []


def test_deleted_item_single_call(api: dl.Replica, dataset: dl.Dataset) -> None:
    item = dataset.items.get(item_id=min(stored_ids(api.path, FILES)))
    with Replica(api.path) as store:
        store.delete_items([item.id])
    with pytest.raises(dl.exceptions.NotFound, match="Item not found"):
        item.update_status("completed")
    assert journal_rows(api.path) == []


def test_three_tasks_no_task_given(api: dl.Replica, dataset: dl.Dataset) -> None:
    item_id = min(stored_ids(api.path, MERINO))
    item = dataset.items.get(item_id=item_id)
    assert len(item.metadata["system"]["refs"]) == 4

    with pytest.raises(dl.exceptions.BadRequest) as caught:
        item.update_status(dl.ItemStatus.COMPLETED)
    assert caught.value.args == ("400", "must provide assignment_id or task_id")
    with pytest.raises(dl.exceptions.BadRequest) as caught:
        dataset.items.update_status(
            "completed", filters=dl.Filters(field="dir", values="/Merino")
        )
    assert caught.value.args == ("400", "must provide assignment_id or task_id")
    assert any(item_id in note or "refs" in note for note in caught.value.__notes__)
    assert journal_rows(api.path) == []

    task = dataset.tasks.get(task_name="merino-b")
    item.update_status("completed", task_id=task.id)
    assert item.status(task_id=task.id) == "completed"
    assert item.status(task_id=dataset.tasks.get(task_name=TASK).id) is None


def test_no_refs_no_task_given(api: dl.Replica, dataset: dl.Dataset) -> None:
    with Replica(api.path) as store:
        folder = store.get_item(
            min(stored_ids(api.path, "json_extract(json, '$.type') = 'dir'"))
        )
        folder["metadata"]["system"]["refs"] = []
        store.put_items([folder])
    with pytest.raises(dl.exceptions.BadRequest, match="must provide assignment_id"):
        dataset.items.get(item_id=folder["id"]).update_status("completed")
    assert journal_rows(api.path) == []


def test_item_not_in_task_single(api: dl.Replica, dataset: dl.Dataset) -> None:
    task = dataset.tasks.get(task_name="merino-a")
    outsider = dataset.items.get(
        item_id=min(stored_ids(api.path, FILES + " AND NOT " + MERINO))
    )
    with pytest.raises(dl.exceptions.NotFound) as caught:
        outsider.update_status("completed", task_id=task.id)
    assert "'merino-a'" in caught.value.message
    assert outsider.id in caught.value.message
    assert journal_rows(api.path) == []


def test_item_not_in_task_bulk(api: dl.Replica, dataset: dl.Dataset) -> None:
    task = dataset.tasks.get(task_name="merino-a")
    inside = min(stored_ids(api.path, MERINO))
    outsider = min(stored_ids(api.path, FILES + " AND NOT " + MERINO))
    result = task.set_status("completed", "create", [inside, outsider])
    assert result.changed == [inside]
    assert list(result.skipped) == [outsider]
    assert len(journal_rows(api.path)) == 1


def test_bulk_groups_by_picked_task(
    api: dl.Replica, dataset: dl.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    file_ids = sorted(stored_ids(api.path, FILES + " AND NOT " + MERINO))[:5]
    folder_ids = sorted(stored_ids(api.path, "json_extract(json, '$.type') = 'dir'"))[
        :2
    ]
    calls: list[str] = []
    store = api.store
    original = store.set_status

    def counting(item_ids, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs["task_id"])
        return original(item_ids, **kwargs)

    monkeypatch.setattr(store, "set_status", counting)
    result = dataset.items.update_status("completed", item_ids=file_ids + folder_ids)

    labeling = dataset.tasks.get(task_name=TASK).id
    folders = dataset.tasks.get(task_name="folders").id
    assert sorted(calls) == sorted([labeling, folders])
    assert isinstance(result, dl.api.BulkStatusResult)
    assert result.task_id is None
    assert sorted(result.changed) == sorted(file_ids + folder_ids)
    assert [r.task_id for r in result.results] == calls


def test_bulk_is_one_transaction(api: dl.Replica, dataset: dl.Dataset) -> None:
    statements: list[str] = []
    api.store.conn.set_trace_callback(statements.append)
    task = dataset.tasks.get(task_name=TASK)
    result = dataset.items.update_status("approved", items=task.get_items())
    api.store.conn.set_trace_callback(None)
    assert len(result.changed) == len(stored_ids(api.path, FILES))
    assert sum(s.startswith("BEGIN") for s in statements) == 1
    assert sum(s == "COMMIT" for s in statements) == 1


def test_sdk_argument_errors(api: dl.Replica, dataset: dl.Dataset) -> None:
    cases = [
        (
            lambda: dataset.items.update_status("completed"),
            dl.exceptions.BadRequest,
            "Must provide either items, item_ids or filters",
        ),
        (
            lambda: dataset.tasks.get(),
            dl.exceptions.BadRequest,
            "Must provide either Annotation task name or Annotation task id",
        ),
        (
            lambda: dataset.tasks.get(task_name="nope"),
            dl.exceptions.NotFound,
            "Annotation task not found",
        ),
        (
            lambda: api.projects.get(project_name="nope"),
            dl.exceptions.NotFound,
            "Project not found",
        ),
        (
            lambda: api.datasets.get(dataset_name="nope"),
            dl.exceptions.NotFound,
            "Dataset not found. Name: 'nope'",
        ),
        (
            lambda: dataset.items.get(),
            dl.exceptions.BadRequest,
            'Must choose by at least one. "filename" or "item_id"',
        ),
        (
            lambda: dataset.items.get(filepath="/no/such.jpg"),
            dl.exceptions.NotFound,
            'Item not found. filepath= "/no/such.jpg"',
        ),
        (
            lambda: dataset.items.get(
                item_id=min(stored_ids(api.path, FILES))
            ).status(),
            dl.exceptions.BadRequest,
            "must provide assignment_id or task_id",
        ),
        (
            lambda: dataset.tasks.get(task_name=TASK).set_status(
                "completed", "set", []
            ),
            dl.exceptions.BadRequest,
            "Unknown operation 'set'",
        ),
        (
            lambda: dataset.items.list(filters={"dir": "/a"}),
            dl.exceptions.BadRequest,
            "Unknown filters type",
        ),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as caught:
            call()
        assert caught.value.message.startswith(message), caught.value.message
    assert journal_rows(api.path) == []


def test_malformed_query_raises(api: dl.Replica, dataset: dl.Dataset) -> None:
    filters = dl.Filters(custom_filter={"$and": [{"dir": {"$near": 1}}]})
    with pytest.raises(dl.exceptions.BadRequest, match=r"\$near"):
        dataset.items.list(filters=filters)
    with pytest.raises(dl.exceptions.BadRequest, match=r"\$near"):
        dataset.items.update_status("completed", filters=filters)
    assert journal_rows(api.path) == []
