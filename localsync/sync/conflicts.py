"""Working with ops after a sync: conflicts, quarantine, retry, revert, drop, history,
and the dry run of a push.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from localsync.errors import BadRequest, NotFound
from localsync.store import Replica, StatusResult
from localsync.sync.push import DROPPED_UNSENT, pending_ops, was_sent
from localsync.sync.remote import JSON, Remote
from localsync.sync.views import RegisterValue, refresh_registers

logger = logging.getLogger(__name__)

MIN_OP_PREFIX = 6
DROPPED_BY_USER = "dropped by the user"


def find_op(replica: Replica, op_id: str) -> dict[str, Any]:
    """Return the journal row of an op, given its id or a unique prefix or suffix.

    Op ids are time-ordered: the ops of one status call share their first digits
    and differ in their last ones, which a suffix therefore distinguishes.
    """
    text = op_id.strip().lower() if isinstance(op_id, str) else ""
    if len(text) < MIN_OP_PREFIX:
        raise BadRequest(
            "400",
            f"Op id {op_id!r} is too short; pass the op id, or at least "
            f"{MIN_OP_PREFIX} of its first or last characters, as 'localsync "
            "conflicts' lists it",
        )
    by_prefix = list(
        replica.db.query(
            "SELECT * FROM journal WHERE op_id >= ? AND op_id < ?"
            " ORDER BY op_id LIMIT 2",
            [text, text + "\uffff"],
        )
    )
    # The suffix search reads the whole journal; a full id matches itself twice.
    by_suffix = list(
        replica.db.query(
            "SELECT * FROM journal WHERE substr(op_id, -?) = ? LIMIT 2",
            [len(text), text],
        )
    )
    matches = {row["op_id"]: row for row in (*by_prefix, *by_suffix)}
    if len(matches) == 1:
        return next(iter(matches.values()))
    if matches:
        raise BadRequest(
            "400",
            f"Op id {op_id!r} matches several ops; pass more of its first or "
            "last characters",
        )
    raise NotFound(
        "404", f"Op {op_id!r} not found in the journal of {str(replica.path)!r}"
    )


def list_conflicts(replica: Replica) -> list[dict[str, Any]]:
    """Return every conflict (a local op that lost), newest first, with its retries."""
    rows = replica.db.query(
        "SELECT c.*, j.creator AS local_creator, j.state, "
        " (SELECT group_concat(r.op_id) FROM journal AS r"
        "   WHERE r.origin_op_id = c.op_id)"
        "   AS followed_by"
        " FROM conflicts AS c JOIN journal AS j ON j.op_id = c.op_id ORDER BY c.id DESC"
    )
    return [
        {
            "opId": row["op_id"],
            "itemId": row["item_id"],
            "taskId": row["task_id"],
            "local": {
                "status": row["local_status"],
                "hlc": row["local_hlc"],
                "creator": row["local_creator"],
            },
            "winner": {
                "status": row["winner_status"],
                "hlc": row["winner_hlc"],
                "creator": row["winner_creator"],
                "source": row["winner_source"],
                "replicaId": row["winner_replica_id"],
            },
            "detectedAt": row["detected_at"],
            "followedBy": (row["followed_by"] or "").split(",")
            if row["followed_by"]
            else [],
        }
        for row in rows
    ]


def rejected_ops(replica: Replica) -> list[dict[str, Any]]:
    """Return the quarantined ops (the remote rejected them for good), newest first."""
    rows = replica.db.query(
        "SELECT op_id, item_id, task_id, status, hlc, creator, reason FROM journal"
        " WHERE state = 'rejected' ORDER BY rowid DESC"
    )
    return [
        {
            "opId": row["op_id"],
            "itemId": row["item_id"],
            "taskId": row["task_id"],
            "status": row["status"],
            "hlc": row["hlc"],
            "creator": row["creator"],
            "reason": row["reason"],
        }
        for row in rows
    ]


def _single_op(result: StatusResult, item_id: str, action: str) -> StatusResult:
    if not result.op_ids:
        reason = result.skipped.get(item_id, "the item was skipped")
        raise NotFound(
            "404", f"Cannot {action}: {reason} ({item_id!r}) in this replica"
        )
    return result


def retry_op(
    replica: Replica, op_id: str, *, creator: str | None = None
) -> StatusResult:
    """Write a rejected or superseded op's value again, as a new (newer) op."""
    op = find_op(replica, op_id)
    if op["state"] not in ("rejected", "superseded"):
        raise BadRequest(
            "400",
            f"Op {op['op_id']} is {op['state']}; only rejected or superseded ops "
            "can be "
            "retried",
        )
    result = replica.set_status(
        [op["item_id"]],
        task_id=op["task_id"],
        status=op["status"],
        creator=creator or op["creator"],
        origin_op_id=op["op_id"],
    )
    return _single_op(result, op["item_id"], f"retry op {op['op_id']}")


def value_before(replica: Replica, op: dict[str, Any]) -> RegisterValue | None:
    """Return the register's value before an op, from the replica's own records.

    The candidates are the replica's other applied or pending ops on the register,
    the known remote value and the winners of its conflicts, each older than the op.

    NOTE: an online write that was overwritten before the replica pulled it is not
    among them; ``localsync history`` shows the remote's full record.
    """
    key, hlc = (op["item_id"], op["task_id"]), op["hlc"]
    rows = replica.conn.execute(
        "SELECT status, hlc, creator FROM journal WHERE item_id = ? AND task_id = ?"
        " AND state IN ('applied', 'pending') AND hlc < ? AND op_id != ?"
        " UNION ALL SELECT status, hlc, creator FROM remote_registers"
        " WHERE item_id = ? AND task_id = ? AND hlc < ?"
        " UNION ALL SELECT winner_status, winner_hlc, winner_creator FROM conflicts"
        " WHERE item_id = ? AND task_id = ? AND winner_hlc < ?"
        " ORDER BY 2 DESC LIMIT 1",
        (*key, hlc, op["op_id"], *key, hlc, *key, hlc),
    ).fetchone()
    if rows is None:
        return None
    return RegisterValue(rows[0], rows[1], rows[2], None)


def revert_op(
    replica: Replica, op_id: str, *, creator: str | None = None
) -> tuple[StatusResult, RegisterValue | None]:
    """Undo an applied or pending op with a new op that restores the value before it.

    Returns the new op's result and the value restored (``None``: the register had
    no status, so the new op clears it).
    """
    with replica.transaction():
        op = find_op(replica, op_id)
        if op["state"] not in ("applied", "pending"):
            raise BadRequest(
                "400",
                f"Op {op['op_id']} is {op['state']}, so it never took effect; only "
                "applied "
                "or pending ops can be reverted",
            )
        previous = value_before(replica, op)
        result = replica.set_status(
            [op["item_id"]],
            task_id=op["task_id"],
            status=None if previous is None else previous.status,
            creator=creator or op["creator"],
            origin_op_id=op["op_id"],
        )
        return _single_op(result, op["item_id"], f"revert op {op['op_id']}"), previous


def drop_op(replica: Replica, op_id: str) -> dict[str, Any]:
    """Discard a pending or rejected op and recompute its register's local view."""
    with replica.transaction():
        op = find_op(replica, op_id)
        if op["state"] not in ("pending", "rejected"):
            hint = (
                f"; use 'localsync revert {op['op_id']}' to undo it"
                if op["state"] == ("applied")
                else ""
            )
            raise BadRequest(
                "400",
                f"Op {op['op_id']} is {op['state']}; only pending or rejected ops "
                "can be "
                f"dropped{hint}",
            )
        if op["state"] == "rejected":
            reason = f"{DROPPED_BY_USER} (rejected: {op['reason']})"
        elif was_sent(replica, op["replica_id"], op["seq"]):
            reason = DROPPED_BY_USER
        else:
            reason = DROPPED_UNSENT
        replica.conn.execute(
            "UPDATE journal SET state = 'dropped', reason = ? WHERE op_id = ?",
            (reason, op["op_id"]),
        )
        refresh_registers(replica, [(op["item_id"], op["task_id"])])
    logger.info("dropped op %s (%s)", op["op_id"], op["state"])
    return op


@dataclass(frozen=True)
class PlannedOp:
    """A pending op, with the known remote value a dry run compares it to."""

    op: JSON
    remote: RegisterValue | None
    item_known: bool

    @property
    def verdict(self) -> str:
        if not self.item_known:
            return "item not in replica"
        if self.remote is None:
            return "wins"
        return "wins" if self.op["hlc"] > self.remote.hlc else "loses"

    def to_json(self) -> JSON:
        remote = None
        if self.remote is not None:
            remote = {
                "status": self.remote.status,
                "hlc": self.remote.hlc,
                "creator": self.remote.creator,
            }
        return {**self.op, "verdict": self.verdict, "remote": remote}


def plan_push(replica: Replica) -> list[PlannedOp]:
    """Return what a push would send, in order, and which ops would lose.

    Reads the replica only: the verdicts are against the remote values as of the
    last pull, so a write on the remote since then can still change them.
    """
    planned = []
    for op in pending_ops(replica):
        remote_row = replica.conn.execute(
            "SELECT status, hlc, creator, timestamp FROM remote_registers"
            " WHERE item_id = ? AND task_id = ?",
            (op.item_id, op.task_id),
        ).fetchone()
        known = (
            replica.conn.execute(
                "SELECT 1 FROM items WHERE id = ?", (op.item_id,)
            ).fetchone()
            is not None
        )
        planned.append(
            PlannedOp(
                op=op.to_json(),
                remote=RegisterValue(*remote_row) if remote_row else None,
                item_known=known,
            )
        )
    return planned


def item_history(
    replica: Replica, item_id: str, remote: Remote | None
) -> tuple[list[JSON], str | None]:
    """Return every known write of the item's registers, oldest first, and a note.

    Merges the local journal with the remote's register history (when ``remote`` is
    given and keeps one); a write known to both appears once. The note explains why
    the remote's part is missing, or is ``None``.
    """
    entries: dict[str, JSON] = {}
    unkeyed: list[JSON] = []
    for row in replica.db.query(
        "SELECT * FROM journal WHERE item_id = ? ORDER BY hlc", [item_id]
    ):
        result = json.loads(row["result"]) if row["result"] else {}
        entries[row["op_id"]] = {
            "hlc": result.get("hlc") or row["hlc"],
            "taskId": row["task_id"],
            "status": row["status"],
            "creator": row["creator"],
            "source": "replica",
            "replicaId": row["replica_id"],
            "opId": row["op_id"],
            "localState": row["state"],
            "outcome": None,
            "reason": row["reason"],
        }

    note = None
    if remote is None:
        note = "no remote configured; showing the local journal only"
    else:
        history = remote.history(item_id)
        if history is None:
            note = (
                "the remote keeps no register history; showing the local journal only"
            )
        for write in history or []:
            _merge_remote_write(entries, unkeyed, write)

    if not entries and not unkeyed:
        known = replica.conn.execute(
            "SELECT 1 FROM items WHERE id = ?", (item_id,)
        ).fetchone()
        if known is None:
            raise NotFound(
                "404", f"Item {item_id!r} not found in this replica or its journal"
            )
    merged = [*entries.values(), *unkeyed]
    merged.sort(key=lambda entry: entry.get("hlc") or "")
    return merged, note


def _merge_remote_write(
    entries: dict[str, JSON], unkeyed: list[JSON], write: JSON
) -> None:
    op_id = write.get("opId")
    if isinstance(op_id, str) and op_id in entries:
        entry = entries[op_id]
        entry["outcome"] = write.get("outcome")
        entry["reason"] = write.get("reason") or entry["reason"]
        entry["hlc"] = write.get("hlc") or entry["hlc"]
        return
    unkeyed.append(
        {
            "hlc": write.get("hlc"),
            "taskId": write.get("taskId"),
            "status": write.get("status"),
            "creator": write.get("creator") or write.get("user"),
            "source": write.get("source"),
            "replicaId": write.get("replicaId"),
            "opId": op_id,
            "localState": None,
            "outcome": write.get("outcome"),
            "reason": write.get("reason"),
        }
    )
