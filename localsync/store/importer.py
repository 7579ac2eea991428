"""Loading Dataloop exports and creating tasks in a replica that has no remote."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localsync.errors import BadRequest
from localsync.exports import ExportedItem, exported_items, read_export_records
from localsync.statuses import add_ref, iso_timestamp
from localsync.store.replica import ITEM_BATCH, Replica, new_entity_id
from localsync.tasks import DEFAULT_TASK_FILTER, TaskPlan, plan_task, qa_filter

# Fields a re-import keeps from the stored item, so statuses and times survive it.
_KEPT_FIELDS = ("createdAt", "updatedAt")
_KEPT_SYSTEM_FIELDS = ("refs", "annotationStatus")


@dataclass
class ImportResult:
    project_id: str
    dataset_id: str
    items: int
    written: int
    annotations: int

    def to_json(self) -> dict[str, Any]:
        return {
            "projectId": self.project_id,
            "datasetId": self.dataset_id,
            "items": self.items,
            "written": self.written,
            "annotations": self.annotations,
        }


def import_exports(
    directory: str | Path,
    *,
    store: str | Path | Replica,
    project: str,
    dataset: str,
    creator: str = "import@localsync",
) -> ImportResult:
    """Load every Dataloop item export under ``directory`` into a replica.

    Creates the replica file, project and dataset when needed. Importing the same
    files again rewrites nothing, and keeps the statuses items already have.
    """
    replica = store if isinstance(store, Replica) else Replica(store, create=True)
    try:
        with replica.transaction():
            project_id, dataset_id = _ensure_dataset(replica, project, dataset)
            counts = _load(replica, directory, dataset_id, creator)
        return ImportResult(project_id, dataset_id, *counts)
    finally:
        if not isinstance(store, Replica):
            replica.close()


def _ensure_dataset(
    replica: Replica, project_name: str, dataset_name: str
) -> tuple[str, str]:
    for label, value in (("project", project_name), ("dataset", dataset_name)):
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(
                "400", f"The {label} name {value!r} must be a non-empty string"
            )
    current = replica.dataset()
    if current is not None:
        if current.get("name") != dataset_name:
            raise BadRequest(
                "400",
                f"Replica {str(replica.path)!r} already holds dataset "
                f"{current.get('name')!r}; use another --store for {dataset_name!r}",
            )
        project = replica.project() or {}
        if project.get("name") != project_name:
            raise BadRequest(
                "400",
                f"Dataset {dataset_name!r} of this replica is in project "
                f"{project.get('name')!r}, not {project_name!r}",
            )
        return project["id"], current["id"]
    now = iso_timestamp()
    project_id, dataset_id = new_entity_id(), new_entity_id()
    replica.put_project({"id": project_id, "name": project_name, "createdAt": now})
    replica.put_dataset(
        {
            "id": dataset_id,
            "name": dataset_name,
            "projects": [project_id],
            "createdAt": now,
            "updatedAt": now,
            "readonly": False,
        },
        project_id=project_id,
    )
    return project_id, dataset_id


def _load(replica: Replica, directory: str | Path, dataset_id: str, creator: str):
    items = written = annotations = 0
    records = read_export_records(directory)
    batch: list[ExportedItem] = []
    for exported in exported_items(records, dataset_id=dataset_id, creator=creator):
        batch.append(exported)
        if len(batch) >= ITEM_BATCH:
            written += _write_batch(replica, batch)
            items, annotations = items + len(batch), annotations + _count(batch)
            batch = []
    if batch:
        written += _write_batch(replica, batch)
        items, annotations = items + len(batch), annotations + _count(batch)
    return items, written, annotations


def _count(batch: list[ExportedItem]) -> int:
    return sum(len(exported.annotations) for exported in batch)


def _write_batch(replica: Replica, batch: list[ExportedItem]) -> int:
    ids = [exported.item["id"] for exported in batch]
    stored = _stored_items(replica, ids)
    changed = []
    for exported in batch:
        item = exported.item
        previous = stored.get(item["id"])
        if previous is not None:
            if previous.get("datasetId") != item["datasetId"]:
                raise BadRequest(
                    "400",
                    f"Item {item['id']!r} ({item['filename']!r}) already belongs to "
                    f"dataset {previous.get('datasetId')!r}",
                )
            _keep_stored_fields(item, previous)
            if item == previous:
                continue
        changed.append(item)
    replica.put_items(changed)
    replica.put_annotations(a for exported in batch for a in exported.annotations)
    return len(changed)


def _stored_items(replica: Replica, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    placeholders = ", ".join("?" for _ in ids)
    rows = replica.conn.execute(
        f"SELECT id, json FROM items WHERE id IN ({placeholders})", list(ids)
    ).fetchall()
    return {row[0]: json.loads(row[1]) for row in rows}


def _keep_stored_fields(item: dict[str, Any], previous: dict[str, Any]) -> None:
    for key in _KEPT_FIELDS:
        if key in previous:
            item[key] = previous[key]
    system = item["metadata"].setdefault("system", {})
    previous_system = (previous.get("metadata") or {}).get("system") or {}
    for key in _KEPT_SYSTEM_FIELDS:
        if key in previous_system:
            system[key] = previous_system[key]


def create_task(
    replica: Replica,
    *,
    name: str,
    task_type: str = "annotation",
    statuses: Sequence[str] = (),
    assignees: Sequence[str] = (),
    filter: dict[str, Any] | None = None,
    parent_task: str | None = None,
    creator: str = "admin@localsync",
) -> TaskPlan:
    """Create a task over the items a filter selects, in a replica with no remote.

    Without a filter the task takes the platform's default (files not hidden); a QA
    task with ``parent_task`` takes the items that have a status in that task.
    """
    dataset = replica.dataset()
    if dataset is None:
        raise BadRequest(
            "400",
            f"Replica {str(replica.path)!r} contains no dataset yet; "
            "import exports or clone first",
        )
    if any(task.get("name") == name for task in replica.tasks()):
        raise BadRequest("400", f"A task named {name!r} already exists in this dataset")
    parent_id = None
    if parent_task is not None:
        parent_id = _task_id_by_name(replica, parent_task)
    query = filter or (qa_filter(parent_id) if parent_id else DEFAULT_TASK_FILTER)
    with replica.transaction():
        item_ids = list(replica.matching_item_ids({"filter": query}))
        plan = plan_task(
            name=name,
            project_id=replica.setting("project_id") or "",
            dataset_id=dataset["id"],
            item_ids=item_ids,
            task_type=task_type,
            statuses=statuses,
            assignees=assignees,
            parent_task_id=parent_id,
            query=query,
            creator=creator,
        )
        replica.put_task(plan.task)
        for assignment in plan.assignments:
            replica.put_assignment(assignment)
        replica.put_items(_items_with_refs(replica, plan))
    return plan


def _task_id_by_name(replica: Replica, name: str) -> str:
    for task in replica.tasks():
        if task.get("name") == name:
            return task["id"]
    raise BadRequest("400", f"Parent task {name!r} not found in this replica")


def _items_with_refs(replica: Replica, plan: TaskPlan) -> Iterator[dict[str, Any]]:
    for item_id, assignment_id in plan.item_assignment.items():
        item = replica.get_item(item_id)
        add_ref(item, "task", plan.task["id"])
        if assignment_id:
            add_ref(item, "assignment", assignment_id)
        yield item
