"""The documented status snippets, run unchanged on a replica of the real exports.

Every snippet uses ``import localsync as dl`` in place of ``import dtlpy as dl``;
the results are checked with ``$match`` queries on the items' refs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import localsync as dl
from tests.test_api_support import (
    ANNOTATOR,
    DATASET,
    FILES,
    PROJECT,
    TASK,
    exports_replica,
    journal_rows,
    stored_ids,
    with_status,
)


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory, exports_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("template") / "replica.db"
    exports_replica(path, exports_dir)
    return path


@pytest.fixture
def store(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A fresh copy of the exports replica, as the default ``dl`` replica."""
    path = tmp_path / "replica.db"
    shutil.copyfile(template, path)
    monkeypatch.setenv("LOCALSYNC_STORE", str(path))
    yield path
    dl.close()


@pytest.fixture
def dataset(store: Path) -> dl.Dataset:
    project = dl.projects.get(project_name=PROJECT)
    return project.datasets.get(dataset_name=DATASET)


@pytest.fixture
def task(dataset: dl.Dataset) -> dl.Task:
    return dataset.tasks.get(task_name=TASK)


def first_file(store: Path) -> str:
    return min(stored_ids(store, FILES))


def test_snippet_single_status(store: Path, dataset: dl.Dataset, task: dl.Task) -> None:
    item = dataset.items.get(item_id=first_file(store))
    item.update_status(status=dl.ItemStatus.COMPLETED)

    assert with_status(dataset, task.id, "completed") == {item.id}
    assignment = task.assignments.list()[0]
    assert with_status(dataset, assignment.id, "completed", "assignment") == {item.id}
    assert item.status(task_id=task.id) == "completed"
    rows = journal_rows(store)
    assert len(rows) == 1
    assert (rows[0]["item_id"], rows[0]["task_id"]) == (item.id, task.id)
    assert rows[0]["status"] == "completed"


def test_snippet_clear_status(store: Path, dataset: dl.Dataset, task: dl.Task) -> None:
    item = dataset.items.get(item_id=first_file(store))
    item.update_status(status=dl.ItemStatus.COMPLETED)
    item.update_status(dl.ITEM_STATUS_COMPLETED, clear=True)

    assert with_status(dataset, task.id, "completed") == set()
    assert item.id in with_status(dataset, task.id, None)
    assert item.status(task_id=task.id) is None
    task_refs = [r for r in item.metadata["system"]["refs"] if r["id"] == task.id]
    assert task_refs == [{"type": "task", "id": task.id, "metadata": {}}]
    assert [row["status"] for row in journal_rows(store)] == ["completed", None]


def test_clear_ignores_status_passed(
    dataset: dl.Dataset, task: dl.Task, store: Path
) -> None:
    item = dataset.items.get(item_id=first_file(store))
    item.update_status("discard")
    item.update_status("approved", clear=True)
    assert item.status(task_id=task.id) is None


def test_snippet_bulk_by_items_list(
    store: Path, dataset: dl.Dataset, task: dl.Task
) -> None:
    items = dataset.items.list(filters=dl.Filters(field="annotated", values=True))
    result = dataset.items.update_status(status=dl.ItemStatus.APPROVED, items=items)

    annotated = stored_ids(store, FILES + " AND json_extract(json, '$.annotated') = 1")
    assert len(annotated) > 1000, "the snippet should span more than one page"
    assert with_status(dataset, task.id, "approved") == annotated
    assert len(result.changed) == len(annotated)
    assert len(journal_rows(store)) == len(annotated)


def test_snippet_bulk_by_filters(
    store: Path, dataset: dl.Dataset, task: dl.Task
) -> None:
    filters = dl.Filters(field="dir", values="/Merino")
    dataset.items.update_status(status=dl.ItemStatus.DISCARDED, filters=filters)

    merino = stored_ids(store, FILES + " AND json_extract(json, '$.dir') = '/Merino'")
    assert len(merino) == 420
    assert with_status(dataset, task.id, "discard") == merino


def test_snippet_bulk_by_item_ids(
    store: Path, dataset: dl.Dataset, task: dl.Task
) -> None:
    item_ids = sorted(stored_ids(store, FILES))[:3]
    dataset.items.update_status(status=dl.ItemStatus.COMPLETED, item_ids=item_ids)
    assert with_status(dataset, task.id, "completed") == set(item_ids)


def test_snippet_entire_task(store: Path, dataset: dl.Dataset, task: dl.Task) -> None:
    dataset.items.update_status(status=dl.ItemStatus.COMPLETED, items=task.get_items())

    in_task = {item.id for item in task.get_items().all()}
    assert in_task == stored_ids(store, FILES)
    assert with_status(dataset, task.id, "completed") == in_task
    assignment = task.assignments.list()[0]
    assert with_status(dataset, assignment.id, "completed", "assignment") == in_task


def test_assignment_sets_task_register(
    store: Path, dataset: dl.Dataset, task: dl.Task
) -> None:
    assignment = dataset.assignments.list()[0]
    item = dataset.items.get(item_id=first_file(store))
    dataset.assignments.set_status("approved", "create", item.id, assignment.id)
    assert item.status(task_id=task.id) is None, "the object was fetched before"
    item = dataset.items.get(item_id=item.id)
    assert item.status(task_id=task.id) == "approved"
    assert item.status(assignment_id=assignment.id) == "approved"
    assert journal_rows(store)[0]["task_id"] == task.id


def test_item_listed_twice_updated_once(store: Path, dataset: dl.Dataset) -> None:
    item = dataset.items.get(item_id=first_file(store))
    result = dataset.items.update_status("completed", items=[item, item])
    assert result.journaled == 1
    result = dataset.items.update_status("approved", item_ids=[item.id, item.id])
    assert result.journaled == 1
    assert len(journal_rows(store)) == 2


def test_bulk_refreshes_given_items(dataset: dl.Dataset, task: dl.Task) -> None:
    pages = dataset.items.list(filters=dl.Filters(field="dir", values="/Merino"))
    page = pages.items
    dataset.items.update_status("discard", items=list(page))
    assert {item.status(task_id=task.id) for item in page} == {"discard"}


def test_task_set_status_skips_outsiders(
    store: Path, dataset: dl.Dataset, task: dl.Task
) -> None:
    folder = min(stored_ids(store, "json_extract(json, '$.type') = 'dir'"))
    file_id = first_file(store)
    result = task.set_status("completed", "create", [file_id, folder, "f" * 24])
    assert result.changed == [file_id]
    assert set(result.skipped) == {folder, "f" * 24}
    result = dataset.tasks.set_status("completed", "delete", task.id, [file_id])
    assert result.changed == [file_id]
    assert with_status(dataset, task.id, "completed") == set()


def test_result_counts_reassertions(dataset: dl.Dataset, store: Path) -> None:
    item = dataset.items.get(item_id=first_file(store))
    first = item.update_status("completed")
    again = item.update_status("completed")
    assert (first.changed, first.reasserted) == ([item.id], [])
    assert (again.changed, again.reasserted) == ([], [item.id])
    assert len(set(first.op_ids + again.op_ids)) == 2


def test_available_actions_and_entities(dataset: dl.Dataset, task: dl.Task) -> None:
    assert [action.action for action in task.available_actions] == [
        "completed",
        "approved",
        "discard",
    ]
    assert isinstance(task.available_actions[0], dl.ItemAction)
    assert task.dataset_id == dataset.id
    assert dataset.project.name == PROJECT
    assert [a.annotator for a in task.assignments.list()] == [ANNOTATOR]
    assert dl.datasets.list()[0].id == dataset.id
    assert dataset.tasks.list()[0].id == task.id
    assert (
        dataset.assignments.get(assignment_name=f"{TASK} ({ANNOTATOR})").task_id
        == task.id
    )


def test_item_attributes(store: Path, dataset: dl.Dataset) -> None:
    item = dataset.items.get(item_id=first_file(store))
    same = dataset.items.get(filepath=item.filename)
    assert same.id == item.id
    assert item.name == item.filename.rsplit("/", 1)[1]
    assert item.dir == item.filename.rsplit("/", 1)[0] or item.dir == "/"
    assert item.to_json()["id"] == item.id
    assert item.to_json() is not item.to_json()
    assert item.dataset_id == dataset.id
    assert item.type == "file"


def test_get_items_builds_sdk_query(task: dl.Task) -> None:
    pages = task.get_items()
    assert pages.filters.prepare()["filter"] == {
        "$and": [{"metadata.system.refs.id": {"$in": [task.id]}}]
    }
    pages = task.get_items(filters=dl.Filters(field="dir", values="/Merino"))
    assert pages.filters.prepare()["filter"]["$and"] == [
        {"hidden": False},
        {"type": "file"},
        {"dir": "/Merino"},
        {"metadata.system.refs.id": {"$in": [task.id]}},
    ]
    assert pages.items_count == 420
