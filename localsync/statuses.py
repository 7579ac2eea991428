"""Item status rules shared by the replica and the server.

A register is the status of one item in one task. It lives in the item's
``metadata.system.refs``: one ref for the task and one for each of the task's
assignments that holds the item, all showing the same value. The functions here
read and change item JSON in place; they do no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from localsync.errors import BadRequest, NotFound


class ItemStatus(str, Enum):
    COMPLETED = "completed"
    APPROVED = "approved"
    DISCARDED = "discard"


ITEM_STATUS_COMPLETED = ItemStatus.COMPLETED
ITEM_STATUS_APPROVED = ItemStatus.APPROVED
ITEM_STATUS_DISCARDED = ItemStatus.DISCARDED

# Allowed statuses of a task without ``availableActions``, by task type.
DEFAULT_ACTIONS: dict[str, tuple[str, ...]] = {
    "annotation": ("completed", "discard"),
    "qa": ("approved", "discard"),
}

NO_TARGET_MESSAGE = "must provide assignment_id or task_id"


def iso_timestamp(moment: datetime | None = None) -> str:
    """Format a time the way the platform does: ISO 8601 with milliseconds and Z."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def task_type(task: dict[str, Any]) -> str:
    return (task.get("spec") or {}).get("type") or "annotation"


def allowed_statuses(task: dict[str, Any]) -> list[str]:
    """Return the statuses a task accepts: its actions, else its type's defaults."""
    actions = [
        action["action"]
        for action in task.get("availableActions") or []
        if isinstance(action, dict) and isinstance(action.get("action"), str)
    ]
    if actions:
        return actions
    return list(DEFAULT_ACTIONS.get(task_type(task), DEFAULT_ACTIONS["annotation"]))


def check_status(task: dict[str, Any], status: Any) -> str:
    """Return ``status`` as a plain string, or raise ``BadRequest`` listing the allowed."""
    value = status.value if isinstance(status, Enum) else status
    allowed = allowed_statuses(task)
    if not isinstance(value, str) or value not in allowed:
        raise BadRequest(
            "400",
            f"Status {value!r} is not allowed in task {task.get('name')!r}; "
            f"use one of: {', '.join(allowed)}",
        )
    return value


def refs_of(item: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the item's ``metadata.system.refs`` list, creating it when missing."""
    system = item.setdefault("metadata", {}).setdefault("system", {})
    refs = system.get("refs")
    if not isinstance(refs, list):
        refs = system["refs"] = []
    return refs


def pick_target(
    item: dict[str, Any],
    task_id: str | None = None,
    assignment_id: str | None = None,
) -> tuple[str | None, str | None]:
    """Choose the task or assignment a status call without ids is meant for.

    The SDK's rule: with no id given and at most two refs, the last assignment ref
    and the last task ref are picked; with three or more refs nothing is, and the
    call fails with the SDK's message.
    """
    if task_id is None and assignment_id is None:
        refs = refs_of(item)
        if len(refs) <= 2:
            for ref in refs:
                if ref.get("type") == "assignment":
                    assignment_id = ref.get("id")
                elif ref.get("type") == "task":
                    task_id = ref.get("id")
    if task_id is None and assignment_id is None:
        raise BadRequest("400", NO_TARGET_MESSAGE)
    return task_id, assignment_id


def ref_status(item: dict[str, Any], ref_id: str) -> str | None:
    """Return the status of the first ref with this id, as ``item.status()`` does."""
    for ref in refs_of(item):
        if ref.get("id") == ref_id:
            return (ref.get("metadata") or {}).get("status")
    return None


def has_ref(item: dict[str, Any], ref_id: str) -> bool:
    return any(ref.get("id") == ref_id for ref in refs_of(item))


def set_register(
    item: dict[str, Any],
    *,
    task_id: str,
    assignment_ids: Iterable[str],
    status: str | None,
    creator: str | None,
    timestamp: str | None,
) -> None:
    """Write a register's value into every ref of the task and its assignments.

    ``status=None`` clears: it removes ``status``, ``creator`` and ``timestamp`` and
    keeps the ref. Raises ``NotFound`` when the item has no ref of the task.
    """
    if not has_ref(item, task_id):
        raise NotFound(
            "404", f"Item {item.get('id')!r} is not in task {task_id!r}"
        )
    ids = {task_id, *assignment_ids}
    for ref in refs_of(item):
        if ref.get("id") not in ids:
            continue
        metadata = ref.get("metadata")
        if not isinstance(metadata, dict):
            metadata = ref["metadata"] = {}
        if status is None:
            for key in ("status", "creator", "timestamp"):
                metadata.pop(key, None)
        else:
            metadata.update(status=status, creator=creator, timestamp=timestamp)
    refresh_annotation_status(item)


def refresh_annotation_status(item: dict[str, Any]) -> None:
    """Recompute ``metadata.system.annotationStatus`` from the item's refs."""
    statuses = {
        (ref.get("metadata") or {}).get("status") for ref in refs_of(item)
    }
    statuses.discard(None)
    item["metadata"]["system"]["annotationStatus"] = sorted(statuses)


def add_ref(item: dict[str, Any], ref_type: str, ref_id: str) -> bool:
    """Add a task or assignment ref when missing; return whether one was added."""
    if has_ref(item, ref_id):
        return False
    refs_of(item).append({"type": ref_type, "id": ref_id})
    return True


def remove_refs(item: dict[str, Any], ref_ids: Iterable[str]) -> None:
    ids = set(ref_ids)
    system = item["metadata"]["system"]
    system["refs"] = [ref for ref in refs_of(item) if ref.get("id") not in ids]
    refresh_annotation_status(item)
