"""Read and write the array-path catalog, and create expression indexes on paths."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from localsync.dql.paths import array_paths_of, is_identifier, split_path

RESOURCES = ("items", "annotations")


def register_array_paths(
    conn: sqlite3.Connection,
    dataset_id: str,
    resource: str,
    docs: Iterable[Mapping[str, Any]],
) -> None:
    """Add the array paths of ``docs`` to the catalog; call it before storing them."""
    _check_resource(resource)
    paths: set[str] = set()
    for doc in docs:
        paths |= array_paths_of(dict(doc))
    conn.executemany(
        "INSERT OR IGNORE INTO array_paths (dataset_id, resource, path)"
        " VALUES (?, ?, ?)",
        [(dataset_id, resource, path) for path in sorted(paths)],
    )


def load_array_paths(
    conn: sqlite3.Connection, dataset_id: str, resource: str = "items"
) -> frozenset[str]:
    """Return the catalog of ``resource`` in one dataset, for the query compiler."""
    _check_resource(resource)
    rows = conn.execute(
        "SELECT path FROM array_paths WHERE dataset_id = ? AND resource = ?",
        (dataset_id, resource),
    )
    return frozenset(path for (path,) in rows)


def create_path_index(
    conn: sqlite3.Connection, path: str, *, table: str = "items"
) -> str:
    """Create the expression index that serves tests on ``path``; return its name.

    The index contains ``json_extract(json, '$.<path>')`` after ``dataset_id``, the
    exact expression the compiler writes for a path that crosses no array, so
    equality and range tests (and counts of them) become index range scans. On
    items it ends with ``hidden`` and ``type``, so that the default filter is
    checked in the index too instead of in each row's JSON. Every segment must be
    an identifier, because only those appear in SQL text.
    """
    if table not in RESOURCES:
        raise ValueError(f"table must be one of {', '.join(RESOURCES)}, got {table!r}")
    segments = split_path(path)
    if not all(is_identifier(segment) for segment in segments):
        raise ValueError(
            f"cannot index path {path!r}: every segment must match "
            "[A-Za-z_][A-Za-z0-9_]*"
        )

    # The digest keeps names apart for paths like "a_b.c" and "a.b_c".
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    name = f"{table}_json_{'_'.join(segments)}_{digest}"
    columns = f"dataset_id, json_extract(json, '$.{path}')"
    if table == "items":
        columns += ", hidden, type"
    conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")
    return name


def _check_resource(resource: str) -> None:
    if resource not in RESOURCES:
        raise ValueError(
            f"resource must be one of {', '.join(RESOURCES)}, got {resource!r}"
        )
