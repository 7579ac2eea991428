"""The SQLite implementation of the server storage."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from localsync.dql import compile_query, parse_query
from localsync.errors import BadRequest, NotFound
from localsync.exports import ExportedItem
from localsync.server import sqlite_registers
from localsync.server.entities import (
    IDENTITY_FIELDS,
    LINK_FIELDS,
    REGISTER_FIELDS,
    assignment_json,
    dataset_json,
    deal_round_robin,
    keep_fields,
    merge_patch,
    new_id,
    project_json,
    task_filter,
    task_json,
)
from localsync.server.sqlite_database import SQLiteDatabase
from localsync.server.sqlite_rows import (
    array_paths,
    canonical,
    dumps,
    load_all_json,
    load_json,
    save_annotation,
    save_item,
    touch,
)
from localsync.server.storage import (
    JSON,
    ImportCounts,
    ItemPage,
    NewTask,
    PullPage,
    PushOp,
    PushOutcome,
    ServerMeta,
    StatusResult,
    Storage,
)
from localsync.statuses import add_ref, iso_timestamp

logger = logging.getLogger(__name__)

# Items written per transaction during an import, which bounds how long one
# import transaction holds the write lock.
IMPORT_BATCH = 500


def _batches(
    entries: Iterable[ExportedItem], size: int
) -> Iterator[list[ExportedItem]]:
    iterator = iter(entries)
    while batch := list(islice(iterator, size)):
        yield batch


def _placeholders(values: list[str]) -> str:
    return ", ".join("?" for _ in values)


class SQLiteStorage(Storage):
    """Server storage in one SQLite file (WAL, one writer at a time)."""

    def __init__(self, path: str | Path) -> None:
        self.url = str(path)
        self.db = SQLiteDatabase(path)

    def meta(self) -> ServerMeta:
        return self.db.meta

    def close(self) -> None:
        self.db.close()

    def renew_epoch(self) -> str:
        epoch = secrets.token_hex(16)
        with self.db.write() as connection:
            connection.execute(
                "UPDATE meta SET value = ? WHERE key = 'epoch'", (epoch,)
            )
        self.db.meta = dataclasses.replace(self.db.meta, epoch=epoch)
        logger.info("server database %s has a new epoch %s", self.url, epoch)
        return epoch

    # Projects and datasets.

    def ensure_project(self, name: str, *, creator: str) -> JSON:
        with self.db.write() as connection:
            found = load_all_json(
                connection, "SELECT json FROM projects WHERE name = ?", (name,)
            )
            if found:
                return found[0]
            project = project_json(new_id(), name, creator=creator, now=iso_timestamp())
            connection.execute(
                "INSERT INTO projects (id, name, json) VALUES (?, ?, ?)",
                (project["id"], name, dumps(project)),
            )
        logger.info("created project %r (%s)", name, project["id"])
        return project

    def project(self, project_id: str) -> JSON | None:
        with self.db.read() as connection:
            return load_json(connection, "project", project_id)

    def project_named(self, name: str) -> JSON | None:
        with self.db.read() as connection:
            rows = load_all_json(
                connection, "SELECT json FROM projects WHERE name = ?", (name,)
            )
        return rows[0] if rows else None

    def ensure_dataset(self, project_id: str, name: str, *, creator: str) -> JSON:
        with self.db.write() as connection:
            found = load_all_json(
                connection,
                "SELECT json FROM datasets WHERE project_id = ? AND name = ?",
                (project_id, name),
            )
            if found:
                return found[0]
            project = load_json(connection, "project", project_id)
            if project is None:
                raise NotFound("404", f"Project {project_id!r} not found")
            dataset = dataset_json(
                new_id(),
                name,
                project_id=project_id,
                creator=creator,
                now=iso_timestamp(),
            )
            connection.execute(
                "INSERT INTO datasets (id, project_id, name, json) VALUES (?, ?, ?, ?)",
                (dataset["id"], project_id, name, dumps(dataset)),
            )
            touch(connection, dataset["id"], "project", project_id)
            touch(connection, dataset["id"], "dataset", dataset["id"])
        logger.info("created dataset %r (%s)", name, dataset["id"])
        return dataset

    def dataset(self, dataset_id: str) -> JSON | None:
        with self.db.read() as connection:
            dataset = load_json(connection, "dataset", dataset_id)
            if dataset is not None:
                dataset["itemsCount"] = connection.execute(
                    "SELECT count(*) FROM items WHERE dataset_id = ?", (dataset_id,)
                ).fetchone()[0]
        return dataset

    def datasets(self, project_ids: Iterable[str]) -> list[JSON]:
        ids = sorted(set(project_ids))
        with self.db.read() as connection:
            return load_all_json(
                connection,
                f"SELECT json FROM datasets WHERE project_id IN ({_placeholders(ids)}) "
                "ORDER BY id",
                tuple(ids),
            )

    # Items.

    def item(self, item_id: str) -> JSON | None:
        with self.db.read() as connection:
            return load_json(connection, "item", item_id)

    def query_items(self, dataset_id: str, body: JSON) -> ItemPage:
        query = parse_query(body)
        with self.db.read() as connection:
            compiled = compile_query(
                body,
                dataset_id=dataset_id,
                array_paths=array_paths(connection, dataset_id, "item"),
                annotation_array_paths=array_paths(
                    connection, dataset_id, "annotation"
                ),
            )
            items = load_all_json_at(
                connection, compiled.select_sql, compiled.select_params
            )
            total = connection.execute(
                compiled.count_sql, compiled.count_params
            ).fetchone()[0]
        return ItemPage(
            items=items, total=total, page=query.page, page_size=query.page_size
        )

    def patch_item(
        self, item_id: str, changes: JSON, *, system: bool, user_email: str
    ) -> JSON:
        protected = [*IDENTITY_FIELDS, *REGISTER_FIELDS]
        if not system:
            protected.append(("metadata", "system"))
        with self.db.write() as connection:
            item = load_json(connection, "item", item_id)
            if item is None:
                raise NotFound("404", f"Item {item_id!r} not found")
            updated = copy.deepcopy(item)
            merge_patch(
                updated, {k: v for k, v in changes.items() if k not in LINK_FIELDS}
            )
            keep_fields(updated, item, protected)
            if canonical(updated) == canonical(item):
                return item
            updated["updatedAt"] = iso_timestamp()
            updated["updatedBy"] = user_email
            save_item(connection, updated)
            touch(connection, updated["datasetId"], "item", item_id)
        return updated

    def import_items(
        self, dataset_id: str, exported: Iterable[ExportedItem], *, now: str
    ) -> ImportCounts:
        counts = ImportCounts()
        for batch in _batches(exported, IMPORT_BATCH):
            with self.db.write() as connection:
                for entry in batch:
                    self._import_item(connection, dataset_id, entry, now, counts)
        logger.info("imported into dataset %s: %s", dataset_id, counts)
        return counts

    def _import_item(
        self,
        connection: sqlite3.Connection,
        dataset_id: str,
        entry: ExportedItem,
        now: str,
        counts: ImportCounts,
    ) -> None:
        item = copy.deepcopy(entry.item)
        stored = load_json(connection, "item", item["id"])
        if stored is not None and stored.get("datasetId") != dataset_id:
            raise BadRequest(
                "400",
                f"Item {item['id']!r} already belongs to dataset "
                f"{stored.get('datasetId')!r}; "
                "import each export folder into one dataset only",
            )
        if stored is None:
            counts.items_added += 1
        else:
            # Statuses belong to the server, and an export without timestamps
            # must not move the import time of an item that is already stored.
            keep_fields(item, stored, REGISTER_FIELDS)
            for key in ("createdAt", "updatedAt"):
                if item.get(key) == now and key in stored:
                    item[key] = stored[key]
        if stored is not None and canonical(item) == canonical(stored):
            counts.items_unchanged += 1
        else:
            counts.items_changed += stored is not None
            save_item(connection, item)
            touch(connection, dataset_id, "item", item["id"])

        for annotation in entry.annotations:
            self._import_annotation(connection, dataset_id, annotation, counts)

    def _import_annotation(
        self,
        connection: sqlite3.Connection,
        dataset_id: str,
        annotation: JSON,
        counts: ImportCounts,
    ) -> None:
        stored = load_json(connection, "annotation", annotation["id"])
        if stored is not None and canonical(stored) == canonical(annotation):
            counts.annotations_unchanged += 1
            return
        if stored is None:
            counts.annotations_added += 1
        else:
            counts.annotations_changed += 1
        save_annotation(connection, annotation)
        touch(connection, dataset_id, "annotation", annotation["id"])

    def delete_items(self, item_ids: Iterable[str]) -> list[str]:
        deleted = []
        with self.db.write() as connection:
            for item_id in dict.fromkeys(item_ids):
                item = load_json(connection, "item", item_id)
                if item is None:
                    continue
                self._delete_item(connection, item)
                deleted.append(item_id)
        logger.info("deleted %d items", len(deleted))
        return deleted

    def _delete_item(self, connection: sqlite3.Connection, item: JSON) -> None:
        item_id, dataset_id = item["id"], item["datasetId"]
        annotation_ids = [
            row[0]
            for row in connection.execute(
                "SELECT id FROM annotations WHERE item_id = ?", (item_id,)
            )
        ]
        connection.execute("DELETE FROM annotations WHERE item_id = ?", (item_id,))
        for annotation_id in annotation_ids:
            touch(connection, dataset_id, "annotation", annotation_id, deleted=True)

        # The item's tombstone stands for its registers, so their feed rows go; the
        # register history stays.
        task_ids = [
            row[0]
            for row in connection.execute(
                "SELECT task_id FROM registers WHERE item_id = ?", (item_id,)
            )
        ]
        connection.execute("DELETE FROM registers WHERE item_id = ?", (item_id,))
        connection.executemany(
            "DELETE FROM changes "
            "WHERE dataset_id = ? AND kind = 'register' AND entity_id = ?",
            [(dataset_id, f"{item_id}:{task_id}") for task_id in task_ids],
        )
        connection.execute("DELETE FROM items WHERE id = ?", (item_id,))
        touch(connection, dataset_id, "item", item_id, deleted=True)

    # Tasks and assignments.

    def create_task(self, request: NewTask) -> JSON:
        now = iso_timestamp()
        with self.db.write() as connection:
            self._check_new_task(connection, request)
            query = task_filter(request)
            item_ids = self._matching_item_ids(connection, request.dataset_id, query)

            task_id = new_id()
            assignment_ids = [new_id() for _ in request.assignees]
            task = task_json(
                task_id,
                request,
                query={"filter": query},
                assignment_ids=assignment_ids,
                total_items=len(item_ids),
                now=now,
            )
            connection.execute(
                "INSERT INTO tasks (id, project_id, dataset_id, name, json) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    task_id,
                    request.project_id,
                    request.dataset_id,
                    request.name,
                    dumps(task),
                ),
            )
            touch(connection, request.dataset_id, "task", task_id)

            assignment_of = self._create_assignments(
                connection, task, request.assignees, assignment_ids, item_ids, now
            )
            for item_id in item_ids:
                item = load_json(connection, "item", item_id)
                assert item is not None
                add_ref(item, "task", task_id)
                if item_id in assignment_of:
                    add_ref(item, "assignment", assignment_of[item_id])
                save_item(connection, item)
                touch(connection, request.dataset_id, "item", item_id)
        logger.info(
            "created task %r (%s) with %d items", request.name, task_id, len(item_ids)
        )
        return task

    def _check_new_task(self, connection: sqlite3.Connection, request: NewTask) -> None:
        dataset = load_json(connection, "dataset", request.dataset_id)
        if dataset is None:
            raise NotFound("404", f"Dataset {request.dataset_id!r} not found")
        taken = connection.execute(
            "SELECT 1 FROM tasks WHERE dataset_id = ? AND name = ?",
            (request.dataset_id, request.name),
        ).fetchone()
        if taken:
            raise BadRequest(
                "400",
                f"Task {request.name!r} already exists in dataset {dataset['name']!r}; "
                "choose another --name",
            )
        if request.task_type not in ("annotation", "qa"):
            raise BadRequest(
                "400",
                f"Task type {request.task_type!r} is invalid; use annotation or qa",
            )
        if request.task_type == "qa" and request.parent_task_id is None:
            raise BadRequest("400", "A QA task needs a parent task; pass --parent-task")
        if request.parent_task_id is not None:
            parent = load_json(connection, "task", request.parent_task_id)
            if parent is None or parent["datasetId"] != request.dataset_id:
                raise NotFound(
                    "404",
                    f"Parent task {request.parent_task_id!r} not found in dataset "
                    f"{dataset['name']!r}",
                )

    def _matching_item_ids(
        self, connection: sqlite3.Connection, dataset_id: str, query: JSON
    ) -> list[str]:
        compiled = compile_query(
            {"filter": query, "resource": "items"},
            dataset_id=dataset_id,
            array_paths=array_paths(connection, dataset_id, "item"),
        )
        alias = compiled.alias
        rows = connection.execute(
            f"SELECT {alias}.id FROM items AS {alias} WHERE {compiled.where_sql} "
            f"ORDER BY {alias}.id",
            compiled.where_params,
        )
        return [row[0] for row in rows]

    def _create_assignments(
        self,
        connection: sqlite3.Connection,
        task: JSON,
        assignees: tuple[str, ...],
        assignment_ids: list[str],
        item_ids: list[str],
        now: str,
    ) -> dict[str, str]:
        """Insert one assignment per assignee; return each dealt item's assignment."""
        assignment_of: dict[str, str] = {}
        hands = deal_round_robin(item_ids, len(assignees)) if assignees else []
        for annotator, assignment_id, hand in zip(
            assignees, assignment_ids, hands, strict=True
        ):
            assignment = assignment_json(
                assignment_id,
                task=task,
                annotator=annotator,
                total_items=len(hand),
                now=now,
            )
            connection.execute(
                "INSERT INTO assignments "
                "(id, task_id, project_id, dataset_id, annotator, json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    assignment_id,
                    task["id"],
                    task["projectId"],
                    task["datasetId"],
                    annotator,
                    dumps(assignment),
                ),
            )
            touch(connection, task["datasetId"], "assignment", assignment_id)
            assignment_of.update(dict.fromkeys(hand, assignment_id))
        return assignment_of

    def task(self, task_id: str) -> JSON | None:
        with self.db.read() as connection:
            return load_json(connection, "task", task_id)

    def task_named(self, dataset_id: str, name: str) -> JSON | None:
        with self.db.read() as connection:
            rows = load_all_json(
                connection,
                "SELECT json FROM tasks WHERE dataset_id = ? AND name = ?",
                (dataset_id, name),
            )
        return rows[0] if rows else None

    def tasks(self, project_ids: Iterable[str]) -> list[JSON]:
        ids = sorted(set(project_ids))
        with self.db.read() as connection:
            return load_all_json(
                connection,
                f"SELECT json FROM tasks WHERE project_id IN ({_placeholders(ids)}) "
                "ORDER BY id",
                tuple(ids),
            )

    def assignment(self, assignment_id: str) -> JSON | None:
        with self.db.read() as connection:
            return load_json(connection, "assignment", assignment_id)

    def assignments(
        self, project_ids: Iterable[str], *, task_id: str | None = None
    ) -> list[JSON]:
        ids = sorted(set(project_ids))
        sql = f"SELECT json FROM assignments WHERE project_id IN ({_placeholders(ids)})"
        params: tuple[str, ...] = tuple(ids)
        if task_id is not None:
            sql += " AND task_id = ?"
            params += (task_id,)
        with self.db.read() as connection:
            return load_all_json(connection, sql + " ORDER BY id", params)

    # Registers and sync.

    def set_statuses(
        self,
        task_id: str,
        item_ids: Iterable[str],
        status: str | None,
        *,
        user_email: str,
        assignment_id: str | None = None,
    ) -> list[StatusResult]:
        return sqlite_registers.set_statuses(
            self.db,
            task_id,
            item_ids,
            status,
            user_email=user_email,
            assignment_id=assignment_id,
        )

    def register(self, item_id: str, task_id: str) -> JSON | None:
        with self.db.read() as connection:
            return sqlite_registers.load_register(connection, item_id, task_id)

    def register_history(self, item_id: str, task_id: str) -> list[JSON]:
        return sqlite_registers.register_history(self.db, item_id, task_id)

    def push(
        self, *, replica_id: str, user_email: str, dataset_id: str, ops: list[PushOp]
    ) -> PushOutcome:
        return sqlite_registers.push(
            self.db,
            replica_id=replica_id,
            user_email=user_email,
            dataset_id=dataset_id,
            ops=ops,
        )

    def pull(
        self,
        dataset_id: str,
        *,
        cursor: int,
        limit: int,
        replica_id: str | None = None,
    ) -> PullPage:
        return sqlite_registers.pull(
            self.db, dataset_id, cursor=cursor, limit=limit, replica_id=replica_id
        )


def load_all_json_at(
    connection: sqlite3.Connection, sql: str, params: object
) -> list[JSON]:
    """Return the ``json`` column of each row a compiled query selects."""
    cursor = connection.execute(sql, params)  # type: ignore[arg-type]
    names = [column[0] for column in cursor.description]
    position = names.index("json")
    return [json.loads(row[position]) for row in cursor]
