"""Helpers for the bad-input tests (no tests here): a small replica built from
synthetic exports, and fingerprints that change when a replica or server changes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from tests.server_fixtures import synthetic_records

PROJECT = "abuse-project"
DATASET = "abuse-dataset"
TASK = "review"
CUSTOM_TASK = "quality"
CUSTOM_STATUSES = ("needs-review", "blurry", "sharp")
ANNOTATOR = "ann@example.com"
ITEMS = 30

# Every replica table a command could change.
REPLICA_TABLES = (
    "settings",
    "projects",
    "datasets",
    "tasks",
    "assignments",
    "items",
    "annotations",
    "journal",
    "remote_registers",
    "conflicts",
)

# Traces of SQL or of Python internals that an error message must not contain.
LEAK_MARKERS = (
    "Traceback",
    "SELECT ",
    "sqlite3.",
    "OperationalError",
    "ProgrammingError",
    "psycopg",
    "json_extract",
    'File "',
)


def write_exports(folder: Path, count: int = ITEMS) -> Path:
    """Write ``count`` item export files into ``folder`` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for record in synthetic_records(count, folder="/abuse"):
        (folder / f"{record['_id']}.json").write_text(json.dumps(record))
    return folder


def build_replica(path: Path, exports: Path) -> dict[str, str]:
    """Import the exports and add two tasks; return the task ids by name.

    ``review`` offers the default statuses of an annotation task, and ``quality``
    the custom statuses. Both cover every file and have one assignee.
    """
    from localsync.store import Replica, create_task, import_exports

    import_exports(exports, store=path, project=PROJECT, dataset=DATASET)
    with Replica(path) as replica:
        review = create_task(replica, name=TASK, assignees=(ANNOTATOR,))
        quality = create_task(
            replica, name=CUSTOM_TASK, statuses=CUSTOM_STATUSES, assignees=(ANNOTATOR,)
        )
    return {TASK: review.task["id"], CUSTOM_TASK: quality.task["id"]}


def replica_fingerprint(path: Path) -> str:
    """Return a digest of every replica table, read with plain sqlite3."""
    digest = hashlib.sha256()
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for table in REPLICA_TABLES:
            for row in connection.execute(f"SELECT * FROM {table} ORDER BY 1"):
                digest.update(repr(tuple(row)).encode())
    finally:
        connection.close()
    return digest.hexdigest()


def journal_count(path: Path) -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM journal").fetchone()[0])
    finally:
        connection.close()


def assert_no_leak(text: str) -> None:
    """Check that an error text shows neither a traceback nor SQL."""
    for marker in LEAK_MARKERS:
        assert marker not in text, (marker, text[:500])


def item_ids(count: int = ITEMS) -> list[str]:
    return [record["_id"] for record in synthetic_records(count, folder="/abuse")]
