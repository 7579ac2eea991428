"""Building small replicas for tests: synthetic items, a task, statuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localsync.store import Replica, create_task, new_entity_id
from localsync.tasks import TaskPlan

ACTIONS = ("completed", "approved", "discard")


def synthetic_item(dataset_id: str, number: int, **extra: Any) -> dict[str, Any]:
    name = f"img{number:06d}.jpg"
    folder = f"/batch{number % 3}"
    item = {
        "id": f"{number:024x}",
        "datasetId": dataset_id,
        "type": "file",
        "hidden": False,
        "filename": f"{folder}/{name}",
        "name": name,
        "dir": folder,
        "annotated": number % 2 == 0,
        "annotationsCount": 1 if number % 2 == 0 else 0,
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": "2024-01-01T00:00:00.000Z",
        "metadata": {
            "system": {"refs": [], "annotationStatus": [], "mimetype": "image/jpeg"},
            "user": {"score": number % 100, "batch": number % 7},
        },
    }
    item.update(extra)
    return item


def make_replica(
    path: Path, count: int, *, assignees: tuple[str, ...] = ("ann@example.com",)
) -> tuple[Replica, TaskPlan]:
    """Return a replica with ``count`` items, all in one task with three statuses."""
    replica = Replica(path, create=True)
    project_id, dataset_id = new_entity_id(), new_entity_id()
    replica.put_project({"id": project_id, "name": "project"})
    replica.put_dataset({"id": dataset_id, "name": "dataset"}, project_id=project_id)
    replica.put_items(synthetic_item(dataset_id, number) for number in range(count))
    plan = create_task(replica, name="labeling", statuses=ACTIONS, assignees=assignees)
    return replica, plan


def register_statuses(replica: Replica, task_id: str) -> dict[str, str | None]:
    """Return each item's status in the task, read from its refs."""
    statuses = {}
    for (raw,) in replica.conn.execute(
        "SELECT json FROM items WHERE json LIKE ?", (f"%{task_id}%",)
    ):
        import json

        item = json.loads(raw)
        for ref in item["metadata"]["system"]["refs"]:
            if ref["id"] == task_id:
                statuses[item["id"]] = (ref.get("metadata") or {}).get("status")
    return statuses
