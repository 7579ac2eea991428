"""The PostgreSQL implementation of the server storage, for several server processes.

Open it with ``open_storage("postgresql://...")``. Every method is one transaction;
the rules that make concurrent writers safe are in
:mod:`localsync.server.postgres_database`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import secrets
from collections.abc import Iterable, Iterator
from itertools import islice

from psycopg.types.json import Jsonb

from localsync.dql import compile_query
from localsync.dql.postgres_dialect import POSTGRES
from localsync.errors import BadRequest, NotFound
from localsync.exports import ExportedItem
from localsync.server import postgres_registers
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
from localsync.server.postgres_database import (
    DEFAULT_POOL_SIZE,
    PostgresDatabase,
    Transaction,
    without_password,
)
from localsync.server.postgres_rows import (
    Connection,
    array_paths,
    canonical,
    load_all_json,
    load_json,
    load_many,
    lock_items,
    save_annotations,
    save_items,
)

# The rules for which fields a PATCH and an import keep, and the filter of a new
# task, are the SQLite backend's, so both backends store the same JSON.
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

# Items written per transaction during an import, so row locks are held briefly.
IMPORT_BATCH = 500


def _batches(
    entries: Iterable[ExportedItem], size: int
) -> Iterator[list[ExportedItem]]:
    iterator = iter(entries)
    while batch := list(islice(iterator, size)):
        yield batch


class PostgresStorage(Storage):
    """Server storage in a PostgreSQL database, shared by any number of processes."""

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.db = PostgresDatabase(url, pool_size=pool_size)
        # The server logs this value, so it carries no password.
        self.url = without_password(url)

    def meta(self) -> ServerMeta:
        return self.db.meta

    def close(self) -> None:
        self.db.close()

    def renew_epoch(self) -> str:
        epoch = secrets.token_hex(16)
        with self.db.pool.connection() as connection:
            connection.execute(
                "UPDATE meta SET value = %s WHERE key = 'epoch'", (epoch,)
            )
        self.db.meta = dataclasses.replace(self.db.meta, epoch=epoch)
        logger.info("server database %s has a new epoch %s", self.url, epoch)
        return epoch

    # Projects and datasets.

    def ensure_project(self, name: str, *, creator: str) -> JSON:
        def work(transaction: Transaction) -> tuple[JSON, bool]:
            project = project_json(new_id(), name, creator=creator, now=iso_timestamp())
            inserted = transaction.execute(
                "INSERT INTO projects (id, name, json) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO NOTHING RETURNING id",
                (project["id"], name, Jsonb(project)),
            ).fetchone()
            if inserted:
                return project, True
            found = load_all_json(
                transaction.connection,
                "SELECT json FROM projects WHERE name = %s",
                (name,),
            )
            return found[0], False

        project, created = self.db.write(work)
        if created:
            logger.info("created project %r (%s)", name, project["id"])
        return project

    def project(self, project_id: str) -> JSON | None:
        with self.db.read() as connection:
            return load_json(connection, "project", project_id)

    def project_named(self, name: str) -> JSON | None:
        with self.db.read() as connection:
            rows = load_all_json(
                connection, "SELECT json FROM projects WHERE name = %s", (name,)
            )
        return rows[0] if rows else None

    def ensure_dataset(self, project_id: str, name: str, *, creator: str) -> JSON:
        def work(transaction: Transaction) -> tuple[JSON, bool]:
            if load_json(transaction.connection, "project", project_id) is None:
                raise NotFound("404", f"Project {project_id!r} not found")
            dataset = dataset_json(
                new_id(),
                name,
                project_id=project_id,
                creator=creator,
                now=iso_timestamp(),
            )
            inserted = transaction.execute(
                "INSERT INTO datasets (id, project_id, name, json) "
                "VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (project_id, name) DO NOTHING RETURNING id",
                (dataset["id"], project_id, name, Jsonb(dataset)),
            ).fetchone()
            if not inserted:
                found = load_all_json(
                    transaction.connection,
                    "SELECT json FROM datasets WHERE project_id = %s AND name = %s",
                    (project_id, name),
                )
                return found[0], False
            transaction.touch(dataset["id"], "project", project_id)
            transaction.touch(dataset["id"], "dataset", dataset["id"])
            return dataset, True

        dataset, created = self.db.write(work)
        if created:
            logger.info("created dataset %r (%s)", name, dataset["id"])
        return dataset

    def dataset(self, dataset_id: str) -> JSON | None:
        with self.db.read() as connection:
            dataset = load_json(connection, "dataset", dataset_id)
            if dataset is not None:
                row = connection.execute(
                    "SELECT count(*) AS items FROM items WHERE dataset_id = %s",
                    (dataset_id,),
                ).fetchone()
                dataset["itemsCount"] = row["items"] if row else 0
        return dataset

    def datasets(self, project_ids: Iterable[str]) -> list[JSON]:
        with self.db.read() as connection:
            return load_all_json(
                connection,
                "SELECT json FROM datasets WHERE project_id = ANY(%s) ORDER BY id",
                (sorted(set(project_ids)),),
            )

    # Items.

    def item(self, item_id: str) -> JSON | None:
        with self.db.read() as connection:
            return load_json(connection, "item", item_id)

    def query_items(self, dataset_id: str, body: JSON) -> ItemPage:
        with self.db.read() as connection:
            compiled = compile_query(
                body,
                dataset_id=dataset_id,
                array_paths=array_paths(connection, dataset_id, "item"),
                dialect=POSTGRES,
            )
            items = load_all_json(
                connection, compiled.select_sql, compiled.select_params
            )
            row = connection.execute(
                compiled.count_sql, compiled.count_params
            ).fetchone()
        return ItemPage(
            items=items,
            total=row["count"] if row else 0,
            page=int(body.get("page") or 0),
            page_size=int(body.get("pageSize") or 1000),
        )

    def patch_item(
        self, item_id: str, changes: JSON, *, system: bool, user_email: str
    ) -> JSON:
        protected = [*IDENTITY_FIELDS, *REGISTER_FIELDS]
        if not system:
            protected.append(("metadata", "system"))

        def work(transaction: Transaction) -> JSON:
            item = lock_items(transaction, [item_id]).get(item_id)
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
            save_items(transaction, self.db, [updated])
            transaction.touch(updated["datasetId"], "item", item_id)
            return updated

        return self.db.write(work)

    def import_items(
        self, dataset_id: str, exported: Iterable[ExportedItem], *, now: str
    ) -> ImportCounts:
        counts = ImportCounts()
        for batch in _batches(exported, IMPORT_BATCH):

            def work(
                transaction: Transaction, batch: list[ExportedItem] = batch
            ) -> ImportCounts:
                return self._import_batch(transaction, dataset_id, batch, now)

            batch_counts = self.db.write(work)
            for name, value in vars(batch_counts).items():
                setattr(counts, name, getattr(counts, name) + value)
        logger.info("imported into dataset %s: %s", dataset_id, counts)
        return counts

    def _import_batch(
        self,
        transaction: Transaction,
        dataset_id: str,
        batch: list[ExportedItem],
        now: str,
    ) -> ImportCounts:
        """Store one batch of exported items; a rerun starts from fresh counts."""
        counts = ImportCounts()
        stored = lock_items(transaction, [entry.item["id"] for entry in batch])
        annotation_ids = [a["id"] for entry in batch for a in entry.annotations]
        stored_annotations = load_many(
            transaction.connection, "annotation", annotation_ids
        )
        changed_items: dict[str, JSON] = {}
        changed_annotations: dict[str, JSON] = {}
        for entry in batch:
            item = self._imported_item(dataset_id, entry, stored, now, counts)
            if item is not None:
                stored[item["id"]] = changed_items[item["id"]] = item
                transaction.touch(dataset_id, "item", item["id"])
            for annotation in entry.annotations:
                if self._annotation_changed(annotation, stored_annotations, counts):
                    stored_annotations[annotation["id"]] = annotation
                    changed_annotations[annotation["id"]] = annotation
                    transaction.touch(dataset_id, "annotation", annotation["id"])
        save_items(transaction, self.db, changed_items.values())
        save_annotations(transaction, self.db, changed_annotations.values())
        return counts

    def _imported_item(
        self,
        dataset_id: str,
        entry: ExportedItem,
        stored_items: dict[str, JSON],
        now: str,
        counts: ImportCounts,
    ) -> JSON | None:
        """Return the item to store for an exported one, or ``None`` if unchanged."""
        item = copy.deepcopy(entry.item)
        stored = stored_items.get(item["id"])
        if stored is not None and stored.get("datasetId") != dataset_id:
            raise BadRequest(
                "400",
                f"Item {item['id']!r} already belongs to dataset "
                f"{stored.get('datasetId')!r}; "
                "import each export folder into one dataset only",
            )
        if stored is None:
            counts.items_added += 1
            return item
        # Statuses belong to the server, and an export without timestamps must
        # not move the import time of an item that is already stored.
        keep_fields(item, stored, REGISTER_FIELDS)
        for key in ("createdAt", "updatedAt"):
            if item.get(key) == now and key in stored:
                item[key] = stored[key]
        if canonical(item) == canonical(stored):
            counts.items_unchanged += 1
            return None
        counts.items_changed += 1
        return item

    def _annotation_changed(
        self, annotation: JSON, stored: dict[str, JSON], counts: ImportCounts
    ) -> bool:
        previous = stored.get(annotation["id"])
        if previous is not None and canonical(previous) == canonical(annotation):
            counts.annotations_unchanged += 1
            return False
        if previous is None:
            counts.annotations_added += 1
        else:
            counts.annotations_changed += 1
        return True

    def delete_items(self, item_ids: Iterable[str]) -> list[str]:
        ids = list(dict.fromkeys(item_ids))

        def work(transaction: Transaction) -> list[str]:
            items = lock_items(transaction, ids)
            deleted = []
            for item_id in ids:
                if item_id in items:
                    self._delete_item(transaction, items[item_id])
                    deleted.append(item_id)
            return deleted

        deleted = self.db.write(work)
        logger.info("deleted %d items", len(deleted))
        return deleted

    def _delete_item(self, transaction: Transaction, item: JSON) -> None:
        item_id, dataset_id = item["id"], item["datasetId"]
        annotation_rows = transaction.execute(
            "DELETE FROM annotations WHERE item_id = %s RETURNING id", (item_id,)
        ).fetchall()
        for row in annotation_rows:
            transaction.touch(dataset_id, "annotation", row["id"], deleted=True)

        # The item's tombstone stands for its registers, so their feed rows go; the
        # register history stays.
        register_rows = transaction.execute(
            "DELETE FROM registers WHERE item_id = %s RETURNING task_id", (item_id,)
        ).fetchall()
        transaction.forget(
            dataset_id,
            "register",
            [f"{item_id}:{row['task_id']}" for row in register_rows],
        )
        transaction.execute("DELETE FROM items WHERE id = %s", (item_id,))
        transaction.touch(dataset_id, "item", item_id, deleted=True)

    # Tasks and assignments.

    def create_task(self, request: NewTask) -> JSON:
        now = iso_timestamp()

        def work(transaction: Transaction) -> tuple[JSON, int]:
            self._check_new_task(transaction, request)
            query = task_filter(request)
            item_ids = self._matching_item_ids(
                transaction.connection, request.dataset_id, query
            )
            items = lock_items(transaction, item_ids)
            item_ids = [item_id for item_id in item_ids if item_id in items]

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
            transaction.execute(
                "INSERT INTO tasks (id, project_id, dataset_id, name, json) "
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    task_id,
                    request.project_id,
                    request.dataset_id,
                    request.name,
                    Jsonb(task),
                ),
            )
            transaction.touch(request.dataset_id, "task", task_id)

            assignment_of = self._create_assignments(
                transaction, task, request.assignees, assignment_ids, item_ids, now
            )
            for item_id in item_ids:
                item = items[item_id]
                add_ref(item, "task", task_id)
                if item_id in assignment_of:
                    add_ref(item, "assignment", assignment_of[item_id])
                transaction.touch(request.dataset_id, "item", item_id)
            save_items(transaction, self.db, (items[i] for i in item_ids))
            return task, len(item_ids)

        task, count = self.db.write(work)
        logger.info(
            "created task %r (%s) with %d items", request.name, task["id"], count
        )
        return task

    def _check_new_task(self, transaction: Transaction, request: NewTask) -> None:
        # Locking the dataset row makes the name check hold until commit.
        row = transaction.execute(
            "SELECT json FROM datasets WHERE id = %s FOR UPDATE",
            (request.dataset_id,),
        ).fetchone()
        if row is None:
            raise NotFound("404", f"Dataset {request.dataset_id!r} not found")
        dataset = row["json"]
        taken = transaction.execute(
            "SELECT 1 FROM tasks WHERE dataset_id = %s AND name = %s",
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
            parent = load_json(transaction.connection, "task", request.parent_task_id)
            if parent is None or parent["datasetId"] != request.dataset_id:
                raise NotFound(
                    "404",
                    f"Parent task {request.parent_task_id!r} not found in dataset "
                    f"{dataset['name']!r}",
                )

    def _matching_item_ids(
        self, connection: Connection, dataset_id: str, query: JSON
    ) -> list[str]:
        compiled = compile_query(
            {"filter": query, "resource": "items"},
            dataset_id=dataset_id,
            array_paths=array_paths(connection, dataset_id, "item"),
            dialect=POSTGRES,
        )
        rows = connection.execute(
            "SELECT items.id FROM items "
            f"WHERE items.dataset_id = %s AND ({compiled.where_sql}) "
            "ORDER BY items.id",
            (dataset_id, *compiled.where_params),
        )
        return [row["id"] for row in rows]

    def _create_assignments(
        self,
        transaction: Transaction,
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
            transaction.execute(
                "INSERT INTO assignments "
                "(id, task_id, project_id, dataset_id, annotator, json) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    assignment_id,
                    task["id"],
                    task["projectId"],
                    task["datasetId"],
                    annotator,
                    Jsonb(assignment),
                ),
            )
            transaction.touch(task["datasetId"], "assignment", assignment_id)
            assignment_of.update(dict.fromkeys(hand, assignment_id))
        return assignment_of

    def task(self, task_id: str) -> JSON | None:
        with self.db.read() as connection:
            return load_json(connection, "task", task_id)

    def task_named(self, dataset_id: str, name: str) -> JSON | None:
        with self.db.read() as connection:
            rows = load_all_json(
                connection,
                "SELECT json FROM tasks WHERE dataset_id = %s AND name = %s",
                (dataset_id, name),
            )
        return rows[0] if rows else None

    def tasks(self, project_ids: Iterable[str]) -> list[JSON]:
        with self.db.read() as connection:
            return load_all_json(
                connection,
                "SELECT json FROM tasks WHERE project_id = ANY(%s) ORDER BY id",
                (sorted(set(project_ids)),),
            )

    def assignment(self, assignment_id: str) -> JSON | None:
        with self.db.read() as connection:
            return load_json(connection, "assignment", assignment_id)

    def assignments(
        self, project_ids: Iterable[str], *, task_id: str | None = None
    ) -> list[JSON]:
        query = "SELECT json FROM assignments WHERE project_id = ANY(%s)"
        params: list[object] = [sorted(set(project_ids))]
        if task_id is not None:
            query += " AND task_id = %s"
            params.append(task_id)
        with self.db.read() as connection:
            return load_all_json(connection, query + " ORDER BY id", params)

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
        return postgres_registers.set_statuses(
            self.db,
            task_id,
            item_ids,
            status,
            user_email=user_email,
            assignment_id=assignment_id,
        )

    def register(self, item_id: str, task_id: str) -> JSON | None:
        with self.db.read() as connection:
            return postgres_registers.load_register(connection, item_id, task_id)

    def register_history(self, item_id: str, task_id: str) -> list[JSON]:
        return postgres_registers.register_history(self.db, item_id, task_id)

    def push(
        self, *, replica_id: str, user_email: str, dataset_id: str, ops: list[PushOp]
    ) -> PushOutcome:
        return postgres_registers.push(
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
        return postgres_registers.pull(
            self.db, dataset_id, cursor=cursor, limit=limit, replica_id=replica_id
        )
