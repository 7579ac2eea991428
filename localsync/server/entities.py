"""JSON shapes of projects, datasets, tasks and assignments, and item links.

The shapes carry the fields that ``dtlpy`` 1.126.5 reads from the platform. The URL
fields of an item are built per response from the request's base URL, never stored.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Sequence
from typing import Any

from localsync.server.storage import JSON, NewTask
from localsync.tasks import DEFAULT_TASK_FILTER, with_parent_status

# Item fields that hold URLs of the server that sent them.
LINK_FIELDS = ("url", "stream", "thumbnail", "annotations", "dataset")

# Fields a status call owns; a PATCH never changes them.
REGISTER_FIELDS = (
    ("metadata", "system", "refs"),
    ("metadata", "system", "annotationStatus"),
)
IDENTITY_FIELDS = (("id",), ("datasetId",))


def new_id() -> str:
    """Return a random 24-hex id, shaped like the platform's ObjectIds."""
    return secrets.token_hex(12)


def project_json(project_id: str, name: str, *, creator: str, now: str) -> JSON:
    return {
        "id": project_id,
        "name": name,
        "creator": creator,
        "createdAt": now,
        "updatedAt": now,
        "role": "owner",
        "archived": False,
        "isBlocked": False,
        "contributors": [],
    }


def dataset_json(
    dataset_id: str, name: str, *, project_id: str, creator: str, now: str
) -> JSON:
    return {
        "id": dataset_id,
        "name": name,
        "projects": [project_id],
        "creator": creator,
        "createdAt": now,
        "updatedAt": now,
        "readonly": False,
        "metadata": {},
    }


def available_actions(statuses: Sequence[str]) -> list[JSON]:
    return [
        {"action": status, "displayName": status, "color": "#FFFFFF"}
        for status in statuses
    ]


def task_json(
    task_id: str,
    request: NewTask,
    *,
    query: JSON,
    assignment_ids: list[str],
    total_items: int,
    now: str,
) -> JSON:
    spec: JSON = {"type": request.task_type}
    if request.parent_task_id:
        spec["parentTaskId"] = request.parent_task_id
    task: JSON = {
        "id": task_id,
        "name": request.name,
        "projectId": request.project_id,
        "datasetId": request.dataset_id,
        "status": "inProgress",
        "spec": spec,
        "assignmentIds": assignment_ids,
        "availableActions": available_actions(request.statuses),
        "metadata": {"system": copy.deepcopy(request.extra_metadata)},
        "query": json.dumps(query),
        "taskOwner": request.creator,
        "creator": request.creator,
        "priority": 2,
        "totalItems": total_items,
        "createdAt": now,
        "updatedAt": now,
    }
    if not request.statuses:
        del task["availableActions"]
    return task


def assignment_json(
    assignment_id: str,
    *,
    task: JSON,
    annotator: str,
    total_items: int,
    now: str,
) -> JSON:
    return {
        "id": assignment_id,
        "name": f"{task['name']} - {annotator}",
        "annotator": annotator,
        "status": "inProgress",
        "projectId": task["projectId"],
        "metadata": {"system": {"taskId": task["id"], "datasetId": task["datasetId"]}},
        "totalItems": total_items,
        "createdAt": now,
        "updatedAt": now,
        "updatedBy": task["creator"],
    }


def deal_round_robin(item_ids: Sequence[str], hands: int) -> list[list[str]]:
    """Split ids into ``hands`` lists, dealing one at a time in the given order."""
    dealt: list[list[str]] = [[] for _ in range(hands)]
    for index, item_id in enumerate(item_ids):
        dealt[index % hands].append(item_id)
    return dealt


def with_item_links(item: JSON, base_url: str) -> JSON:
    """Return a copy of the item with the URL fields the SDK diffs against."""
    api = f"{base_url.rstrip('/')}/api/v1"
    linked = dict(item)
    linked["url"] = f"{api}/items/{item['id']}"
    linked["stream"] = f"{api}/items/{item['id']}/stream"
    linked["thumbnail"] = f"{api}/items/{item['id']}/thumbnail"
    linked["annotations"] = f"{api}/items/{item['id']}/annotations"
    linked["dataset"] = f"{api}/datasets/{item['datasetId']}"
    return linked


def merge_patch(target: JSON, changes: JSON) -> None:
    """Merge an item diff in place: dicts merge, other values replace, null deletes.

    ``dtlpy`` sends a removed key as null, so null removes the key here.
    """
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def keep_fields(target: JSON, source: JSON, paths: Sequence[tuple[str, ...]]) -> None:
    """Copy each dotted path of ``source`` over ``target``, removing it where absent."""
    for path in paths:
        source_parent: Any = source
        target_parent: Any = target
        for key in path[:-1]:
            source_parent = (
                source_parent.get(key) if isinstance(source_parent, dict) else None
            )
            if not isinstance(target_parent.get(key), dict):
                target_parent[key] = {}
            target_parent = target_parent[key]
        leaf = path[-1]
        if isinstance(source_parent, dict) and leaf in source_parent:
            target_parent[leaf] = copy.deepcopy(source_parent[leaf])
        else:
            target_parent.pop(leaf, None)


def task_filter(request: NewTask) -> JSON:
    """Return the filter that selects a new task's items.

    A QA task takes the items whose parent-task ref has a status.
    """
    query = request.query or DEFAULT_TASK_FILTER
    if request.parent_task_id is None:
        return copy.deepcopy(query)
    return with_parent_status(query, request.parent_task_id)
