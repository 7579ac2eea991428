"""Bad input to the Python API (``import localsync as dl``): wrong argument types,
unknown statuses and filters of the wrong type. Each raises an SDK-shaped error
that names the problem, and the replica, its journal and the caller's item
objects stay unchanged."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import localsync as dl
from tests.abuse_support import (
    CUSTOM_TASK,
    DATASET,
    TASK,
    assert_no_leak,
    build_replica,
    replica_fingerprint,
    write_exports,
)
from tests.reliability_report import Tally

tally = Tally("bad_input")


@pytest.fixture(scope="module", autouse=True)
def write_report() -> Iterator[None]:
    yield
    tally.flush()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("abuse-api")
    path = folder / "replica.db"
    build_replica(path, write_exports(folder / "exports"))
    return path


@pytest.fixture
def api(template: Path, tmp_path: Path) -> Iterator[dl.Replica]:
    path = tmp_path / "replica.db"
    shutil.copyfile(template, path)
    with dl.Replica(path) as handle:
        yield handle


class Scene:
    """The entities a case calls on."""

    def __init__(self, api: dl.Replica) -> None:
        self.dataset = api.datasets.get(dataset_name=DATASET)
        self.task = self.dataset.tasks.get(task_name=TASK)
        self.custom = self.dataset.tasks.get(task_name=CUSTOM_TASK)
        self.ids = sorted(self.task.get_items().item_ids())
        self.item = self.dataset.items.get(item_id=self.ids[0])
        [self.assignment] = self.task.assignments.list()


Case = tuple[str, Callable[[Scene], Any], type[Exception], str]

CASES: list[Case] = [
    # Unknown statuses, through every way of setting one.
    (
        "item unknown status",
        lambda s: s.item.update_status("done", task_id=s.task.id),
        dl.exceptions.BadRequest,
        "Status 'done' is not allowed in task 'review'; use one of: completed, discard",
    ),
    (
        "item status of other task",
        lambda s: s.item.update_status("completed", task_id=s.custom.id),
        dl.exceptions.BadRequest,
        "use one of: needs-review, blurry, sharp",
    ),
    (
        "bulk unknown status",
        lambda s: s.dataset.items.update_status("done", items=s.task.get_items()),
        dl.exceptions.BadRequest,
        "'done' is not allowed",
    ),
    (
        "task unknown status",
        lambda s: s.task.set_status("approved", "create", s.ids),
        dl.exceptions.BadRequest,
        "'approved' is not allowed",
    ),
    (
        "assignment unknown status",
        lambda s: s.assignment.set_status("blurry", "create", s.ids[0]),
        dl.exceptions.BadRequest,
        "'blurry' is not allowed",
    ),
    (
        "status enum of other task",
        lambda s: s.item.update_status(dl.ItemStatus.APPROVED, task_id=s.task.id),
        dl.exceptions.BadRequest,
        "is not allowed",
    ),
    # Wrong argument types.
    (
        "status int",
        lambda s: s.item.update_status(123, task_id=s.task.id),
        dl.exceptions.BadRequest,
        "Status 123 is not allowed",
    ),
    (
        "status list",
        lambda s: s.item.update_status(["completed"], task_id=s.task.id),
        dl.exceptions.BadRequest,
        "Status ['completed'] is not allowed",
    ),
    (
        "status unpaired surrogate",
        lambda s: s.item.update_status("\ud800", task_id=s.task.id),
        dl.exceptions.BadRequest,
        "is not allowed",
    ),
    (
        "task id list",
        lambda s: s.item.update_status("completed", task_id=[s.task.id]),
        dl.exceptions.BadRequest,
        "An id must be a string, got [",
    ),
    (
        "item id list",
        lambda s: s.dataset.items.get(item_id=[s.ids[0]]),
        dl.exceptions.BadRequest,
        "An id must be a string",
    ),
    (
        "task id int",
        lambda s: s.dataset.tasks.get(task_id=5),
        dl.exceptions.BadRequest,
        "An id must be a string, got 5",
    ),
    (
        "item ids int",
        lambda s: s.dataset.items.update_status("completed", item_ids=5),
        dl.exceptions.BadRequest,
        "item_ids must be a list of item id strings, got 5",
    ),
    (
        "item ids of dicts",
        lambda s: s.dataset.items.update_status(
            "completed", item_ids=[{"id": s.ids[0]}]
        ),
        dl.exceptions.BadRequest,
        "item_ids must be item id strings",
    ),
    (
        "item ids with None",
        lambda s: s.task.set_status("completed", "create", [s.ids[0], None]),
        dl.exceptions.BadRequest,
        "got None among them",
    ),
    (
        "task item ids int",
        lambda s: s.task.set_status("completed", "create", 7),
        dl.exceptions.BadRequest,
        "item_ids must be a list",
    ),
    (
        "items of strings",
        lambda s: s.dataset.items.update_status("completed", items=s.ids),
        dl.exceptions.BadRequest,
        "items must be Item objects or pages of items",
    ),
    (
        "operation unknown",
        lambda s: s.task.set_status("completed", "set", s.ids),
        dl.exceptions.BadRequest,
        "Unknown operation 'set'",
    ),
    (
        "operation int",
        lambda s: s.assignment.set_status("completed", 1, s.ids[0]),
        dl.exceptions.BadRequest,
        "Unknown operation 1",
    ),
    # Filters of the wrong type or shape.
    (
        "filters dict",
        lambda s: s.dataset.items.update_status("completed", filters={"dir": "/a"}),
        dl.exceptions.BadRequest,
        "Unknown filters type: <class 'dict'>",
    ),
    (
        "filters string",
        lambda s: s.dataset.items.list(filters="dir=/abuse"),
        dl.exceptions.BadRequest,
        "Unknown filters type: <class 'str'>",
    ),
    (
        "filters of datasets",
        lambda s: s.dataset.items.list(filters=dl.Filters(resource="datasets")),
        dl.exceptions.BadRequest,
        "Filters resource must to be FiltersResource.ITEM",
    ),
    (
        "filter field int",
        lambda s: dl.Filters(field=5, values="x"),
        dl.exceptions.BadRequest,
        "Filter field must be a string such as 'dir', got 5",
    ),
    (
        "filter values set",
        lambda s: s.dataset.items.list(filters=dl.Filters(field="dir", values={"x"})),
        dl.exceptions.BadRequest,
        "value of field 'dir' is not JSON",
    ),
    (
        "filter operator unknown",
        lambda s: s.dataset.items.list(
            filters=dl.Filters(field="dir", values="/a", operator="near")
        ),
        dl.exceptions.BadRequest,
        "unknown operator '$near'",
    ),
    (
        "filter page size string",
        lambda s: s.dataset.items.list(filters=dl.Filters(page_size="ten")),
        dl.exceptions.BadRequest,
        "page_size must be an integer, got 'ten'",
    ),
    (
        "filter field surrogate",
        lambda s: s.dataset.items.update_status(
            "completed", filters=dl.Filters(field="\udc80", values="x")
        ),
        dl.exceptions.BadRequest,
        "unpaired surrogate",
    ),
    (
        "custom filter list",
        lambda s: s.dataset.items.list(filters=dl.Filters(custom_filter=[1])),
        dl.exceptions.BadRequest,
        "filter must be a JSON object",
    ),
    (
        "custom filter too deep",
        lambda s: s.dataset.items.update_status(
            "completed", filters=dl.Filters(custom_filter=nested_and(400))
        ),
        dl.exceptions.BadRequest,
        "nested too deeply",
    ),
]


def nested_and(depth: int) -> dict[str, Any]:
    condition: dict[str, Any] = {"dir": "/abuse"}
    for _ in range(depth):
        condition = {"$and": [condition]}
    return {"filter": condition}


@pytest.mark.parametrize(
    ("name", "call", "error", "fragment"), CASES, ids=[case[0] for case in CASES]
)
def test_bad_api_call_changes_nothing(
    api: dl.Replica,
    name: str,
    call: Callable[[Scene], Any],
    error: type[Exception],
    fragment: str,
) -> None:
    scene = Scene(api)
    item_before = copy.deepcopy(scene.item.to_json())
    before = replica_fingerprint(api.path)

    with pytest.raises(error) as caught:
        call(scene)

    message = getattr(caught.value, "message", str(caught.value))
    assert fragment in message
    assert_no_leak(message)
    assert replica_fingerprint(api.path) == before
    assert scene.item.to_json() == item_before
    tally.add("api")


def test_good_call_after_bad_ones_works(api: dl.Replica) -> None:
    """The handle stays usable: no transaction is left open by the failures."""
    scene = Scene(api)
    for _, call, error, _ in CASES[:5]:
        with pytest.raises(error):
            call(scene)

    result = scene.task.set_status("completed", "create", scene.ids[:3])

    assert result.journaled == 3
    assert not api.store.conn.in_transaction
