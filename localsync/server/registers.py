"""Rules every storage backend shares: LWW, the future cap, op hashes, pull pages.

A register is the status of one item in one task. A write wins when its HLC string
sorts after the register's. Fixed-width HLC strings sort in ``(wall_ms, counter,
node)`` order, so plain string comparison is LWW order.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from localsync.errors import Conflict
from localsync.hlc import WALL_DIGITS, Clock, Timestamp
from localsync.server.storage import JSON, PushOp
from localsync.statuses import iso_timestamp

# How far past the server's clock an op's wall time may be before the server
# stamps the op with its own HLC instead.
FUTURE_CAP_MS = 5 * 60 * 1000

# The largest push batch, in ops; a larger one gets 413.
MAX_BATCH = 1000

# A pull that leaves out a replica's own writes reads at most this many feed rows
# per row of its limit, so a page costs a bounded amount of work even when most
# rows are left out.
PULL_SCAN_FACTOR = 10

RegisterKey = tuple[str, str]


@dataclass(frozen=True)
class RegisterWrite:
    """One write of a register, before last-write-wins decides its outcome."""

    status: str | None
    hlc: str
    creator: str | None
    source: str
    user_email: str
    replica_id: str | None = None
    op_id: str | None = None
    restamped: bool = False


@dataclass(frozen=True)
class FeedRow:
    """One change-feed row that a pull read.

    ``register`` is the register's current value (as :func:`register_json` shapes
    it) for a register change that is not a deletion, else ``None``.
    """

    seq: int
    kind: str
    entity_id: str
    deleted: bool
    register: JSON | None = None


class ProtocolConflict(Conflict):
    """A 409 of the sync protocol, with the machine-readable ``code`` it sends."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__("409", message)
        self.code = code
        self.extra = {"code": code, **extra}


class SeqConflict(ProtocolConflict):
    """A ``(replicaId, seq)`` arrived again with other content than it had before."""

    def __init__(self, replica_id: str, seq: int) -> None:
        super().__init__(
            "seq_conflict",
            f"Replica {replica_id!r} already pushed seq {seq} with other content; "
            "take a new replica id and journal the pending ops again",
            replicaId=replica_id,
            seq=seq,
        )


def op_content_hash(op: PushOp) -> str:
    """Return a SHA-256 of the op's content, the same for every retry of it."""
    content = {
        "opId": op.op_id,
        "seq": op.seq,
        "itemId": op.item_id,
        "taskId": op.task_id,
        "status": op.status,
        "hlc": op.hlc,
        "creator": op.creator,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def unknown_item_reason(item_id: str, dataset_id: str) -> str:
    """Return the rejection reason for an op on an item the dataset lacks.

    An unknown item and one of another dataset get the same text, so a push
    cannot tell whether an item exists in a project the token does not grant.
    """
    return (
        f"Item {item_id!r} not found in dataset {dataset_id!r}: it does not exist "
        "or belongs to another dataset"
    )


def is_newer(hlc: str, current: str | None) -> bool:
    """Return whether a write stamped ``hlc`` wins over a register at ``current``."""
    return current is None or hlc > current


def stamp_incoming(
    clock: Clock, hlc: str, *, now_ms: int | None = None
) -> tuple[str, bool]:
    """Return the HLC to record for an incoming op, and whether it was restamped.

    An op more than ``FUTURE_CAP_MS`` ahead of the server's physical clock gets a
    fresh server HLC; any other op keeps its own, and the clock receives it so
    later server writes sort after it.
    """
    incoming = Timestamp.parse(hlc)
    physical = clock.physical_ms() if now_ms is None else now_ms
    if incoming.wall_ms > physical + FUTURE_CAP_MS:
        return str(clock.send()), True
    clock.receive(incoming)
    return hlc, False


def hlc_time(hlc: str) -> str:
    """Return the ISO 8601 time of a valid HLC's wall clock, as refs record it.

    The HLC is not parsed again, because :func:`stamp_incoming` or the server
    clock produced it.
    """
    return _iso_time(int(hlc[:WALL_DIGITS]))


@functools.lru_cache(maxsize=4096)
def _iso_time(wall_ms: int) -> str:
    # Writes of one batch mostly share a few wall-clock milliseconds.
    return iso_timestamp(datetime.fromtimestamp(wall_ms / 1000, tz=UTC))


def winner_json(register: JSON | None) -> JSON | None:
    """Return a register as the ``winner`` of a push result."""
    if register is None:
        return None
    return {
        "status": register["status"],
        "hlc": register["hlc"],
        "creator": register["creator"],
        "replicaId": register["replicaId"],
        "source": register["source"],
    }


def register_json(row: Any) -> JSON:
    """Return a ``registers`` row (a mapping by column name) as register JSON."""
    return {
        "itemId": row["item_id"],
        "taskId": row["task_id"],
        "status": row["status"],
        "hlc": row["hlc"],
        "creator": row["creator"],
        "timestamp": row["timestamp"],
        "source": row["source"],
        "replicaId": row["replica_id"],
    }


def register_change_data(register: JSON) -> JSON:
    """Return a register as the ``data`` of a pull change."""
    return {
        "itemId": register["itemId"],
        "taskId": register["taskId"],
        "status": register["status"],
        "hlc": register["hlc"],
        "creator": register["creator"],
        "timestamp": register["timestamp"],
    }


def register_key(item_id: str, task_id: str) -> str:
    """Return the change-feed id of a register."""
    return f"{item_id}:{task_id}"


def split_register_key(entity_id: str) -> RegisterKey:
    """Return the ``(item_id, task_id)`` of a register's change-feed id."""
    item_id, _, task_id = entity_id.partition(":")
    return item_id, task_id


@dataclass(frozen=True)
class PageScan:
    """The feed rows a pull page read: its changes, and where the next page starts.

    ``consumed`` contains every row the cursor moved past, the page's own rows
    included.
    """

    rows: list[FeedRow]
    consumed: list[FeedRow]
    cursor: int
    has_more: bool


# read_rows(after_seq, count) returns up to count feed rows after after_seq.
FeedReader = Callable[[int, int], list[FeedRow]]


def scan_page(
    read_rows: FeedReader, *, cursor: int, limit: int, replica_id: str | None
) -> PageScan:
    """Choose the rows of a pull page after ``cursor``, reading the feed in chunks.

    With ``replica_id``, register changes whose current value that replica wrote
    are left out and the cursor moves past them, but past at most
    ``limit * PULL_SCAN_FACTOR`` rows in all. The page ends where one more row would
    exceed ``limit`` or that scan limit, so ``has_more`` is true exactly when a
    row after the returned cursor exists.
    """
    scan_limit = limit * PULL_SCAN_FACTOR if replica_id is not None else limit
    page_rows: list[FeedRow] = []
    consumed: list[FeedRow] = []
    has_more = False
    for row in _read_feed(read_rows, cursor, limit + 1, scan_limit + 1):
        full = len(page_rows) == limit and not _written_by(row, replica_id)
        if full or len(consumed) == scan_limit:
            has_more = True
            break
        if not _written_by(row, replica_id):
            page_rows.append(row)
        consumed.append(row)
    next_cursor = consumed[-1].seq if consumed else cursor
    return PageScan(page_rows, consumed, next_cursor, has_more)


def _read_feed(
    read_rows: FeedReader, after: int, chunk: int, total: int
) -> Iterator[FeedRow]:
    """Yield up to ``total`` feed rows after ``after``, reading ``chunk`` at a time.

    A page that stops early reads no further chunk.
    """
    while total > 0:
        count = min(chunk, total)
        rows = read_rows(after, count)
        yield from rows
        if len(rows) < count:
            return
        total -= count
        after = rows[-1].seq


def document_ids(rows: Sequence[FeedRow]) -> dict[str, list[str]]:
    """Return, by kind, the ids of the page's entities whose JSON a change carries.

    Registers carry their own data and deletions carry none.
    """
    ids: dict[str, list[str]] = {}
    for row in rows:
        if not row.deleted and row.kind != "register":
            ids.setdefault(row.kind, []).append(row.entity_id)
    return ids


def change_json(row: FeedRow, documents: dict[tuple[str, str], JSON]) -> JSON:
    """Return a pull change; ``documents`` maps ``(kind, id)`` to entity JSON."""
    data: JSON | None = None
    if row.kind == "register":
        data = register_change_data(row.register) if row.register else None
    elif not row.deleted:
        data = documents.get((row.kind, row.entity_id))
    return {
        "seq": row.seq,
        "kind": row.kind,
        "id": row.entity_id,
        "deleted": row.deleted,
        "data": data,
    }


def _written_by(row: FeedRow, replica_id: str | None) -> bool:
    return (
        replica_id is not None
        and row.register is not None
        and row.register["replicaId"] == replica_id
    )


def history_json(row: Mapping[str, Any]) -> JSON:
    """Return one ``register_history`` row in the sync protocol's camelCase form."""
    return {
        **register_json(row),
        "user": row["user_email"],
        "opId": row["op_id"],
        "outcome": row["outcome"],
        "reason": row["reason"],
        "restamped": bool(row["restamped"]),
    }
