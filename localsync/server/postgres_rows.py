"""Row helpers of the PostgreSQL backend: entity JSON, array paths, tombstones."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from localsync.dql import array_paths_of
from localsync.server.batches import register_fields, register_view
from localsync.server.postgres_database import PostgresDatabase, Transaction
from localsync.server.storage import JSON

Connection = psycopg.Connection[dict[str, Any]]

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


def canonical(document: Any) -> str:
    """Return JSON with sorted keys, so equal documents give equal text.

    Python's ``==`` would call ``1`` and ``true`` equal; this text does not.
    """
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def load_json(connection: Connection, kind: str, entity_id: str) -> JSON | None:
    row = connection.execute(
        f"SELECT json FROM {ENTITY_TABLES[kind]} WHERE id = %s", (entity_id,)
    ).fetchone()
    return row["json"] if row else None


def load_many(connection: Connection, kind: str, ids: Iterable[str]) -> dict[str, JSON]:
    """Return the JSON of each stored entity among ``ids``, by id."""
    rows = connection.execute(
        f"SELECT id, json FROM {ENTITY_TABLES[kind]} WHERE id = ANY(%s)",
        (list(set(ids)),),
    )
    return {row["id"]: row["json"] for row in rows}


def lock_items(transaction: Transaction, item_ids: Iterable[str]) -> dict[str, JSON]:
    """Lock the stored items among ``item_ids`` for update; return their JSON.

    Rows are locked in id order, the order every writer uses, so two writers of
    overlapping items wait for each other instead of deadlocking.
    """
    rows = transaction.execute(
        "SELECT id, json FROM items WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        (sorted(set(item_ids)),),
    )
    return {row["id"]: row["json"] for row in rows}


def lock_register_views(
    transaction: Transaction, item_ids: Iterable[str]
) -> dict[str, JSON]:
    """Lock the stored items among ``item_ids``; return their register views.

    Rows are locked in id order, as :func:`lock_items` does. PostgreSQL extracts
    the fields, so the rest of each item is not sent or parsed.
    """
    rows = transaction.execute(
        "SELECT id, json -> 'datasetId' AS dataset_id, "
        "CASE WHEN jsonb_typeof(json #> '{metadata,system,refs}') = 'array' "
        "THEN json #> '{metadata,system,refs}' END AS refs "
        "FROM items WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        (sorted(set(item_ids)),),
    )
    return {
        row["id"]: register_view(row["id"], row["dataset_id"], row["refs"])
        for row in rows
    }


def load_all_json(connection: Connection, query: str, params: Any) -> list[JSON]:
    return [row["json"] for row in connection.execute(query, params)]


def save_items(
    transaction: Transaction, db: PostgresDatabase, items: Iterable[JSON]
) -> None:
    """Insert or replace items, recording their array paths first.

    The items travel as one JSON array: psycopg escapes every element of a
    ``jsonb[]`` parameter with a regular expression, which took most of a push's
    time. New rows are inserted in id order, the order of row locks.
    """
    rows = sorted(items, key=lambda item: item["id"])
    if not rows:
        return
    for item in rows:
        note_array_paths(transaction, db, item["datasetId"], "item", item)
    transaction.execute(
        "INSERT INTO items (id, dataset_id, json) "
        "SELECT document ->> 'id', document ->> 'datasetId', document "
        "FROM jsonb_array_elements(%s) AS rows (document) "
        "ON CONFLICT (id) DO UPDATE SET dataset_id = excluded.dataset_id, "
        "json = excluded.json",
        (Jsonb(rows),),
    )


def save_register_fields(transaction: Transaction, items: Iterable[JSON]) -> None:
    """Write the refs and annotationStatus of locked items into their stored JSON.

    The rest of each stored item stays as it is. The caller records the array
    paths the fields add.
    """
    rows = []
    for item in sorted(items, key=lambda item: item["id"]):
        refs, annotation_status = register_fields(item)
        rows.append({"id": item["id"], "refs": refs, "status": annotation_status})
    if not rows:
        return
    transaction.execute(
        "UPDATE items SET json = jsonb_set(jsonb_set(items.json, "
        "'{metadata,system,refs}', rows.document -> 'refs'), "
        "'{metadata,system,annotationStatus}', rows.document -> 'status') "
        "FROM jsonb_array_elements(%s) AS rows (document) "
        "WHERE items.id = rows.document ->> 'id'",
        (Jsonb(rows),),
    )


def save_item(transaction: Transaction, db: PostgresDatabase, item: JSON) -> None:
    save_items(transaction, db, [item])


def save_annotations(
    transaction: Transaction, db: PostgresDatabase, annotations: Iterable[JSON]
) -> None:
    """Insert or replace annotations, recording their array paths first."""
    rows = sorted(annotations, key=lambda annotation: annotation["id"])
    if not rows:
        return
    for annotation in rows:
        note_array_paths(
            transaction, db, annotation["datasetId"], "annotation", annotation
        )
    transaction.execute(
        "INSERT INTO annotations (id, item_id, dataset_id, json) "
        "SELECT document ->> 'id', document ->> 'itemId', "
        "document ->> 'datasetId', document "
        "FROM jsonb_array_elements(%s) AS rows (document) "
        "ON CONFLICT (id) DO UPDATE SET item_id = excluded.item_id, "
        "dataset_id = excluded.dataset_id, json = excluded.json",
        (Jsonb(rows),),
    )


def note_array_paths(
    transaction: Transaction,
    db: PostgresDatabase,
    dataset_id: str,
    kind: str,
    document: JSON,
) -> None:
    """Record the document's array-valued paths, which the query compiler needs.

    Paths this process saw committed are skipped; the catalog never loses a path.
    """
    resource = ARRAY_PATH_RESOURCES[kind]
    keys = {(dataset_id, resource, path) for path in array_paths_of(document)}
    new = sorted(keys - db.known_array_paths - transaction.new_array_paths)
    if not new:
        return
    transaction.execute(
        "INSERT INTO array_paths (dataset_id, resource, path) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) "
        "ON CONFLICT DO NOTHING",
        ([key[0] for key in new], [key[1] for key in new], [key[2] for key in new]),
    )
    transaction.new_array_paths.update(new)


def array_paths(connection: Connection, dataset_id: str, kind: str) -> frozenset[str]:
    rows = connection.execute(
        "SELECT path FROM array_paths WHERE dataset_id = %s AND resource = %s",
        (dataset_id, ARRAY_PATH_RESOURCES[kind]),
    )
    return frozenset(row["path"] for row in rows)


def tombstoned(
    connection: Connection, kind: str, entity_ids: Iterable[str]
) -> set[str]:
    """Return which of ``entity_ids`` have a deletion in the change feed."""
    ids = list(set(entity_ids))
    if not ids:
        return set()
    rows = connection.execute(
        "SELECT entity_id FROM changes "
        "WHERE kind = %s AND entity_id = ANY(%s) AND deleted",
        (kind, ids),
    )
    return {row["entity_id"] for row in rows}
