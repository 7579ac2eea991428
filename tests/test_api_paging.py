"""Pages of items: keyset and offset paging, and bulk statuses over many pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import localsync as dl
from localsync.api import PagedEntities
from tests.store_helpers import make_replica

COUNT = 2500


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("paging") / "replica.db"
    replica, _ = make_replica(path, COUNT)
    replica.close()
    return path


@pytest.fixture
def api(template: Path, tmp_path: Path) -> Iterator[dl.Replica]:
    path = tmp_path / "replica.db"
    path.write_bytes(template.read_bytes())
    with dl.Replica(path) as handle:
        yield handle


def recording_pages(api: dl.Replica, filters: dl.Filters) -> tuple[PagedEntities, list]:
    """Return pages over ``filters`` that record every query body they run."""
    bodies: list[dict[str, Any]] = []

    def query(body: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        bodies.append(body)
        return api.store.query(body)

    items = api.datasets.get().items
    pages = PagedEntities(
        filters=filters, query=query, build=items._build, page_size=filters.page_size
    )
    return pages, bodies


def test_keyset_pages_yield_each_once(api: dl.Replica) -> None:
    pages = api.datasets.get().items.list(filters=dl.Filters(page_size=1000))
    assert pages.items_count == COUNT
    assert pages.has_next_page

    sizes = [len(page) for page in pages]
    ids = [item.id for item in pages.all()]
    assert sizes == [1000, 1000, 500]
    assert len(ids) == COUNT
    assert len(set(ids)) == COUNT
    assert ids == sorted(ids)


def test_keyset_bodies_follow_sdk(api: dl.Replica) -> None:
    filters = dl.Filters(field="annotated", values=True)
    filters.page_size = 500
    pages, bodies = recording_pages(api, filters)
    items = list(pages.all())

    assert len(items) == COUNT // 2
    assert len(bodies) == 3
    first, second = bodies[0], bodies[1]
    assert first["sort"] == {"id": "ascending"}
    assert first["page"] == 0
    assert first["filter"]["$and"][-1] == {"annotated": True}
    assert second["page"] == 0
    assert second["filter"]["$and"][-1] == {"id": {"$gt": items[499].id}}


def test_offset_paging_with_sort(api: dl.Replica) -> None:
    filters = dl.Filters(page_size=1000)
    filters.sort_by("filename", dl.FiltersOrderByDirection.DESCENDING)
    pages, bodies = recording_pages(api, filters)
    names = [item.filename for item in pages.all()]

    assert [body["page"] for body in bodies] == [0, 1, 2]
    assert all("id" not in body["sort"] for body in bodies)
    assert names == sorted(names, reverse=True)
    assert len(set(names)) == COUNT


def test_list_page_offset(api: dl.Replica) -> None:
    items = api.datasets.get().items
    everything = [item.id for item in items.list(filters=dl.Filters()).all()]
    pages = items.list(page_offset=1, page_size=1000)
    assert [item.id for item in pages.items] == everything[1000:2000]
    assert pages.has_next_page
    assert pages.total_pages_count == 3


def test_custom_filter_pages(api: dl.Replica) -> None:
    filters = dl.Filters(custom_filter={"$and": [{"dir": "/batch1"}]}, page_size=300)
    pages, bodies = recording_pages(api, filters)
    ids = [item.id for item in pages.all()]
    assert len(ids) == len(set(ids)) == 833
    assert [body["page"] for body in bodies] == [0, 1, 2]


def test_bulk_update_over_pages(api: dl.Replica) -> None:
    dataset = api.datasets.get()
    task = dataset.tasks.get(task_name="labeling")
    pages = dataset.items.list(filters=dl.Filters(page_size=1000))
    result = dataset.items.update_status("completed", items=pages)
    assert len(result.changed) == COUNT
    assert task.status_counts() == {"completed": COUNT}

    result = dataset.items.update_status("discard", items=list(pages.all()))
    assert len(result.changed) == COUNT
    assert task.status_counts() == {"discard": COUNT}

    result = task.set_status(
        "approved", "create", [i.id for i in task.get_items().all()]
    )
    assert len(result.changed) == COUNT
    assert task.status_counts() == {"approved": COUNT}


def test_item_ids_runs_one_query(api: dl.Replica) -> None:
    pages, bodies = recording_pages(api, dl.Filters(page_size=100))
    calls: list[dict[str, Any]] = []

    def ids(body: dict[str, Any]) -> Iterator[str]:
        calls.append(body)
        return api.store.matching_item_ids(body)

    pages._ids = ids
    assert len(list(pages.item_ids())) == COUNT
    assert len(calls) == 1
    assert bodies == []
