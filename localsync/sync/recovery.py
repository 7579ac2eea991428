"""Recovering from a remote that forgot the replica, or a replica file from the past.

Two situations void what a replica assumed about its remote:

* the remote's epoch changed (its database was replaced): the replica re-fetches
  everything and journals again the applied ops that the new database lacks;
* the remote stores other ops under the replica's ``(replica_id, seq)`` (the file was
  restored from an older copy, or copied): the replica takes a new replica id and
  journals its pending ops again under it.

Neither loses a pending op.
"""

from __future__ import annotations

import logging
import uuid

from localsync.errors import LocalsyncError
from localsync.hlc import Timestamp, new_node_id
from localsync.store import Replica
from localsync.store.journal import next_seq
from localsync.store.settings import set_setting
from localsync.sync.pull import REFETCH_EPOCH, REFETCH_RUNNING

logger = logging.getLogger(__name__)


def start_refetch(replica: Replica, epoch: str | None) -> None:
    """Make the next pull start again from cursor 0 under the remote's new epoch."""
    logger.warning(
        "remote epoch changed from %s to %s; pulling everything again, "
        "pending ops kept",
        replica.setting("epoch"),
        epoch,
    )
    # A 409 without the new epoch makes the pull send none and learn it from the page.
    replica.set_setting(REFETCH_EPOCH, epoch or "")


# Applied ops whose register is not newer than the op: a register that the new
# database lacks, or stores at an older HLC, lost the op. A restamped op is
# compared by the HLC the remote recorded for it.
_LOST_OPS_SQL = """
SELECT j.op_id, j.item_id, j.task_id, j.status, j.creator
  FROM journal AS j
  LEFT JOIN remote_registers AS r ON r.item_id = j.item_id AND r.task_id = j.task_id
 WHERE j.state = 'applied'
   AND NOT EXISTS (SELECT 1 FROM journal AS k
                    WHERE k.item_id = j.item_id AND k.task_id = j.task_id
                      AND k.state IN ('applied', 'pending') AND k.hlc > j.hlc)
   AND (r.hlc IS NULL OR r.hlc < COALESCE(json_extract(j.result, '$.hlc'), j.hlc))
 ORDER BY j.hlc
"""


def reassert_lost_ops(replica: Replica) -> int:
    """Journal again each applied op that the re-fetched remote lacks; return how many.

    Runs once, after a re-fetch reached the end of the feed. An op whose item or
    task the new database no longer has is left as it is and logged.
    """
    journaled = 0
    with replica.transaction():
        lost = replica.conn.execute(_LOST_OPS_SQL).fetchall()
        for op_id, item_id, task_id, status, creator in lost:
            try:
                result = replica.set_status(
                    [item_id],
                    task_id=task_id,
                    status=status,
                    creator=creator,
                    origin_op_id=op_id,
                )
            except LocalsyncError as exc:
                logger.warning("op %s not journaled again: %s", op_id, exc)
                continue
            if result.skipped:
                logger.warning(
                    "op %s not journaled again: %s", op_id, result.skipped.get(item_id)
                )
            journaled += result.journaled
        replica.set_setting(REFETCH_RUNNING, None)
    if journaled:
        logger.warning(
            "journaled %d applied ops again that the new remote database lacks",
            journaled,
        )
    return journaled


def take_new_replica_id(replica: Replica) -> tuple[str, int]:
    """Switch to a new replica id and journal every pending op again under it.

    Each new op keeps the wall time and counter of the op it replaces (with the new
    id as the HLC node), so last-write-wins still orders it by when the user made
    the change. The old op is marked dropped with a reason naming the new op.
    Returns the new replica id and the number of ops journaled again.

    NOTE: this writes journal rows directly rather than through
    ``Replica.set_status``, because that would stamp the ops with the current time.
    """
    conn = replica.conn
    with replica.transaction():
        old_id = replica.replica_id
        new_id = new_node_id()
        set_setting(conn, "replica_id", new_id)
        rows = conn.execute(
            "SELECT op_id, item_id, task_id, status, hlc, creator, created_at"
            " FROM journal"
            " WHERE state = 'pending' ORDER BY seq, rowid"
        ).fetchall()
        seq = next_seq(conn, new_id)
        for offset, (
            op_id,
            item_id,
            task_id,
            status,
            hlc,
            creator,
            created_at,
        ) in enumerate(rows):
            stamp = Timestamp.parse(hlc)
            new_op_id = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO journal (op_id, replica_id, seq, item_id, task_id,"
                " status, hlc, creator, origin_op_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new_op_id,
                    new_id,
                    seq + offset,
                    item_id,
                    task_id,
                    status,
                    str(Timestamp(stamp.wall_ms, stamp.counter, new_id)),
                    creator,
                    op_id,
                    created_at,
                ),
            )
            conn.execute(
                "UPDATE journal SET state = 'dropped', reason = ? WHERE op_id = ?",
                (
                    f"journaled again as op {new_op_id} under replica {new_id}, "
                    "because the "
                    f"remote stores other ops under replica {old_id}",
                    op_id,
                ),
            )
    logger.warning(
        "remote stores other ops under replica %s (a restored or copied replica "
        "file); "
        "now replica %s, %d pending ops journaled again",
        old_id,
        new_id,
        len(rows),
    )
    return new_id, len(rows)
