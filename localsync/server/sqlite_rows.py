"""Row helpers of the SQLite backend: entity JSON, the change feed, array paths."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from localsync.dql import load_array_paths, register_array_paths
from localsync.dql.rows import UPSERT_ITEM_SQL, item_row
from localsync.server.batches import register_fields, register_view
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


def load_many(
    connection: sqlite3.Connection, kind: str, ids: Iterable[str]
) -> dict[str, JSON]:
    """Return the JSON of each stored entity among ``ids``, by id, in one query."""
    unique_ids = sorted(set(ids))
    if not unique_ids:
        return {}
    rows = connection.execute(
        f"SELECT id, json FROM {ENTITY_TABLES[kind]} "
        "WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(unique_ids),),
    )
    return {row[0]: json.loads(row[1]) for row in rows}


def load_all_json(
    connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]
) -> list[JSON]:
    return [json.loads(row[0]) for row in connection.execute(sql, params)]


def save_item(connection: sqlite3.Connection, item: JSON) -> None:
    connection.execute(UPSERT_ITEM_SQL, item_row(item, dumps(item)))
    note_array_paths(connection, item["datasetId"], "item", item)


def load_register_views(
    connection: sqlite3.Connection, item_ids: Iterable[str]
) -> dict[str, JSON]:
    """Return the register view of each stored item among ``item_ids``, by id.

    SQLite extracts the fields from the JSON, so the rest of each item is not
    parsed in Python.
    """
    unique_ids = sorted(set(item_ids))
    if not unique_ids:
        return {}
    rows = connection.execute(
        "SELECT id, json_extract(json, '$.datasetId'), "
        "CASE json_type(json, '$.metadata.system.refs') WHEN 'array' "
        "THEN json_extract(json, '$.metadata.system.refs') END "
        "FROM items WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(unique_ids),),
    )
    return {
        row[0]: register_view(row[0], row[1], json.loads(row[2]) if row[2] else None)
        for row in rows
    }


def save_register_fields(connection: sqlite3.Connection, items: Iterable[JSON]) -> None:
    """Write the refs and annotationStatus of items into their stored JSON.

    The rest of each stored item, its projection columns included, stays as it
    is. The caller records the array paths the fields add.
    """
    rows = []
    for item in items:
        refs, annotation_status = register_fields(item)
        rows.append((dumps(refs), dumps(annotation_status), item["id"]))
    connection.executemany(
        "UPDATE items SET json = json_set(json, "
        "'$.metadata.system.refs', json(?), "
        "'$.metadata.system.annotationStatus', json(?)) WHERE id = ?",
        rows,
    )


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


def tombstoned(
    connection: sqlite3.Connection, kind: str, entity_ids: Iterable[str]
) -> set[str]:
    """Return which of ``entity_ids`` have a deletion in the change feed."""
    ids = sorted(set(entity_ids))
    if not ids:
        return set()
    rows = connection.execute(
        "SELECT entity_id FROM changes WHERE kind = ? AND deleted = 1 "
        "AND entity_id IN (SELECT value FROM json_each(?))",
        (kind, json.dumps(ids)),
    )
    return {row[0] for row in rows}
