"""REST handlers for tasks, assignments and the two status endpoints."""

from __future__ import annotations

from typing import Any

from localsync.errors import BadRequest, InvalidQuery, NotFound
from localsync.server.app import RequestContext
from localsync.server.entities import with_item_links
from localsync.server.rest import context_projects, paged_response, query_documents
from localsync.server.storage import JSON

OPERATIONS = ("create", "delete")


def tasks_query(context: RequestContext) -> JSON:
    projects = context_projects(context, "projectIds")
    return query_documents(context.storage.tasks(projects), context.object_body())


def task_by_id(context: RequestContext) -> JSON:
    return _task(context, context.path["task_id"])


def _task(context: RequestContext, task_id: str) -> JSON:
    task = context.storage.task(task_id)
    if task is None:
        raise NotFound("404", f"Task {task_id!r} not found")
    context.user.require_project(task["projectId"])
    return task


def assignments_list(context: RequestContext) -> JSON:
    projects: set[str] = set()
    for value in context.query.getlist("projects"):
        projects.update(part for part in value.split(",") if part)
    for project_id in projects:
        context.user.require_project(project_id)
    if not projects:
        projects = set(context.user.project_ids)

    task_id = context.query.get("taskId") or None
    assignments = context.storage.assignments(projects, task_id=task_id)
    page = _query_integer(context, "page", 0)
    page_size = min(_query_integer(context, "pageSize", 1000), 1000)
    if page_size < 1:
        raise InvalidQuery("Query parameter pageSize must be at least 1")
    window = assignments[page * page_size : (page + 1) * page_size]
    return paged_response(
        window, total=len(assignments), page=page, page_size=page_size
    )


def _query_integer(context: RequestContext, name: str, default: int) -> int:
    text = context.query.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise InvalidQuery(
            f"Query parameter {name}={text!r} is not a non-negative integer"
        )
    return int(text)


def assignment_by_id(context: RequestContext) -> JSON:
    return _assignment(context, context.path["assignment_id"])


def _assignment(context: RequestContext, assignment_id: str) -> JSON:
    assignment = context.storage.assignment(assignment_id)
    if assignment is None:
        raise NotFound("404", f"Assignment {assignment_id!r} not found")
    context.user.require_project(assignment["projectId"])
    return assignment


def _status_of(operation: Any, status: Any) -> str | None:
    """Return the status a payload writes: its status to create, ``None`` to clear.

    A delete clears whatever ``status`` comes with it, as ``dtlpy`` sends one.
    """
    if operation not in OPERATIONS:
        raise BadRequest(
            "400",
            f"Unknown operation {operation!r}; use one of: {', '.join(OPERATIONS)}",
        )
    if operation == "delete":
        return None
    if not isinstance(status, str) or not status:
        raise BadRequest("400", f"Status {status!r} is invalid; send a status string")
    return status


def task_items_status(context: RequestContext) -> JSON:
    """Set or clear one task's status on many items; returns the items changed."""
    task = _task(context, context.path["task_id"])
    body = context.object_body()
    item_ids = body.get("itemIds")
    if not isinstance(item_ids, list) or not all(isinstance(i, str) for i in item_ids):
        raise BadRequest("400", f"itemIds must be a list of item ids, got {item_ids!r}")
    payload = body.get("statusPayload")
    if not isinstance(payload, dict):
        raise BadRequest(
            "400", "statusPayload must be an object with operation and status"
        )
    status = _status_of(payload.get("operation"), payload.get("status"))

    results = context.storage.set_statuses(
        task["id"], item_ids, status, user_email=context.user.email
    )
    return {
        result.item_id: {
            "status": result.status,
            "lastStatus": result.last_status,
            "hlc": result.hlc,
            "outcome": result.outcome,
        }
        for result in results
    }


def assignment_item_status(context: RequestContext) -> JSON:
    """Set or clear the status of one item through an assignment of its task."""
    assignment = _assignment(context, context.path["assignment_id"])
    item_id = context.path["item_id"]
    body = context.object_body()
    status = _status_of(body.get("operation"), body.get("status"))

    task_id = (assignment.get("metadata") or {}).get("system", {}).get("taskId")
    context.storage.set_statuses(
        task_id,
        [item_id],
        status,
        user_email=context.user.email,
        assignment_id=assignment["id"],
    )
    item = context.storage.item(item_id)
    return with_item_links(item, context.base_url) if item else {}


ROUTES: list[tuple[str, str, Any]] = [
    ("/annotationtasks/query", "POST", tasks_query),
    ("/annotationtasks/{task_id}", "GET", task_by_id),
    ("/assignments", "GET", assignments_list),
    ("/assignments/items/tasks/{task_id}/status", "POST", task_items_status),
    ("/assignments/{assignment_id}", "GET", assignment_by_id),
    (
        "/assignments/{assignment_id}/items/{item_id}/status",
        "POST",
        assignment_item_status,
    ),
]
