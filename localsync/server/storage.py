"""The server's storage interface and the records that cross it.

Every backend (SQLite now, PostgreSQL later) implements :class:`Storage`. The rules
that do not depend on SQL (last-write-wins, the future cap, op hashes, JSON shapes)
live in :mod:`localsync.server.registers` and :mod:`localsync.server.entities`, so a
backend only decides how rows are read and written.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from localsync.exports import ExportedItem

JSON = dict[str, Any]


@dataclass(frozen=True)
class ServerMeta:
    """Settings made once, when the database is created."""

    epoch: str
    node_id: str
    secret: str
    schema_version: int


@dataclass(frozen=True)
class ItemPage:
    """One page of an item query, with the count of every matching item."""

    items: list[JSON]
    total: int
    page: int
    page_size: int

    @property
    def total_pages(self) -> int:
        return math.ceil(self.total / self.page_size) if self.page_size else 0

    @property
    def has_next_page(self) -> bool:
        return (self.page + 1) * self.page_size < self.total


@dataclass(frozen=True)
class StatusResult:
    """The outcome of one REST status write on one item."""

    item_id: str
    status: str | None
    last_status: str | None
    hlc: str
    outcome: str


@dataclass(frozen=True)
class PushOp:
    """One op of a push request, as the replica journaled it."""

    op_id: str
    seq: int
    item_id: str
    task_id: str
    status: str | None
    hlc: str
    creator: str | None


@dataclass(frozen=True)
class PushOutcome:
    """The per-op results of a push and the server's clock after it."""

    results: list[JSON]
    server_hlc: str


@dataclass(frozen=True)
class PullPage:
    """Changes after a cursor, and the cursor to send next."""

    changes: list[JSON]
    cursor: int
    has_more: bool
    server_hlc: str
    # With a replica id: the highest seq the server stored for it (0 for none).
    replica_seq: int | None = None


@dataclass
class ImportCounts:
    """How many items and annotations an import added, changed or left alone."""

    items_added: int = 0
    items_changed: int = 0
    items_unchanged: int = 0
    annotations_added: int = 0
    annotations_changed: int = 0
    annotations_unchanged: int = 0


@dataclass(frozen=True)
class NewTask:
    """The request of an administrator to create a task."""

    project_id: str
    dataset_id: str
    name: str
    task_type: str = "annotation"
    parent_task_id: str | None = None
    statuses: tuple[str, ...] = ()
    query: JSON | None = None
    assignees: tuple[str, ...] = ()
    creator: str = "admin@localsync"
    extra_metadata: JSON = field(default_factory=dict)


class Storage(ABC):
    """The server's database: entities, registers, history, change feed, replicas.

    Methods return plain JSON-shaped dicts, never rows. Writes happen in one
    transaction each, committed before the method returns. Lookups of one entity
    return ``None`` for an unknown id; writes raise the SDK-shaped errors of
    :mod:`localsync.errors` (``NotFound``, ``BadRequest``, ``Forbidden``).
    """

    url: str

    @abstractmethod
    def meta(self) -> ServerMeta: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def renew_epoch(self) -> str:
        """Give the database a new random epoch and return it.

        Replicas that present the old epoch get 409 and pull from cursor 0 again,
        keeping their pending ops. Use it after restoring the database from a copy.
        """

    # Projects and datasets.

    @abstractmethod
    def ensure_project(self, name: str, *, creator: str) -> JSON:
        """Return the project named ``name``, creating it when missing."""

    @abstractmethod
    def project(self, project_id: str) -> JSON | None: ...

    @abstractmethod
    def project_named(self, name: str) -> JSON | None: ...

    @abstractmethod
    def ensure_dataset(self, project_id: str, name: str, *, creator: str) -> JSON:
        """Return the project's dataset named ``name``, creating it when missing."""

    @abstractmethod
    def dataset(self, dataset_id: str) -> JSON | None: ...

    @abstractmethod
    def datasets(self, project_ids: Iterable[str]) -> list[JSON]: ...

    # Items.

    @abstractmethod
    def item(self, item_id: str) -> JSON | None: ...

    @abstractmethod
    def query_items(self, dataset_id: str, body: JSON) -> ItemPage:
        """Run a query-language body (filter, join, sort, paging) on one dataset."""

    @abstractmethod
    def patch_item(
        self, item_id: str, changes: JSON, *, system: bool, user_email: str
    ) -> JSON:
        """Merge ``changes`` into the item and return the new JSON."""

    @abstractmethod
    def import_items(
        self, dataset_id: str, exported: Iterable[ExportedItem], *, now: str
    ) -> ImportCounts:
        """Store exported items; an unchanged item keeps its row and feed entry.

        ``now`` is the time passed to the export derivation, so a timestamp that
        the import filled in can be distinguished from one the export contains.
        """

    @abstractmethod
    def delete_items(self, item_ids: Iterable[str]) -> list[str]:
        """Delete items with their annotations and registers; return deleted ids."""

    # Tasks and assignments.

    @abstractmethod
    def create_task(self, request: NewTask) -> JSON: ...

    @abstractmethod
    def task(self, task_id: str) -> JSON | None: ...

    @abstractmethod
    def task_named(self, dataset_id: str, name: str) -> JSON | None: ...

    @abstractmethod
    def tasks(self, project_ids: Iterable[str]) -> list[JSON]: ...

    @abstractmethod
    def assignment(self, assignment_id: str) -> JSON | None: ...

    @abstractmethod
    def assignments(
        self, project_ids: Iterable[str], *, task_id: str | None = None
    ) -> list[JSON]: ...

    # Registers.

    @abstractmethod
    def set_statuses(
        self,
        task_id: str,
        item_ids: Iterable[str],
        status: str | None,
        *,
        user_email: str,
        assignment_id: str | None = None,
    ) -> list[StatusResult]:
        """Write one register per item with the server's HLC (``None`` clears).

        Items that are unknown or not in the task are left out of the result.
        With ``assignment_id`` the items must be in that assignment.
        """

    @abstractmethod
    def register(self, item_id: str, task_id: str) -> JSON | None: ...

    @abstractmethod
    def register_history(self, item_id: str, task_id: str) -> list[JSON]: ...

    # Sync.

    @abstractmethod
    def push(
        self, *, replica_id: str, user_email: str, dataset_id: str, ops: list[PushOp]
    ) -> PushOutcome:
        """Apply a batch of ops exactly once, last-write-wins by HLC.

        Raises ``Forbidden`` when the replica id belongs to another user and
        ``SeqConflict`` when a seq was stored with other content. Either error
        rolls back the whole batch.
        """

    @abstractmethod
    def pull(
        self,
        dataset_id: str,
        *,
        cursor: int,
        limit: int,
        replica_id: str | None = None,
    ) -> PullPage:
        """Return up to ``limit`` changes after ``cursor`` and the cursor after them.

        With ``replica_id`` the page leaves out register changes whose current
        value that replica wrote, and its cursor moves past them. It then reads
        at most ``limit`` times ``PULL_SCAN_FACTOR`` feed rows, plus one to set
        ``has_more``, so a page may contain no changes while ``has_more`` is true.
        """


def open_storage(url: str) -> Storage:
    """Open the storage a ``--db`` value names: a SQLite path or a PostgreSQL URL."""
    if url.startswith(("postgresql://", "postgres://")):
        from localsync.server.postgres_storage import PostgresStorage

        return PostgresStorage(url)
    from localsync.server.sqlite_storage import SQLiteStorage

    return SQLiteStorage(url)
