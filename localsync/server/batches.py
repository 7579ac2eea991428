"""Last-write-wins over a batch of register writes, decided in memory.

A backend loads what a batch reads with one query per table (stored pushed ops,
items, tasks, registers, tombstones) into a :class:`RegisterBatch`, which decides
every write in order against its in-memory map of registers and queues the rows to
write. Two writes of one register in a batch therefore behave exactly as if
applied one after the other. The backend then writes the queued rows with one
statement per table.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from localsync.crash_points import crash_point
from localsync.errors import BadRequest, NotFound
from localsync.hlc import Clock, Timestamp
from localsync.server.registers import (
    RegisterKey,
    RegisterWrite,
    SeqConflict,
    hlc_time,
    is_newer,
    op_content_hash,
    register_key,
    stamp_incoming,
    unknown_item_reason,
    winner_json,
)
from localsync.server.storage import JSON, PushOp, StatusResult
from localsync.statuses import check_status, has_ref, set_register

# The fields of an item that set_register changes, as a document. A register
# write can add no array path to an item but these two, and the catalog already
# lists the item's own paths, so a backend records the paths of this document
# instead of walking each saved item.
REGISTER_FIELDS_DOCUMENT: JSON = {
    "metadata": {"system": {"refs": [], "annotationStatus": []}}
}

HISTORY_COLUMNS = (
    "item_id",
    "task_id",
    "dataset_id",
    "status",
    "hlc",
    "creator",
    "timestamp",
    "source",
    "user_email",
    "replica_id",
    "op_id",
    "outcome",
    "reason",
    "restamped",
    "recorded_at",
)


def register_view(item_id: str, dataset_id: Any, refs: Any) -> JSON:
    """Return the part of an item that register writes read and change.

    ``dataset_id`` is the item's ``datasetId`` and ``refs`` its
    ``metadata.system.refs`` (``None`` when that is not a list). The rejection
    rules and :func:`localsync.statuses.set_register` read nothing else, so a
    backend loads and rewrites only these fields, not the whole item JSON.
    """
    system = {"refs": refs} if isinstance(refs, list) else {}
    return {"id": item_id, "datasetId": dataset_id, "metadata": {"system": system}}


def register_fields(item: JSON) -> tuple[Any, Any]:
    """Return an item's refs and annotationStatus, the fields a write changed."""
    system = item["metadata"]["system"]
    return system["refs"], system["annotationStatus"]


@dataclass(frozen=True)
class StoredOp:
    """A pushed op as ``pushed_ops`` records it: its content hash and result."""

    content_hash: str
    result: JSON


@dataclass(frozen=True)
class NewPushedOp:
    """A ``pushed_ops`` row that a push batch adds."""

    seq: int
    op_id: str
    content_hash: str
    result: JSON


class RegisterBatch:
    """The entities one transaction reads and the register writes it queues.

    ``items`` (full JSON or :func:`register_view` dicts), ``tasks`` and
    ``registers`` hold what the backend loaded, by id and by ``(item_id,
    task_id)``; :meth:`write` updates ``registers`` and the items in place.
    ``deleted_items`` are ids with a tombstone in the change feed.
    """

    def __init__(
        self,
        *,
        items: dict[str, JSON],
        tasks: dict[str, JSON],
        registers: dict[RegisterKey, JSON],
        deleted_items: Iterable[str] = (),
    ) -> None:
        self.items = items
        self.tasks = tasks
        self.registers = registers
        self.deleted_items = set(deleted_items)
        # Register key -> dataset id of each register a write changed.
        self.changed_registers: dict[RegisterKey, str] = {}
        self.changed_items: dict[str, JSON] = {}
        # (dataset id, register feed id) in the order of each one's last write.
        self.feed: dict[tuple[str, str], None] = {}
        self.history: list[JSON] = []
        self.recorded_at = time.time_ns() // 1_000_000

    def current(self, item_id: str, task_id: str) -> JSON | None:
        return self.registers.get((item_id, task_id))

    def merge_registers(self, clock: Clock) -> None:
        """Let ``clock`` receive the newest loaded HLC, so its sends sort later.

        Another server process may have written a register with a clock ahead of
        this one's. Merging the HLC keeps a server write, or a restamped op, from
        losing to the value it replaces. Later writes in the batch keep the clock
        ahead, because it sends or receives every HLC they store.
        """
        newest = max(
            (register["hlc"] for register in self.registers.values()), default=None
        )
        if newest is not None:
            clock.receive(Timestamp.parse(newest))

    def write(
        self, item: JSON, task: JSON, write: RegisterWrite
    ) -> tuple[str, JSON | None]:
        """Apply a write when it is newer than the register; return outcome, winner."""
        key = (item["id"], task["id"])
        dataset_id = task["datasetId"]
        current = self.registers.get(key)
        timestamp = hlc_time(write.hlc)
        if not is_newer(write.hlc, current["hlc"] if current else None):
            self.record(key, dataset_id, write, "superseded", timestamp=timestamp)
            return "superseded", current

        register = {
            "itemId": item["id"],
            "taskId": task["id"],
            "status": write.status,
            "hlc": write.hlc,
            "creator": write.creator,
            "timestamp": timestamp,
            "source": write.source,
            "replicaId": write.replica_id,
        }
        self.registers[key] = register
        self.changed_registers[key] = dataset_id
        set_register(
            item,
            task_id=task["id"],
            assignment_ids=task.get("assignmentIds") or [],
            status=write.status,
            creator=write.creator,
            timestamp=timestamp,
        )
        self.changed_items[item["id"]] = item
        feed_key = (dataset_id, register_key(*key))
        self.feed.pop(feed_key, None)
        self.feed[feed_key] = None
        self.record(key, dataset_id, write, "applied", timestamp=timestamp)
        return "applied", register

    def record(
        self,
        key: RegisterKey,
        dataset_id: str | None,
        write: RegisterWrite,
        outcome: str,
        *,
        reason: str | None = None,
        timestamp: str | None = None,
    ) -> None:
        """Queue a register history row."""
        self.history.append(
            {
                "item_id": key[0],
                "task_id": key[1],
                "dataset_id": dataset_id,
                "status": write.status,
                "hlc": write.hlc,
                "creator": write.creator,
                "timestamp": timestamp or hlc_time(write.hlc),
                "source": write.source,
                "user_email": write.user_email,
                "replica_id": write.replica_id,
                "op_id": write.op_id,
                "outcome": outcome,
                "reason": reason,
                "restamped": write.restamped,
                "recorded_at": self.recorded_at,
            }
        )

    def changed_register_rows(self) -> list[JSON]:
        """Return the changed registers as ``registers`` rows, in key order."""
        rows = []
        for key, dataset_id in sorted(self.changed_registers.items()):
            register = self.registers[key]
            rows.append(
                {
                    "item_id": key[0],
                    "task_id": key[1],
                    "dataset_id": dataset_id,
                    "status": register["status"],
                    "hlc": register["hlc"],
                    "creator": register["creator"],
                    "timestamp": register["timestamp"],
                    "source": register["source"],
                    "replica_id": register["replicaId"],
                }
            )
        return rows

    def clear_queue(self) -> None:
        """Forget the queued rows once the backend wrote them."""
        self.changed_registers.clear()
        self.changed_items.clear()
        self.feed.clear()
        self.history.clear()

    def changed_datasets(self) -> set[str]:
        """Return the ids of the datasets whose items a write changed."""
        return {item["datasetId"] for item in self.changed_items.values()}

    # Push.

    def apply_op(
        self,
        clock: Clock,
        op: PushOp,
        *,
        dataset_id: str,
        user_email: str,
        replica_id: str,
    ) -> JSON:
        """Apply or reject one pushed op; return its push result."""
        item = self.items.get(op.item_id)
        task = self.tasks.get(op.task_id)
        reason = self.rejection(op, item, task, dataset_id)
        hlc, restamped = stamp_incoming(clock, op.hlc)
        # The author is the token's user, whatever creator the op names: a
        # replica pushes only with its first user's token, so the two agree
        # unless the client is forging them.
        write = RegisterWrite(
            status=op.status,
            hlc=hlc,
            creator=user_email,
            source="replica",
            user_email=user_email,
            replica_id=replica_id,
            op_id=op.op_id,
            restamped=restamped,
        )

        if reason is not None:
            # The current value is shown only for a register of this dataset, and
            # an op on another dataset's item stays out of that item's history.
            same_dataset = item is not None and item.get("datasetId") == dataset_id
            if item is None or same_dataset:
                self.record(
                    (op.item_id, op.task_id),
                    dataset_id,
                    write,
                    "rejected",
                    reason=reason,
                )
            current = self.current(op.item_id, op.task_id) if same_dataset else None
            outcome, winner = "rejected", current
        else:
            assert item is not None and task is not None
            outcome, winner = self.write(item, task, write)

        return {
            "opId": op.op_id,
            "seq": op.seq,
            "outcome": outcome,
            "reason": reason,
            "hlc": hlc,
            "restamped": restamped,
            "winner": winner_json(winner),
        }

    def rejection(
        self, op: PushOp, item: JSON | None, task: JSON | None, dataset_id: str
    ) -> str | None:
        """Return why an op can never apply, or ``None`` when it can."""
        if item is None:
            if op.item_id in self.deleted_items:
                return f"Item {op.item_id!r} was deleted"
            return unknown_item_reason(op.item_id, dataset_id)
        if item.get("datasetId") != dataset_id:
            return unknown_item_reason(op.item_id, dataset_id)
        if task is None:
            return f"Task {op.task_id!r} not found"
        if task.get("datasetId") != dataset_id:
            return f"Task {op.task_id!r} belongs to another dataset than {dataset_id!r}"
        if not has_ref(item, op.task_id):
            return f"Item {op.item_id!r} is not in task {op.task_id!r}"
        if op.status is not None:
            try:
                check_status(task, op.status)
            except BadRequest as exc:
                return exc.message
        return None


def decide_push(
    batch: RegisterBatch,
    clock: Clock,
    ops: list[PushOp],
    stored: dict[int, StoredOp],
    *,
    dataset_id: str,
    user_email: str,
    replica_id: str,
) -> tuple[list[JSON], list[NewPushedOp]]:
    """Decide a push batch in op order; return its results and new pushed_ops rows.

    ``stored`` contains the batch's seqs that ``pushed_ops`` already records. An op
    with a stored seq gets the stored result, or raises ``SeqConflict`` when its
    content differs; a seq repeated within the batch counts as stored after its
    first op. The crash point ``server-push-applying`` sits halfway through the
    batch, before the backend writes anything.
    """
    results: list[JSON] = []
    new_rows: list[NewPushedOp] = []
    batch.merge_registers(clock)
    for index, op in enumerate(ops):
        if index == len(ops) // 2:
            crash_point("server-push-applying")
        digest = op_content_hash(op)
        earlier = stored.get(op.seq)
        if earlier is not None:
            if earlier.content_hash != digest:
                raise SeqConflict(replica_id, op.seq)
            results.append(earlier.result)
            continue

        result = batch.apply_op(
            clock,
            op,
            dataset_id=dataset_id,
            user_email=user_email,
            replica_id=replica_id,
        )
        stored[op.seq] = StoredOp(digest, result)
        new_rows.append(NewPushedOp(op.seq, op.op_id, digest, result))
        results.append(result)
    return results, new_rows


# REST status calls.


def decide_statuses(
    batch: RegisterBatch,
    clock: Clock,
    task: JSON,
    item_ids: list[str],
    status: str | None,
    *,
    user_email: str,
    assignment_id: str | None,
) -> list[StatusResult]:
    """Write ``status`` to each item's register of ``task`` with a server HLC.

    ``status`` must already be checked against the task. Items that are unknown
    or not in the task are left out of the result.
    """
    results = []
    batch.merge_registers(clock)
    for item_id in item_ids:
        item = item_in_task(batch.items.get(item_id), item_id, task, assignment_id)
        if item is None:
            continue
        last = batch.current(item_id, task["id"])
        write = RegisterWrite(status, str(clock.send()), user_email, "rest", user_email)
        outcome, winner = batch.write(item, task, write)
        results.append(
            StatusResult(
                item_id=item_id,
                status=winner["status"] if winner else None,
                last_status=last["status"] if last else None,
                hlc=write.hlc,
                outcome=outcome,
            )
        )
    return results


def item_in_task(
    item: JSON | None, item_id: str, task: JSON, assignment_id: str | None
) -> JSON | None:
    """Return the item when it is in the task (and assignment), else ``None``.

    Through an assignment the caller named one item, so a miss raises ``NotFound``.
    """
    in_task = (
        item is not None
        and item.get("datasetId") == task["datasetId"]
        and has_ref(item, task["id"])
    )
    if assignment_id is None:
        return item if in_task else None
    if item is None:
        raise NotFound("404", f"Item {item_id!r} not found")
    if not in_task or not has_ref(item, assignment_id):
        raise NotFound(
            "404", f"Item {item_id!r} is not in assignment {assignment_id!r}"
        )
    return item


def check_task_status(task: JSON, status: Any) -> str | None:
    """Return ``status`` checked against the task; ``None`` clears and is allowed."""
    return check_status(task, status) if status is not None else None
