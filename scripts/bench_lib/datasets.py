"""Benchmark replicas of a given size, built once into a cache folder and reused.

A replica of N items is synthesized from the real Dataloop exports (or, without
them, from generated records), put in one task with two assignees, and given
statuses: ``completed`` on about 30 % of the items and ``discard`` on about 5 %.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_lib.timing import timed
from localsync import dql
from localsync.exports import ExportedItem, exported_items, read_export_records
from localsync.schema_files import schema_dir
from localsync.store import Replica, create_task, new_entity_id
from localsync.synthetic import generate_export_records, synthesize_records

logger = logging.getLogger(__name__)

# Bump when the build changes, so caches made by an older build are rebuilt.
BUILD_VERSION = 1
SEED = 20240601
TEMPLATE_COUNT = 1979  # generated records when the real exports are missing
UNANNOTATED_SHARE = 0.2
ITEMS_PER_BATCH = 1000
STATUSES = ("completed", "approved", "discard")
ASSIGNEES = ("annotator1@example.com", "annotator2@example.com")
CREATOR = "bench@example.com"
WRITE_BATCH = 10_000


@dataclass
class Source:
    """The template records of the synthesized items, and their origin."""

    kind: str  # "real" or "generated"
    records: list[dict[str, Any]]
    note: str


@dataclass
class Dataset:
    """A built replica and the facts the scenarios need about it."""

    path: str
    size: int
    source: str
    dataset_id: str
    task_id: str
    assignment_ids: list[str]
    folders: list[str]
    build_seconds: float
    file_bytes: int
    version: int = BUILD_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_source(exports_dir: Path | None) -> Source:
    """Read the real exports, or fall back to generated records with a note."""
    if exports_dir is not None and exports_dir.is_dir():
        records = list(read_export_records(exports_dir))
        note = f"synthesized from {len(records):,} real Dataloop export records"
        return Source("real", records, f"{note} in {exports_dir}")
    records = list(generate_export_records(TEMPLATE_COUNT, seed=SEED))
    note = (
        f"real exports not found at {exports_dir}; synthesized from "
        f"{len(records):,} records of localsync.synthetic.generate_export_records"
    )
    return Source("generated", records, note)


def schema_digest() -> str:
    """Return a digest of the SQL schema files, so a schema change rebuilds caches."""
    digest = hashlib.sha1()
    root = schema_dir()
    for path in sorted(root.glob("*/*.sql")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def cache_path(data_dir: Path, size: int, source: Source) -> Path:
    name = f"replica-{source.kind}-{size}-v{BUILD_VERSION}-{schema_digest()}.db"
    return data_dir / name


def check_build(conn: sqlite3.Connection, task_id: str, size: int, what: str) -> None:
    """Raise when a build did not put ``size`` file items into the task."""
    row = conn.execute(
        "SELECT count(*) FROM items WHERE json_extract(json, '$.type') = 'file'"
        " AND EXISTS (SELECT 1 FROM json_each(items.json, '$.metadata.system.refs')"
        " AS ref WHERE json_extract(ref.value, '$.id') = ?)",
        (task_id,),
    ).fetchone()
    if row[0] != size:
        raise RuntimeError(
            f"the {what} build put {row[0]} of {size} file items into task {task_id}; "
            "is the working tree in the middle of a change?"
        )


def cached_dataset(data_dir: Path, size: int, source: Source) -> Dataset | None:
    """Return the cached replica of ``size`` items, or None when there is none."""
    path = cache_path(data_dir, size, source)
    manifest = path.with_suffix(".json")
    if not path.is_file() or not manifest.is_file():
        return None
    facts = json.loads(manifest.read_text())
    if facts.get("version") != BUILD_VERSION or facts.get("size") != size:
        return None
    return Dataset(**facts)


def known_build_rates(data_dir: Path) -> list[tuple[int, float, float]]:
    """Return ``(size, seconds per item, bytes per item)`` of every cached build."""
    rates = []
    for manifest in data_dir.glob(f"replica-*-v{BUILD_VERSION}-*.json"):
        facts = json.loads(manifest.read_text())
        size = facts.get("size") or 0
        if size:
            rates.append(
                (size, facts["build_seconds"] / size, facts["file_bytes"] / size)
            )
    return sorted(rates)


def build_dataset(data_dir: Path, size: int, source: Source) -> Dataset:
    """Build the replica of ``size`` items into the cache, replacing a stale one."""
    path = cache_path(data_dir, size, source)
    partial = path.with_name(path.name + ".partial")
    _remove_database(partial)
    data_dir.mkdir(parents=True, exist_ok=True)

    seconds, facts = timed(lambda: _build(partial, size, source))
    _remove_database(path)
    os.replace(partial, path)
    dataset = Dataset(
        path=str(path),
        size=size,
        source=source.note,
        build_seconds=round(seconds, 3),
        file_bytes=path.stat().st_size,
        **facts,
    )
    path.with_suffix(".json").write_text(json.dumps(dataset.to_json(), indent=2))
    return dataset


def _build(path: Path, size: int, source: Source) -> dict[str, Any]:
    replica = Replica(path, create=True)
    try:
        # A cache can be rebuilt, so the build skips the journal's fsyncs.
        replica.conn.execute("PRAGMA synchronous = OFF")
        project_id, dataset_id = new_entity_id(), new_entity_id()
        replica.put_project({"id": project_id, "name": "bench"})
        replica.put_dataset(
            {"id": dataset_id, "name": f"bench-{size}"}, project_id=project_id
        )
        folders = _put_records(replica, size, source, dataset_id)
        plan = create_task(
            replica, name="labeling", statuses=STATUSES, assignees=ASSIGNEES
        )
        task_id = plan.task["id"]
        check_build(replica.conn, task_id, size, "replica")
        _seed_statuses(replica, task_id)
        dql.create_path_index(replica.conn, "metadata.user.score")
        replica.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        replica.close()
    return {
        "dataset_id": dataset_id,
        "task_id": task_id,
        "assignment_ids": [a["id"] for a in plan.assignments],
        "folders": folders,
    }


def _put_records(
    replica: Replica, size: int, source: Source, dataset_id: str
) -> list[str]:
    records = synthesize_records(
        source.records,
        size,
        seed=SEED,
        items_per_batch=ITEMS_PER_BATCH,
        unannotated_share=UNANNOTATED_SHARE,
    )
    folders: set[str] = set()
    for batch in _batches(exported_items(records, dataset_id=dataset_id), WRITE_BATCH):
        with replica.transaction():
            replica.put_items(exported.item for exported in batch)
            replica.put_annotations(
                a for exported in batch for a in exported.annotations
            )
        folders.update(e.item["dir"] for e in batch if e.item["type"] == "file")
    return sorted(folders)


def seeded_statuses(item_ids: list[str]) -> dict[str, list[str]]:
    """Split file item ids into the statuses a build gives them, the same every time."""
    rng = random.Random(SEED)
    split: dict[str, list[str]] = {"completed": [], "discard": []}
    for item_id in item_ids:
        draw = rng.random()
        if draw < 0.30:
            split["completed"].append(item_id)
        elif draw < 0.35:
            split["discard"].append(item_id)
    return split


def _seed_statuses(replica: Replica, task_id: str) -> None:
    for status, item_ids in seeded_statuses(file_item_ids(replica.conn)).items():
        replica.set_status(item_ids, task_id=task_id, status=status, creator=CREATOR)


def file_item_ids(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT id FROM items WHERE json_extract(json, '$.type') = 'file' ORDER BY id"
    )
    return [row[0] for row in rows]


def working_copy(dataset: Dataset, directory: Path) -> Path:
    """Copy a cached replica for a scenario that writes, so the cache stays as built."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"work-{dataset.size}.db"
    _remove_database(target)
    shutil.copyfile(dataset.path, target)
    os.chmod(target, 0o600)
    return target


def remove_working_copy(path: Path) -> None:
    _remove_database(path)


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _batches(
    exported: Iterator[ExportedItem], size: int
) -> Iterator[list[ExportedItem]]:
    batch: list[ExportedItem] = []
    for entry in exported:
        batch.append(entry)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
