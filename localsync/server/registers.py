"""Register rules every storage backend shares: LWW order, the future cap, op hashes.

A register is the status of one item in one task. A write wins when its HLC string
sorts after the register's. Fixed-width HLC strings sort in ``(wall_ms, counter,
node)`` order, so plain string comparison is LWW order.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from localsync.errors import Conflict
from localsync.hlc import Clock, Timestamp
from localsync.server.storage import JSON, PushOp
from localsync.statuses import iso_timestamp

# How far past the server's clock an op's wall time may be before the server
# stamps the op with its own HLC instead.
FUTURE_CAP_MS = 5 * 60 * 1000

# The largest push batch, in ops; a larger one gets 413.
MAX_BATCH = 1000


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
    """Return the ISO 8601 time of an HLC's wall clock, as refs record it."""
    wall_ms = Timestamp.parse(hlc).wall_ms
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
