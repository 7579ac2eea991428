"""Pushing pending ops to the remote, batch by batch, in seq order."""

from __future__ import annotations

import logging

from localsync.crash_points import crash_point
from localsync.errors import SyncError
from localsync.store import Replica
from localsync.store.settings import set_setting
from localsync.sync.apply import PushCounts, apply_push_results
from localsync.sync.remote import DEFAULT_MAX_BATCH, BatchTooLarge, PushOp, Remote

logger = logging.getLogger(__name__)

# The highest seq the replica has sent in a push, as "<replica id>:<seq>". It is
# stored before the request goes out, so an op the remote may have applied without
# the replica reading its result is never above it.
PUSH_SENT_SEQ = "push_sent_seq"


def pending_ops(
    replica: Replica, *, limit: int | None = None, after_seq: int = 0
) -> list[PushOp]:
    """Return the replica's pending ops in seq order, after ``after_seq``."""
    sql = (
        "SELECT op_id, seq, item_id, task_id, status, hlc, creator FROM journal"
        " WHERE state = 'pending' AND replica_id = ? AND seq > ? ORDER BY seq"
    )
    params: list[object] = [replica.replica_id, after_seq]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [PushOp(*row) for row in replica.conn.execute(sql, params).fetchall()]


def record_sent(replica: Replica, seq: int) -> None:
    """Store that ops up to ``seq`` are about to be sent, before sending them."""
    with replica.transaction() as conn:
        sent = sent_seq(replica)
        if sent is None or seq > sent:
            set_setting(conn, PUSH_SENT_SEQ, f"{replica.replica_id}:{seq}")


def sent_seq(replica: Replica) -> int | None:
    """Return the highest seq sent under the current replica id, if any."""
    value = replica.setting(PUSH_SENT_SEQ)
    if value is None:
        return None
    replica_id, _, seq = value.partition(":")
    if replica_id != replica.replica_id or not seq.isdigit():
        return None
    return int(seq)


# The reason of an op dropped while no push had sent it: it cannot have reached
# the remote, so it leaves the pull filter on.
DROPPED_UNSENT = "dropped by the user before it was sent"


def was_sent(replica: Replica, replica_id: str, seq: int) -> bool:
    """Return whether a push may have sent the op ``(replica_id, seq)``."""
    sent = sent_seq(replica)
    return replica_id == replica.replica_id and sent is not None and seq <= sent


def own_results_recorded(replica: Replica) -> bool:
    """Return whether every op this replica sent has its push result recorded.

    Only then has the replica stored the remote value of every register it wrote,
    so a pull may leave out the registers this replica wrote last. A sent op
    without a result may still be pending, and the next push then returns its
    result. It may also have been dropped while its push was unanswered. In both
    cases the remote may store its value, and only a pull without the replica id
    shows it.

    NOTE: an op dropped that way keeps its result empty, so every later pull of
    this replica id brings back the replica's own writes (slower, still correct).
    """
    sent = sent_seq(replica)
    if sent is None:
        return True
    # The unary plus makes SQLite use the state index, which finds the few pending
    # and dropped ops, rather than walk every op of the replica by seq.
    row = replica.conn.execute(
        "SELECT 1 FROM journal WHERE state IN ('pending', 'dropped')"
        " AND +replica_id = ? AND +seq <= ? AND result IS NULL"
        " AND reason IS NOT ? LIMIT 1",
        (replica.replica_id, sent, DROPPED_UNSENT),
    ).fetchone()
    return row is None


def pending_count(replica: Replica) -> int:
    row = replica.conn.execute(
        "SELECT COUNT(*) FROM journal WHERE state = 'pending'"
    ).fetchone()
    return int(row[0])


def push_pending(
    replica: Replica, remote: Remote, *, batch_size: int = DEFAULT_MAX_BATCH
) -> PushCounts:
    """Push every pending op; each batch is marked locally before the next is sent.

    Raises ``EpochMismatch`` or ``SeqConflict`` (from the remote) for the engine to
    handle; nothing of the refused batch was applied on either side.
    """
    epoch, dataset_id = replica.setting("epoch"), replica.dataset_id
    if epoch is None or dataset_id is None:
        raise SyncError(
            f"Replica {str(replica.path)!r} has not pulled from its remote yet; run "
            "'localsync sync' (or 'localsync clone') first"
        )
    counts = PushCounts()
    size = max(1, batch_size)
    after_seq = 0
    while True:
        ops = pending_ops(replica, limit=size, after_seq=after_seq)
        if not ops:
            return counts
        record_sent(replica, ops[-1].seq)
        try:
            response = remote.push(
                replica_id=replica.replica_id,
                epoch=epoch,
                dataset_id=dataset_id,
                ops=ops,
            )
        except BatchTooLarge as exc:
            smaller = (
                exc.max_batch if exc.max_batch and exc.max_batch < size else size // 2
            )
            if smaller < 1 or smaller >= size:
                raise
            logger.warning(
                "remote takes at most %d ops per push; retrying smaller", smaller
            )
            size = smaller
            continue
        crash_point("push-committed")
        batch = apply_push_results(replica, ops, response)
        counts.add(batch)
        logger.info(
            "pushed %d ops (seq %d-%d): %d applied, %d superseded, %d rejected",
            len(ops),
            ops[0].seq,
            ops[-1].seq,
            batch.applied,
            batch.superseded,
            batch.rejected,
        )
        size = min(size, response.max_batch)
        # Ops without a result stay pending for the next sync. The loop skips past
        # them, so one missing result cannot make it send the same batch forever.
        after_seq = ops[-1].seq
