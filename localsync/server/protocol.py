"""Checking sync protocol requests: push bodies and pull query parameters.

The JSON Schemas in ``schema/sync/`` describe the same bodies. These checks are
written by hand, so the server needs no schema library and each error names the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localsync.errors import BadRequest, ExceptionMain
from localsync.hlc import Timestamp
from localsync.server.registers import MAX_BATCH, ProtocolConflict
from localsync.server.storage import PushOp

MAX_PULL_LIMIT = 5000
DEFAULT_PULL_LIMIT = 1000
# The largest seq and cursor: both are stored as signed 64-bit integers.
MAX_SEQ = 2**63 - 1

_REPLICA_ID = re.compile(r"^[0-9a-f]{32}$")


class BatchTooLarge(ExceptionMain):
    """A push with more ops than the server takes at once (HTTP 413)."""

    def __init__(self, count: int) -> None:
        super().__init__(
            "413",
            f"Push has {count} ops, more than the maximum of {MAX_BATCH}; "
            f"send at most {MAX_BATCH} ops per request",
        )
        self.extra = {"maxBatch": MAX_BATCH}


def epoch_mismatch(sent: str, current: str) -> ProtocolConflict:
    return ProtocolConflict(
        "epoch_mismatch",
        f"Epoch {sent!r} is not this server's epoch {current!r}; pull from cursor 0 "
        "again and keep the pending ops",
        epoch=current,
    )


@dataclass(frozen=True)
class PushRequest:
    replica_id: str
    epoch: str
    dataset_id: str
    ops: list[PushOp]


@dataclass(frozen=True)
class PullRequest:
    dataset_id: str
    cursor: int
    limit: int
    epoch: str | None
    replica_id: str | None = None


def _invalid(field: str, problem: str) -> BadRequest:
    return BadRequest("400", f"Invalid push body: {field} {problem}")


def _string(
    body: Mapping[str, Any], key: str, where: str, *, nullable: bool = False
) -> Any:
    value = body.get(key)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value:
        expected = "a non-empty string or null" if nullable else "a non-empty string"
        raise _invalid(f"{where}{key}", f"must be {expected}, got {value!r}")
    return value


def parse_push(body: Any) -> PushRequest:
    """Return the push request in ``body``, or raise 400 (or 413) naming the problem."""
    if not isinstance(body, dict):
        raise BadRequest("400", "Invalid push body: expected a JSON object")
    replica_id = _string(body, "replicaId", "")
    if not _REPLICA_ID.fullmatch(replica_id):
        raise _invalid(
            "replicaId", f"must be 32 lowercase hex digits, got {replica_id!r}"
        )
    epoch = _string(body, "epoch", "")
    dataset_id = _string(body, "datasetId", "")

    ops = body.get("ops")
    if not isinstance(ops, list):
        raise _invalid("ops", f"must be a list of ops, got {ops!r}")
    if len(ops) > MAX_BATCH:
        raise BatchTooLarge(len(ops))
    return PushRequest(
        replica_id=replica_id,
        epoch=epoch,
        dataset_id=dataset_id,
        ops=[_parse_op(op, index) for index, op in enumerate(ops)],
    )


def _parse_op(op: Any, index: int) -> PushOp:
    where = f"ops[{index}]."
    if not isinstance(op, dict):
        raise _invalid(f"ops[{index}]", f"must be an object, got {op!r}")
    seq = op.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ:
        raise _invalid(
            f"{where}seq", f"must be an integer from 1 to {MAX_SEQ}, got {seq!r}"
        )
    if "status" not in op:
        raise _invalid(f"{where}status", "is missing; send a status, or null to clear")
    hlc = _string(op, "hlc", where)
    try:
        Timestamp.parse(hlc)
    except ValueError as exc:
        raise _invalid(f"{where}hlc", f"is not an HLC: {exc}") from exc
    return PushOp(
        op_id=_string(op, "opId", where),
        seq=seq,
        item_id=_string(op, "itemId", where),
        task_id=_string(op, "taskId", where),
        status=_string(op, "status", where, nullable=True),
        hlc=hlc,
        creator=_string(op, "creator", where, nullable=True),
    )


def parse_pull(params: Mapping[str, str]) -> PullRequest:
    """Return the pull request of a query string, or raise 400 naming the parameter."""
    dataset_id = params.get("dataset")
    if not dataset_id:
        raise BadRequest("400", "Missing query parameter 'dataset'; pass dataset=ID")
    cursor = _integer(params, "cursor", 0, minimum=0)
    limit = _integer(
        params, "limit", DEFAULT_PULL_LIMIT, minimum=1, maximum=MAX_PULL_LIMIT
    )
    replica_id = params.get("replica") or None
    if replica_id is not None and not _REPLICA_ID.fullmatch(replica_id):
        raise BadRequest(
            "400",
            f"Query parameter replica={replica_id!r} is not a replica id; pass the "
            "32 lowercase hex digits the replica sends as replicaId, or leave it out",
        )
    return PullRequest(
        dataset_id=dataset_id,
        cursor=cursor,
        limit=limit,
        epoch=params.get("epoch") or None,
        replica_id=replica_id,
    )


def _integer(
    params: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int,
    maximum: int = MAX_SEQ,
) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise BadRequest(
            "400", f"Query parameter {name}={text!r} is not an integer"
        ) from exc
    if value < minimum:
        raise BadRequest("400", f"Query parameter {name}={value} is below {minimum}")
    # The default maximum keeps a cursor within an SQL integer.
    if value > maximum:
        raise BadRequest(
            "400",
            f"Query parameter {name}={value} is too large; use {minimum} to {maximum}",
        )
    return value
