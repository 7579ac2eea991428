"""Planning a task: its JSON, its assignments and the refs it adds to items.

The replica (for exports worked on with no remote) and the server both create
tasks; this module decides what a new task looks like, and they store it.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from localsync.errors import BadRequest
from localsync.statuses import DEFAULT_ACTIONS, iso_timestamp

TASK_TYPES = tuple(DEFAULT_ACTIONS)
DEFAULT_TASK_FILTER: dict[str, Any] = {"$and": [{"hidden": False}, {"type": "file"}]}


def qa_filter(parent_task_id: str) -> dict[str, Any]:
    """Return the filter of a QA task: files with a status in the parent task."""
    return with_parent_status(DEFAULT_TASK_FILTER, parent_task_id)


def with_parent_status(query: dict[str, Any], parent_task_id: str) -> dict[str, Any]:
    """Return ``query`` narrowed to items whose parent-task ref has a status.

    This is the ``$match`` condition ``dtlpy``'s ``create_qa_task`` adds; a query
    that is already an ``$and`` list gets it as one more term.
    """
    query = copy.deepcopy(query)
    condition = {
        "metadata.system.refs": {
            "$match": {
                "id": parent_task_id,
                "type": "task",
                "metadata": {"status": {"$exists": True}},
            }
        }
    }
    if set(query) == {"$and"} and isinstance(query["$and"], list):
        return {"$and": [*query["$and"], condition]}
    return {"$and": [query, condition]}


@dataclass
class TaskPlan:
    task: dict[str, Any]
    assignments: list[dict[str, Any]]
    # item id -> the assignment id it was dealt to (None when the task has no assignees)
    item_assignment: dict[str, str | None] = field(default_factory=dict)


def plan_task(
    *,
    name: str,
    project_id: str,
    dataset_id: str,
    item_ids: Sequence[str],
    task_type: str = "annotation",
    statuses: Sequence[str] = (),
    assignees: Sequence[str] = (),
    parent_task_id: str | None = None,
    query: dict[str, Any] | None = None,
    creator: str = "admin@localsync",
) -> TaskPlan:
    """Plan a task over ``item_ids``, dealing them round-robin in id order."""
    if task_type not in TASK_TYPES:
        raise BadRequest(
            "400",
            f"Task type {task_type!r} is invalid; use one of: {', '.join(TASK_TYPES)}",
        )
    if not name or not isinstance(name, str):
        raise BadRequest("400", "Task name must be a non-empty string")
    for status in statuses:
        if not isinstance(status, str) or not status:
            raise BadRequest(
                "400", f"Task status {status!r} must be a non-empty string"
            )
    now = iso_timestamp()
    task_id = secrets.token_hex(12)
    assignments = [
        _assignment(task_id, name, email, project_id, dataset_id, now)
        for email in assignees
    ]
    ordered = sorted(set(item_ids))
    dealt: dict[str, str | None] = {}
    for position, item_id in enumerate(ordered):
        dealt[item_id] = (
            assignments[position % len(assignments)]["id"] if assignments else None
        )
    for assignment in assignments:
        assignment["totalItems"] = sum(
            1 for a in dealt.values() if a == assignment["id"]
        )

    spec: dict[str, Any] = {"type": task_type}
    if parent_task_id:
        spec["parentTaskId"] = parent_task_id
    task = {
        "id": task_id,
        "name": name,
        "projectId": project_id,
        "datasetId": dataset_id,
        "status": "inProgress",
        "spec": spec,
        "assignmentIds": [assignment["id"] for assignment in assignments],
        "availableActions": [
            {"action": status, "displayName": status, "color": "#FFFFFF"}
            for status in statuses
        ],
        "query": json.dumps({"filter": query or DEFAULT_TASK_FILTER}),
        "taskOwner": creator,
        "creator": creator,
        "priority": 2,
        "totalItems": len(ordered),
        "metadata": {"system": {}},
        "createdAt": now,
        "updatedAt": now,
    }
    return TaskPlan(task, assignments, dealt)


def _assignment(
    task_id: str, task_name: str, email: str, project_id: str, dataset_id: str, now: str
) -> dict[str, Any]:
    if not isinstance(email, str) or "@" not in email:
        raise BadRequest("400", f"Assignee {email!r} is not an email address")
    return {
        "id": secrets.token_hex(12),
        "name": f"{task_name} ({email})",
        "annotator": email,
        "status": "inProgress",
        "projectId": project_id,
        "metadata": {"system": {"taskId": task_id, "datasetId": dataset_id}},
        "createdAt": now,
        "updatedAt": now,
    }
