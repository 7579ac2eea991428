"""Scenario: one bulk status call against a plain sqlite3 floor doing the same work.

The floor journals the same rows with one ``executemany`` and rewrites the same item
JSON with ``json_set`` on fixed ref positions, in one transaction, with the replica's
SQLite settings (WAL, ``synchronous=FULL``) and localsync's time-ordered op ids. It
relies on every benchmark item having exactly two refs with the task's first, where
localsync has to search the refs. Like localsync, it writes the items in id order,
which keeps the B-tree pages it touches close together.
"""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench_lib.datasets import CREATOR, Dataset, file_item_ids
from bench_lib.timing import timed
from localsync.hlc import COUNTER_DIGITS, WALL_DIGITS
from localsync.statuses import iso_timestamp
from localsync.store import Replica
from localsync.store.journal import new_op_ids

MAX_ITEMS = 100_000
STATUS_CYCLE = ("approved", "discard")
SAMPLE_SIZE = 50

_FLOOR_UPDATE_SQL = """
UPDATE items SET json = json_set(json,
    '$.metadata.system.refs[0].metadata.status', ?1,
    '$.metadata.system.refs[0].metadata.creator', ?2,
    '$.metadata.system.refs[0].metadata.timestamp', ?3,
    '$.metadata.system.refs[1].metadata.status', ?1,
    '$.metadata.system.refs[1].metadata.creator', ?2,
    '$.metadata.system.refs[1].metadata.timestamp', ?3,
    '$.metadata.system.annotationStatus', json_array(?1))
 WHERE id = ?4
"""

_FLOOR_JOURNAL_SQL = (
    "INSERT INTO journal (op_id, replica_id, seq, item_id, task_id, status, hlc,"
    " creator, origin_op_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def pick_items(path: Path, count: int) -> list[str]:
    """Return ``count`` file item ids of the replica, sampled at random (seeded)."""
    conn = sqlite3.connect(path)
    try:
        item_ids = file_item_ids(conn)
    finally:
        conn.close()
    return random.Random(count).sample(item_ids, min(count, len(item_ids)))


def open_floor(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def floor_set_status(
    conn: sqlite3.Connection, item_ids: list[str], task_id: str, status: str
) -> None:
    """Journal and apply ``status`` with plain SQL, in one transaction."""
    item_ids = sorted(set(item_ids))
    node = secrets.token_hex(16)
    wall_ms = time.time_ns() // 1_000_000
    timestamp = iso_timestamp()
    op_ids = new_op_ids(len(item_ids))

    conn.execute("BEGIN IMMEDIATE")
    seq = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE replica_id = ?", (node,)
    ).fetchone()[0]
    conn.executemany(
        _FLOOR_JOURNAL_SQL,
        (
            (
                op_id,
                node,
                seq + offset,
                item_id,
                task_id,
                status,
                f"{wall_ms:0{WALL_DIGITS}d}-{offset:0{COUNTER_DIGITS}d}-{node}",
                CREATOR,
                None,
                wall_ms,
            )
            for offset, (op_id, item_id) in enumerate(
                zip(op_ids, item_ids, strict=True)
            )
        ),
    )
    conn.executemany(
        _FLOOR_UPDATE_SQL,
        ((status, CREATOR, timestamp, item_id) for item_id in item_ids),
    )
    conn.execute("COMMIT")


def _sample_documents(conn: sqlite3.Connection, item_ids: list[str]) -> list[Any]:
    """Return the sampled items' JSON without ref timestamps, for comparison."""
    documents = []
    for item_id in item_ids:
        (raw,) = conn.execute(
            "SELECT json FROM items WHERE id = ?", (item_id,)
        ).fetchone()
        document = json.loads(raw)
        for ref in document["metadata"]["system"]["refs"]:
            (ref.get("metadata") or {}).pop("timestamp", None)
        documents.append(document)
    return documents


def run_status_update(
    path: Path, dataset: Dataset, runs: int, *, stop_after: float
) -> dict[str, Any]:
    """Time ``Replica.set_status`` and the floor, alternating, on a working copy.

    Each pair of runs sets the next status of ``STATUS_CYCLE``, so every run changes
    the items it touches. Stops early when the next pair would pass ``stop_after``
    (a ``time.monotonic`` deadline).
    """
    item_ids = pick_items(path, MAX_ITEMS)
    sample = item_ids[:SAMPLE_SIZE]
    replica = Replica(path)
    floor = open_floor(path)
    localsync_seconds: list[float] = []
    floor_seconds: list[float] = []
    floor_matches = True
    try:
        for run in range(runs):
            status = STATUS_CYCLE[run % len(STATUS_CYCLE)]
            seconds, result = timed(
                lambda status=status: replica.set_status(
                    item_ids, task_id=dataset.task_id, status=status, creator=CREATOR
                )
            )
            if result.journaled != len(item_ids):
                raise RuntimeError(
                    f"set_status journaled {result.journaled} ops for "
                    f"{len(item_ids)} items; skipped: {len(result.skipped)}"
                )
            localsync_seconds.append(seconds)
            expected = _sample_documents(replica.conn, sample)

            seconds, _ = timed(
                lambda status=status: floor_set_status(
                    floor, item_ids, dataset.task_id, status
                )
            )
            floor_seconds.append(seconds)
            floor_matches &= _sample_documents(floor, sample) == expected

            pair = localsync_seconds[-1] + floor_seconds[-1]
            if time.monotonic() + pair > stop_after:
                break
    finally:
        floor.close()
        replica.close()
    return {
        "items": len(item_ids),
        "localsync": localsync_seconds,
        "reference": floor_seconds,
        "reference_matches": floor_matches,
    }
