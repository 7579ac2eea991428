"""The replica: one SQLite file holding one dataset, its tasks and the journal."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from localsync import dql
from localsync.dql import rows as dql_rows
from localsync.errors import BadRequest, NotFound
from localsync.hlc import new_node_id
from localsync.statuses import check_status
from localsync.store.connection import connect, write_transaction
from localsync.store.journal import StatusResult, append_status_ops
from localsync.store.settings import get_setting, set_setting

ITEM_BATCH = 1000


def new_entity_id() -> str:
    """Return a random 24-hex id, the shape of the platform's ids."""
    return secrets.token_hex(12)


class Replica:
    """A handle on one replica file.

    Open it with ``Replica(path)``; ``create=True`` makes a new file. Every write
    method runs in one ``BEGIN IMMEDIATE`` transaction, or joins the one that
    :meth:`transaction` opened.
    """

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        self.conn: sqlite3.Connection = connect(self.path, create=create)
        self.db = sqlite_utils.Database(self.conn)
        if get_setting(self.conn, "replica_id") is None:
            with self.transaction():
                if get_setting(self.conn, "replica_id") is None:
                    set_setting(self.conn, "replica_id", new_node_id())

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Replica:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with write_transaction(self.conn) as conn:
            yield conn

    # Settings

    def setting(self, key: str, default: str | None = None) -> str | None:
        return get_setting(self.conn, key, default)

    def set_setting(self, key: str, value: str | int | None) -> None:
        with self.transaction():
            set_setting(self.conn, key, value)

    @property
    def replica_id(self) -> str:
        value = self.setting("replica_id")
        assert value is not None
        return value

    @property
    def dataset_id(self) -> str | None:
        return self.setting("dataset_id")

    # Entities

    def put_project(self, project: dict[str, Any]) -> None:
        with self.transaction():
            self.db["projects"].upsert(
                {
                    "id": project["id"],
                    "name": project.get("name") or "",
                    "json": _dump(project),
                },
                pk="id",
            )

    def put_dataset(self, dataset: dict[str, Any], *, project_id: str) -> None:
        """Store the replica's dataset. A replica contains one dataset only."""
        with self.transaction():
            current = self.dataset_id
            if current is not None and current != dataset["id"]:
                raise BadRequest(
                    "400",
                    f"Replica {str(self.path)!r} already holds dataset {current!r}; "
                    "use another --store path for dataset "
                    f"{dataset.get('name') or dataset['id']!r}",
                )
            self.db["datasets"].upsert(
                {
                    "id": dataset["id"],
                    "project_id": project_id,
                    "name": dataset.get("name") or "",
                    "json": _dump(dataset),
                },
                pk="id",
            )
            set_setting(self.conn, "dataset_id", dataset["id"])
            set_setting(self.conn, "project_id", project_id)

    def put_task(self, task: dict[str, Any]) -> None:
        with self.transaction():
            self.db["tasks"].upsert(
                {
                    "id": task["id"],
                    "dataset_id": task.get("datasetId") or "",
                    "name": task.get("name") or "",
                    "json": _dump(task),
                },
                pk="id",
            )

    def put_assignment(self, assignment: dict[str, Any]) -> None:
        system = (assignment.get("metadata") or {}).get("system") or {}
        with self.transaction():
            self.db["assignments"].upsert(
                {
                    "id": assignment["id"],
                    "task_id": system.get("taskId") or "",
                    "dataset_id": system.get("datasetId") or "",
                    "name": assignment.get("name") or "",
                    "json": _dump(assignment),
                },
                pk="id",
            )

    def put_items(self, items: Iterable[dict[str, Any]]) -> int:
        """Insert or replace items (full JSON) and keep the array-path catalog."""
        count = 0
        with self.transaction():
            for batch in _batches(items, ITEM_BATCH):
                self._write_documents("items", batch)
                count += len(batch)
        return count

    def put_annotations(self, annotations: Iterable[dict[str, Any]]) -> int:
        count = 0
        with self.transaction():
            for batch in _batches(annotations, ITEM_BATCH):
                self._write_documents("annotations", batch)
                count += len(batch)
        return count

    def _write_documents(self, table: str, documents: list[dict[str, Any]]) -> None:
        paths: set[tuple[str, str]] = set()
        if table == "items":
            rows = [dql_rows.item_row(doc, _dump(doc)) for doc in documents]
            self.conn.executemany(dql_rows.UPSERT_ITEM_SQL, rows)
        else:
            rows = [
                (
                    doc["id"],
                    doc.get("itemId") or "",
                    doc.get("datasetId") or "",
                    _dump(doc),
                )
                for doc in documents
            ]
            self.conn.executemany(
                "INSERT INTO annotations (id, item_id, dataset_id, json)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " item_id = excluded.item_id,"
                " dataset_id = excluded.dataset_id, json = excluded.json",
                rows,
            )
        for doc in documents:
            dataset_id = doc.get("datasetId") or ""
            paths.update((dataset_id, path) for path in dql.array_paths_of(doc))
        self.conn.executemany(
            "INSERT OR IGNORE INTO array_paths (dataset_id, resource, path)"
            " VALUES (?, ?, ?)",
            ((dataset_id, table, path) for dataset_id, path in paths),
        )

    def delete_items(self, item_ids: Iterable[str]) -> None:
        ids = [(item_id,) for item_id in item_ids]
        with self.transaction():
            self.conn.executemany("DELETE FROM annotations WHERE item_id = ?", ids)
            self.conn.executemany("DELETE FROM items WHERE id = ?", ids)

    # Reads

    def project(self) -> dict[str, Any] | None:
        return self._one(
            "SELECT json FROM projects WHERE id = ?", self.setting("project_id")
        )

    def dataset(self) -> dict[str, Any] | None:
        return self._one("SELECT json FROM datasets WHERE id = ?", self.dataset_id)

    def get_item(self, item_id: str) -> dict[str, Any]:
        item = self._one("SELECT json FROM items WHERE id = ?", item_id)
        if item is None:
            raise NotFound("404", f"Item not found: {item_id!r}")
        return item

    def get_task(self, task_id: str) -> dict[str, Any]:
        task = self._one("SELECT json FROM tasks WHERE id = ?", task_id)
        if task is None:
            raise NotFound("404", f"Task not found: {task_id!r}")
        return task

    def tasks(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT json FROM tasks ORDER BY name, id").fetchall()
        return [json.loads(row[0]) for row in rows]

    def get_assignment(self, assignment_id: str) -> dict[str, Any]:
        assignment = self._one(
            "SELECT json FROM assignments WHERE id = ?", assignment_id
        )
        if assignment is None:
            raise NotFound("404", f"Assignment not found: {assignment_id!r}")
        return assignment

    def assignments(self, task_id: str | None = None) -> list[dict[str, Any]]:
        if task_id is None:
            rows = self.conn.execute("SELECT json FROM assignments ORDER BY name, id")
        else:
            rows = self.conn.execute(
                "SELECT json FROM assignments WHERE task_id = ? ORDER BY name, id",
                (task_id,),
            )
        return [json.loads(row[0]) for row in rows.fetchall()]

    def assignment_ids(self, task_id: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT id FROM assignments WHERE task_id = ? ORDER BY id", (task_id,)
        ).fetchall()
        return [row[0] for row in rows]

    def _one(self, sql: str, key: str | None) -> dict[str, Any] | None:
        if key is None:
            return None
        if not isinstance(key, str):
            raise BadRequest("400", f"An id must be a string, got {key!r}")
        row = self.conn.execute(sql, (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    # Queries

    def array_paths(self, resource: str = "items") -> frozenset[str]:
        """Return the dataset's catalog of paths holding arrays in ``resource``."""
        return dql.load_array_paths(self.conn, self.dataset_id or "", resource)

    def compile(self, body: dict[str, Any]) -> dql.CompiledQuery:
        return dql.compile_query(
            body,
            dataset_id=self.dataset_id or "",
            array_paths=self.array_paths("items"),
            annotation_array_paths=self.array_paths("annotations"),
        )

    def query(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """Run a query body (``Filters.prepare()`` JSON) for one page and the total."""
        compiled = self.compile(body)
        rows = self.conn.execute(compiled.select_sql, compiled.select_params).fetchall()
        total = self.conn.execute(compiled.count_sql, compiled.count_params).fetchone()[
            0
        ]
        return [json.loads(row[1]) for row in rows], int(total)

    def matching_item_ids(self, body: dict[str, Any]) -> Iterator[str]:
        """Yield the id of every item the body's filter (and join) selects, unpaged."""
        compiled = self.compile(body)
        cursor = self.conn.execute(
            f"SELECT items.id FROM items WHERE {compiled.where_sql} ORDER BY items.id",
            compiled.where_params,
        )
        for row in cursor:
            yield row[0]

    # Statuses

    def set_status(
        self,
        item_ids: Iterable[str],
        *,
        task_id: str,
        status: str | None,
        creator: str | None,
        origin_op_id: str | None = None,
    ) -> StatusResult:
        """Journal and apply a status (``None`` clears) for items of one task.

        The status is checked against the task's allowed values before anything is
        written; items that are missing or not in the task are skipped and counted.
        """
        with self.transaction():
            task = self.get_task(task_id)
            value = None if status is None else check_status(task, status)
            return append_status_ops(
                self.conn,
                replica_id=self.replica_id,
                item_ids=item_ids,
                task_id=task_id,
                assignment_ids=self.assignment_ids(task_id),
                status=value,
                creator=creator,
                origin_op_id=origin_op_id,
            )

    def journal(
        self, *, states: Iterable[str] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Return journal ops, newest first, optionally only those in ``states``."""
        sql = "SELECT * FROM journal"
        params: list[Any] = []
        if states is not None:
            states = list(states)
            sql += f" WHERE state IN ({', '.join('?' for _ in states)})"
            params.extend(states)
        sql += " ORDER BY rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return list(self.db.query(sql, params))


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def _batches(
    documents: Iterable[dict[str, Any]], size: int
) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for document in documents:
        batch.append(document)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
