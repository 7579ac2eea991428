"""Row helpers of the SQLite backend: entity JSON, the change feed, array paths."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from localsync.dql import load_array_paths, register_array_paths
from localsync.dql.rows import UPSERT_ITEM_SQL, item_row
from localsync.server.storage import JSON

# Tables that hold one JSON document per id; table names never come from requests.
ENTITY_TABLES = {
    "project": "projects",
    "dataset": "datasets",
    "task": "tasks",
    "assignment": "assignments",
    "item": "items",
    "annotation": "annotations",
}

# The resource names the array-path catalog uses, by kind.
ARRAY_PATH_RESOURCES = {"item": "items", "annotation": "annotations"}


def dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def canonical(document: Any) -> str:
    """Return JSON with sorted keys, so equal documents give equal text."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def load_json(connection: sqlite3.Connection, kind: str, entity_id: str) -> JSON | None:
    table = ENTITY_TABLES[kind]
    row = connection.execute(
        f"SELECT json FROM {table} WHERE id = ?", (entity_id,)
    ).fetchone()
    return json.loads(row[0]) if row else None


def load_all_json(
    connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]
) -> list[JSON]:
    return [json.loads(row[0]) for row in connection.execute(sql, params)]


def save_item(connection: sqlite3.Connection, item: JSON) -> None:
    connection.execute(UPSERT_ITEM_SQL, item_row(item, dumps(item)))
    note_array_paths(connection, item["datasetId"], "item", item)


def save_annotation(connection: sqlite3.Connection, annotation: JSON) -> None:
    connection.execute(
        "INSERT INTO annotations (id, item_id, dataset_id, json) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET item_id = excluded.item_id, "
        "dataset_id = excluded.dataset_id, json = excluded.json",
        (
            annotation["id"],
            annotation["itemId"],
            annotation["datasetId"],
            dumps(annotation),
        ),
    )
    note_array_paths(connection, annotation["datasetId"], "annotation", annotation)


def note_array_paths(
    connection: sqlite3.Connection, dataset_id: str, kind: str, document: JSON
) -> None:
    """Record the document's array-valued paths, which the query compiler needs."""
    register_array_paths(connection, dataset_id, ARRAY_PATH_RESOURCES[kind], [document])


def array_paths(
    connection: sqlite3.Connection, dataset_id: str, kind: str
) -> frozenset[str]:
    return load_array_paths(connection, dataset_id, ARRAY_PATH_RESOURCES[kind])


def touch(
    connection: sqlite3.Connection,
    dataset_id: str,
    kind: str,
    entity_id: str,
    *,
    deleted: bool = False,
) -> None:
    """Move an entity's change-feed row to the end of the feed.

    ``REPLACE`` deletes the old row and inserts a new one, and ``AUTOINCREMENT``
    never reuses a seq, so the entity's newest change is its only row.
    """
    connection.execute(
        "REPLACE INTO changes (dataset_id, kind, entity_id, deleted) "
        "VALUES (?, ?, ?, ?)",
        (dataset_id, kind, entity_id, int(deleted)),
    )


def is_tombstoned(connection: sqlite3.Connection, kind: str, entity_id: str) -> bool:
    row = connection.execute(
        "SELECT 1 FROM changes WHERE kind = ? AND entity_id = ? AND deleted = 1",
        (kind, entity_id),
    ).fetchone()
    return row is not None
