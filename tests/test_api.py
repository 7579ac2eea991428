"""The documented status snippets, run unchanged on a replica of the real exports.

Every snippet uses ``import localsync as dl`` in place of ``import dtlpy as dl``;
the results are checked with ``$match`` queries on the items' refs.
"""

from __future__ import annotations

import copy
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import localsync as dl
from tests.server_fixtures import LOOPBACK_ENV, install_loopback_guard
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


# Arguments that update_status ignores, as the SDK does.

REPOSITORIES_LOGGER = "localsync.api.repositories"


def ignored_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == REPOSITORIES_LOGGER and record.levelno == logging.WARNING
    ]


def test_filters_win_over_item_ids_with_warning(
    store: Path, dataset: dl.Dataset, task: dl.Task, caplog: pytest.LogCaptureFixture
) -> None:
    outside = sorted(
        stored_ids(store, FILES + " AND json_extract(json, '$.dir') != '/Merino'")
    )[:2]
    filters = dl.Filters(field="dir", values="/Merino")

    with caplog.at_level(logging.WARNING, logger=REPOSITORIES_LOGGER):
        result = dataset.items.update_status(
            status=dl.ItemStatus.COMPLETED, filters=filters, item_ids=outside
        )

    merino = stored_ids(store, FILES + " AND json_extract(json, '$.dir') = '/Merino'")
    assert set(result.changed) == merino
    assert with_status(dataset, task.id, "completed") == merino
    messages = ignored_warnings(caplog)
    assert len(messages) == 1
    assert "item_ids ignored because filters was given" in messages[0]


def test_filters_win_over_items_and_ids(
    store: Path, dataset: dl.Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    item = dataset.items.get(item_id=first_file(store))
    filters = dl.Filters(field="dir", values="/Merino")

    with caplog.at_level(logging.WARNING, logger=REPOSITORIES_LOGGER):
        dataset.items.update_status(
            "approved", filters=filters, items=[item], item_ids=[item.id]
        )

    messages = ignored_warnings(caplog)
    assert len(messages) == 1
    assert "items and item_ids ignored because filters was given" in messages[0]


def test_items_win_over_item_ids_with_warning(
    store: Path, dataset: dl.Dataset, task: dl.Task, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = sorted(stored_ids(store, FILES))[:2]
    item = dataset.items.get(item_id=first)

    with caplog.at_level(logging.WARNING, logger=REPOSITORIES_LOGGER):
        result = dataset.items.update_status("discard", items=[item], item_ids=[second])

    assert result.changed == [first]
    assert with_status(dataset, task.id, "discard") == {first}
    messages = ignored_warnings(caplog)
    assert len(messages) == 1
    assert "item_ids ignored because items was given" in messages[0]


def test_single_target_argument_no_warning(
    store: Path, dataset: dl.Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    item = dataset.items.get(item_id=first_file(store))
    with caplog.at_level(logging.WARNING, logger=REPOSITORIES_LOGGER):
        dataset.items.update_status("completed", items=[item])
        dataset.items.update_status("approved", item_ids=[item.id])
        dataset.items.update_status(
            "discard", filters=dl.Filters(field="dir", values="/Merino")
        )
    assert ignored_warnings(caplog) == []


# SDK calls that localsync does not offer.


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The real ``dtlpy`` 1.126.5 module, imported with no network beyond loopback."""
    if "dtlpy" in sys.modules:
        return sys.modules["dtlpy"]
    install_loopback_guard()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in LOOPBACK_ENV.items():
            patch.setenv(name, value)
        patch.setenv("DATALOOP_PATH", str(tmp_path_factory.mktemp("dataloop")))
        import dtlpy

    return dtlpy


def test_repository_sdk_call_is_named(dataset: dl.Dataset, task: dl.Task) -> None:
    cases = [
        (lambda: dataset.items.upload, "dataset.items.upload"),
        (lambda: dl.datasets.create, "dl.datasets.create"),
        (lambda: dl.projects.create, "dl.projects.create"),
        (lambda: dl.items.make_dir, "dl.items.make_dir"),
        (lambda: dataset.project.datasets.merge, "project.datasets.merge"),
        (lambda: dataset.tasks.create_qa_task, "dataset.tasks.create_qa_task"),
        (lambda: task.assignments.reassign, "task.assignments.reassign"),
        (lambda: dataset.assignments.create, "dataset.assignments.create"),
    ]
    for access, call in cases:
        with pytest.raises(dl.api.UnsupportedAttributeError) as caught:
            access()
        assert str(caught.value).startswith(
            f"{call} is not available offline in localsync; "
        )
        assert isinstance(caught.value, dl.errors.NotSupportedError)
        assert isinstance(caught.value, AttributeError)


def test_repository_sdk_call_on_replica_handle(store: Path) -> None:
    with dl.Replica(store) as replica:
        with pytest.raises(
            dl.api.UnsupportedAttributeError, match="^replica.items.upload "
        ):
            replica.items.upload  # noqa: B018


def test_repository_private_and_unknown_names(dataset: dl.Dataset) -> None:
    items = dataset.items
    for name in ("_private", "__setstate__", "no_such_call"):
        with pytest.raises(AttributeError) as caught:
            getattr(items, name)
        assert not isinstance(caught.value, dl.errors.NotSupportedError), name
    assert not hasattr(items, "_private")
    assert not hasattr(items, "upload")
    duplicate = copy.copy(items)
    assert duplicate.dataset.id == dataset.id


def localsync_objects(
    dataset: dl.Dataset, task: dl.Task
) -> dict[str, tuple[object, str]]:
    """Return each localsync object by its dtlpy class name, with its call prefix."""
    item = dataset.items.list().items[0]
    return {
        "repositories.Projects": (dl.projects, "dl.projects"),
        "repositories.Datasets": (dataset.project.datasets, "project.datasets"),
        "repositories.Items": (dataset.items, "dataset.items"),
        "repositories.Tasks": (dataset.tasks, "dataset.tasks"),
        "repositories.Assignments": (task.assignments, "task.assignments"),
        "entities.Project": (dataset.project, "project"),
        "entities.Dataset": (dataset, "dataset"),
        "entities.Item": (item, "item"),
        "entities.Task": (task, "task"),
        "entities.Assignment": (task.assignments.list()[0], "assignment"),
    }


def sdk_public_names(cls: type) -> set[str]:
    """Return a dtlpy class's public attributes, attrs fields included."""
    import attr

    names = {name for name in dir(cls) if not name.startswith("_")}
    if attr.has(cls):
        names |= {f.name for f in attr.fields(cls) if not f.name.startswith("_")}
    return names


def test_every_sdk_name_exists_or_is_named(
    sdk: ModuleType, dataset: dl.Dataset, task: dl.Task
) -> None:
    checked = 0
    for path, (offered, prefix) in localsync_objects(dataset, task).items():
        module, class_name = path.split(".")
        sdk_class = getattr(getattr(sdk, module), class_name)
        for name in sorted(sdk_public_names(sdk_class)):
            if hasattr(type(offered), name):
                continue
            with pytest.raises(dl.api.UnsupportedAttributeError) as caught:
                getattr(offered, name)
            assert str(caught.value).startswith(f"{prefix}.{name} is not available")
            checked += 1
    assert checked > 100
