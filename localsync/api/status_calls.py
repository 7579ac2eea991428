"""Status calls of the API: picking the task, checking the status, journaling.

Every call checks the status against each target task before anything is
journaled, writes each task's items with one store call, all inside one
transaction, and refreshes the caller's item objects from the replica.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from localsync.errors import BadRequest, NotFound
from localsync.statuses import NO_TARGET_MESSAGE, check_status, pick_target
from localsync.store import Replica as Store
from localsync.store import StatusResult

if TYPE_CHECKING:
    from localsync.api.client import ReplicaApi
    from localsync.api.entities import Item

logger = logging.getLogger(__name__)

JSONDict = dict[str, Any]
Progress = Callable[[int], None]

# Item ids per SELECT when reading refs; below SQLite's default variable limit.
_READ_BATCH = 500
_OPERATIONS = {"create": False, "delete": True}


@dataclass
class BulkStatusResult(StatusResult):
    """A bulk call's result over several tasks: the sums, and one result per task.

    ``task_id`` is the task when exactly one was written, else ``None``; items
    skipped before a task was known (missing from the replica) are in ``skipped``.
    """

    task_id: str | None = None  # type: ignore[assignment]
    status: str | None = None
    results: list[StatusResult] = field(default_factory=list)

    def to_json(self) -> JSONDict:
        body = super().to_json()
        body["tasks"] = [
            {
                "taskId": result.task_id,
                "changed": len(result.changed),
                "reasserted": len(result.reasserted),
                "skipped": len(result.skipped),
            }
            for result in self.results
        ]
        return body


def status_value(status: Any) -> Any:
    """Return an ``ItemStatus`` member's string, anything else unchanged."""
    return status.value if isinstance(status, Enum) else status


def clears(operation: str) -> bool:
    """Return whether a ``create``/``delete`` operation clears the status."""
    if operation not in _OPERATIONS:
        raise BadRequest(
            "400", f"Unknown operation {operation!r}; use 'create' or 'delete'"
        )
    return _OPERATIONS[operation]


def item_id_list(item_ids: Any) -> list[str]:
    """Return ``item_ids`` (one id or an iterable of ids) as a list of strings.

    Raises ``BadRequest`` naming the value when it is not ids.
    """
    if isinstance(item_ids, str):
        return [item_ids]
    if not isinstance(item_ids, Iterable) or isinstance(item_ids, bytes | dict):
        raise BadRequest(
            "400", f"item_ids must be a list of item id strings, got {item_ids!r}"
        )
    ids = list(item_ids)
    wrong = [value for value in ids if not isinstance(value, str)]
    if wrong:
        raise BadRequest(
            "400", f"item_ids must be item id strings, got {wrong[0]!r} among them"
        )
    return ids


def task_of_assignment(store: Store, assignment_id: str) -> str:
    """Return the id of the task an assignment belongs to; its register is that one."""
    assignment = store.get_assignment(assignment_id)
    metadata = assignment.get("metadata") or {}
    task_id = (metadata.get("system") or metadata).get("taskId")
    if not task_id:
        raise NotFound("404", f"Assignment {assignment_id!r} names no task")
    return str(task_id)


def update_item_status(
    api: ReplicaApi,
    item: Item,
    status: Any,
    *,
    clear: bool = False,
    assignment_id: str | None = None,
    task_id: str | None = None,
) -> StatusResult:
    """Journal one item's status (or its clearing) in the task picked for it."""
    store = api.store
    stored = store.get_item(item.id)
    picked_task, picked_assignment = pick_target(stored, task_id, assignment_id)
    if picked_assignment is not None:
        target = task_of_assignment(store, picked_assignment)
    else:
        assert picked_task is not None
        target = picked_task

    task = store.get_task(target)
    value = None if clear else check_status(task, status)
    if not _has_ref(stored, target):
        raise NotFound(
            "404",
            f"Item {item.id!r} is not in task {task.get('name')!r} (id {target!r})",
        )

    result = store.set_status(
        [item.id], task_id=target, status=value, creator=api.current_user()
    )
    item._replace_json(store.get_item(item.id))
    return result


def item_status(
    api: ReplicaApi,
    item: Item,
    *,
    assignment_id: str | None = None,
    task_id: str | None = None,
) -> str | None:
    """Return an item object's status in a task, or via an assignment, in its task."""
    if assignment_id is None and task_id is None:
        raise BadRequest("400", NO_TARGET_MESSAGE)
    document = item._json
    if assignment_id is None:
        return _ref_status(document, task_id)
    if not _has_ref(document, assignment_id):
        return None
    try:
        register = task_of_assignment(api.store, assignment_id)
    except NotFound:
        return _ref_status(document, assignment_id)
    if _has_ref(document, register):
        return _ref_status(document, register)
    return _ref_status(document, assignment_id)


def update_many(
    api: ReplicaApi,
    status: Any,
    item_ids: Iterable[str],
    *,
    task_id: str | None = None,
    clear: bool = False,
    progress: Progress | None = None,
) -> StatusResult:
    """Journal a status for many items: in ``task_id``, or each in its picked task.

    An item listed twice gets one op. Items missing from the replica or not in
    their task are skipped and counted. Without ``task_id``, an item whose task
    cannot be picked fails the whole call with the SDK's ``BadRequest`` before
    anything is journaled.
    """
    store = api.store
    ids = list(dict.fromkeys(item_id_list(item_ids)))
    groups: dict[str, list[str]]
    missing: list[str]
    if task_id is not None:
        store.get_task(task_id)
        groups, missing = {task_id: ids}, []
    else:
        groups, missing = group_by_picked_task(store, ids, progress=progress)
    values = _checked_values(store, groups, status, clear)

    creator = api.current_user()
    results = []
    with store.transaction():
        for target, group in groups.items():
            result = store.set_status(
                group, task_id=target, status=values[target], creator=creator
            )
            results.append(result)
            if progress is not None and task_id is not None:
                progress(len(group))
    logger.info(
        "journaled %d ops over %d task(s) for %d item(s)",
        sum(r.journaled for r in results),
        len(results),
        len(ids),
    )
    return merge_results(
        results, missing, status=None if clear else status_value(status)
    )


def _checked_values(
    store: Store, groups: dict[str, list[str]], status: Any, clear: bool
) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for target in groups:
        values[target] = None if clear else check_status(store.get_task(target), status)
    return values


def group_by_picked_task(
    store: Store, item_ids: Sequence[str], *, progress: Progress | None = None
) -> tuple[dict[str, list[str]], list[str]]:
    """Group item ids by the task the SDK's rule picks for each; list the missing.

    Raises the SDK's ``BadRequest('400', 'must provide assignment_id or task_id')``
    for the first item with no ref, or with three or more refs; a note on the
    error names the item.
    """
    assignment_tasks = _assignment_tasks(store)
    groups: dict[str, list[str]] = {}
    missing: list[str] = []
    for start in range(0, len(item_ids), _READ_BATCH):
        batch = item_ids[start : start + _READ_BATCH]
        refs_by_id = _stored_refs(store, batch)
        for item_id in batch:
            if item_id not in refs_by_id:
                missing.append(item_id)
                continue
            target = _picked_task(item_id, refs_by_id[item_id], assignment_tasks)
            groups.setdefault(target, []).append(item_id)
        if progress is not None:
            progress(len(batch))
    return groups, missing


def _picked_task(
    item_id: str, refs: list[JSONDict], assignment_tasks: dict[str, str]
) -> str:
    document = {"id": item_id, "metadata": {"system": {"refs": refs}}}
    try:
        task_id, assignment_id = pick_target(document)
    except BadRequest as error:
        error.add_note(
            f"item {item_id!r} has {len(refs)} refs; a task is picked only for an "
            "item with one or two refs, so pass a task"
        )
        raise
    if assignment_id is not None:
        task_id = assignment_tasks.get(assignment_id) or task_id
        if task_id is None:
            raise NotFound(
                "404",
                f"Assignment not found: {assignment_id!r} (a ref of item {item_id!r})",
            )
    assert task_id is not None
    return task_id


def _assignment_tasks(store: Store) -> dict[str, str]:
    tasks = {}
    for assignment in store.assignments():
        metadata = assignment.get("metadata") or {}
        task_id = (metadata.get("system") or metadata).get("taskId")
        if task_id:
            tasks[assignment["id"]] = task_id
    return tasks


def _stored_refs(store: Store, item_ids: Sequence[str]) -> dict[str, list[JSONDict]]:
    placeholders = ", ".join("?" for _ in item_ids)
    rows = store.conn.execute(
        "SELECT id, json_extract(json, '$.metadata.system.refs') FROM items"
        f" WHERE id IN ({placeholders})",
        list(item_ids),
    ).fetchall()
    refs: dict[str, list[JSONDict]] = {}
    for item_id, raw in rows:
        value = json.loads(raw) if raw else []
        refs[item_id] = value if isinstance(value, list) else []
    return refs


def merge_results(
    results: list[StatusResult], missing: Sequence[str], *, status: str | None
) -> StatusResult:
    """Return the one task's result as is, or the sum over several tasks."""
    if len(results) == 1 and not missing:
        return results[0]
    merged = BulkStatusResult(
        task_id=results[0].task_id if len(results) == 1 else None,
        status=status,
        results=results,
    )
    for item_id in missing:
        merged.skipped[item_id] = "item not found"
    for result in results:
        merged.changed.extend(result.changed)
        merged.reasserted.extend(result.reasserted)
        merged.skipped.update(result.skipped)
        merged.op_ids.extend(result.op_ids)
    return merged


def status_counts(store: Store, task_id: str) -> dict[str | None, int]:
    """Count a task's items per status; ``None`` counts items with no status."""
    rows = store.conn.execute(
        "SELECT json_extract(r.value, '$.metadata.status'), COUNT(DISTINCT items.id)"
        " FROM items, json_each(items.json, '$.metadata.system.refs') AS r"
        " WHERE json_extract(r.value, '$.id') = ?"
        " AND json_extract(r.value, '$.type') = 'task'"
        " GROUP BY 1",
        (task_id,),
    ).fetchall()
    return {status: int(count) for status, count in rows}


def refresh_items(api: ReplicaApi, items: Sequence[Item]) -> None:
    """Reload item objects from the replica in place; deleted items stay as they are."""
    store = api.store
    for start in range(0, len(items), _READ_BATCH):
        batch = items[start : start + _READ_BATCH]
        placeholders = ", ".join("?" for _ in batch)
        rows = store.conn.execute(
            f"SELECT id, json FROM items WHERE id IN ({placeholders})",
            [item.id for item in batch],
        ).fetchall()
        stored = {item_id: raw for item_id, raw in rows}
        for item in batch:
            if item.id in stored:
                item._replace_json(json.loads(stored[item.id]))


def _refs(document: JSONDict) -> list[JSONDict]:
    refs = ((document.get("metadata") or {}).get("system") or {}).get("refs")
    return (
        [ref for ref in refs if isinstance(ref, dict)] if isinstance(refs, list) else []
    )


def _has_ref(document: JSONDict, ref_id: str) -> bool:
    return any(ref.get("id") == ref_id for ref in _refs(document))


def _ref_status(document: JSONDict, ref_id: str | None) -> str | None:
    for ref in _refs(document):
        if ref.get("id") == ref_id:
            return (ref.get("metadata") or {}).get("status")
    return None
