"""Helpers for the API and CLI tests (no tests here): replicas, journal, queries."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import localsync as dl
from localsync.store import Replica, create_task, import_exports

PROJECT = "Fruit project"
DATASET = "FruitImage"
TASK = "labeling"
ACTIONS = ("completed", "approved", "discard")
ANNOTATOR = "ann@example.com"


def exports_replica(path: Path, exports_dir: Path) -> str:
    """Import the real exports and add a task over all files; return the task id.

    The task offers completed, approved and discard and has one assignee, so
    every file carries two refs: the task's and its assignment's.
    """
    import_exports(exports_dir, store=path, project=PROJECT, dataset=DATASET)
    with Replica(path) as replica:
        plan = create_task(replica, name=TASK, statuses=ACTIONS, assignees=(ANNOTATOR,))
    return str(plan.task["id"])


def add_task(path: Path, name: str, query: dict[str, Any]) -> str:
    """Add a task with no assignee (one ref per item) over the items of ``query``."""
    with Replica(path) as replica:
        plan = create_task(replica, name=name, statuses=ACTIONS, filter=query)
    return str(plan.task["id"])


def journal_rows(path: Path) -> list[dict[str, Any]]:
    """Return every journal row, read with plain sqlite3 so no localsync code runs."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM journal ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return [dict(row) for row in rows]


def with_status(
    dataset: Any, ref_id: str, status: str | None, ref_type: str = "task"
) -> set[str]:
    """Return the ids of items whose ref ``ref_id`` has ``status`` (None: no status)."""
    condition: dict[str, Any] = (
        {"$exists": False} if status is None else {"$in": [status]}
    )
    filters = dl.Filters(use_defaults=False)
    filters.add(
        field="metadata.system.refs",
        values={"id": ref_id, "type": ref_type, "metadata": {"status": condition}},
        operator=dl.FiltersOperations.MATCH,
    )
    return {item.id for item in dataset.items.list(filters=filters).all()}


def stored_ids(path: Path, where: str, params: tuple[Any, ...] = ()) -> set[str]:
    """Return the ids of stored items matching a SQL condition on their JSON."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(f"SELECT id FROM items WHERE {where}", params).fetchall()
    finally:
        conn.close()
    return {row[0] for row in rows}


FILES = "json_extract(json, '$.type') = 'file' AND json_extract(json, '$.hidden') = 0"
