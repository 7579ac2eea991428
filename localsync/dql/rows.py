"""Writing item rows: the JSON and the typed projections the compiler relies on.

The projection columns of ``items`` are plain columns, so every writer must fill
them from the JSON through :func:`item_row` and :data:`UPSERT_ITEM_SQL`. A writer
that changes only ``metadata`` (a status update) may leave them as they are.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from localsync.dql.compiler import ITEM_COLUMNS

# JSON field -> column, without ``id`` (the primary key, written separately).
PROJECTED = {field: column for field, column in ITEM_COLUMNS.items() if field != "id"}
_COLUMN_NAMES = [column.name for column in PROJECTED.values()]

UPSERT_ITEM_SQL = (
    f"INSERT INTO items (id, dataset_id, json, {', '.join(_COLUMN_NAMES)}) "
    f"VALUES (?, ?, ?, {', '.join('?' for _ in _COLUMN_NAMES)}) "
    "ON CONFLICT (id) DO UPDATE SET dataset_id = excluded.dataset_id, "
    "json = excluded.json, "
    + ", ".join(f"{name} = excluded.{name}" for name in _COLUMN_NAMES)
)


def project(value: Any, kind: str) -> str | int | None:
    """Return a JSON value as its column stores it: NULL unless of the column's kind."""
    if kind == "bool":
        return int(value) if isinstance(value, bool) else None
    return value if isinstance(value, str) else None


def item_row(
    item: dict[str, Any], json_text: str | None = None, *, dataset_id: str | None = None
) -> tuple[Any, ...]:
    """Return the parameters of :data:`UPSERT_ITEM_SQL` for one item.

    ``dataset_id`` defaults to the item's ``datasetId``.
    """
    if json_text is None:
        json_text = json.dumps(item, separators=(",", ":"))
    dataset = dataset_id if dataset_id is not None else item.get("datasetId") or ""
    return (item["id"], dataset, json_text, *projections_of(item))


def projections_of(item: dict[str, Any]) -> list[str | int | None]:
    return [
        project(item.get(field), column.kind) for field, column in PROJECTED.items()
    ]


def stale_projections(conn: sqlite3.Connection) -> list[str]:
    """Return the ids of items whose projection columns disagree with their JSON.

    Used by tests to prove every writer keeps the columns in step.
    """
    stale = []
    for row in conn.execute(f"SELECT id, json, {', '.join(_COLUMN_NAMES)} FROM items"):
        item = json.loads(row[1])
        expected = [
            project(item.get(field), column.kind) for field, column in PROJECTED.items()
        ]
        if list(row[2:]) != expected:
            stale.append(row[0])
    return stale
