"""Handlers of the sync protocol: ``POST /sync/push`` and ``GET /sync/pull``."""

from __future__ import annotations

import time
from typing import Any

from localsync.server.app import RequestContext
from localsync.server.protocol import epoch_mismatch, parse_pull, parse_push
from localsync.server.registers import MAX_BATCH
from localsync.server.storage import JSON


def _server_time_ms() -> int:
    return time.time_ns() // 1_000_000


def push(context: RequestContext) -> JSON:
    request = parse_push(context.body)
    epoch = context.storage.meta().epoch
    if request.epoch != epoch:
        raise epoch_mismatch(request.epoch, epoch)
    context.require_dataset_access(request.dataset_id)

    outcome = context.storage.push(
        replica_id=request.replica_id,
        user_email=context.user.email,
        dataset_id=request.dataset_id,
        ops=request.ops,
    )
    return {
        "epoch": epoch,
        "serverHlc": outcome.server_hlc,
        "serverTime": _server_time_ms(),
        "maxBatch": MAX_BATCH,
        "results": outcome.results,
    }


def pull(context: RequestContext) -> JSON:
    request = parse_pull(context.query)
    epoch = context.storage.meta().epoch
    if request.epoch is not None and request.epoch != epoch:
        raise epoch_mismatch(request.epoch, epoch)
    context.require_dataset_access(request.dataset_id)

    page = context.storage.pull(
        request.dataset_id, cursor=request.cursor, limit=request.limit
    )
    return {
        "epoch": epoch,
        "serverHlc": page.server_hlc,
        "serverTime": _server_time_ms(),
        "cursor": page.cursor,
        "hasMore": page.has_more,
        "changes": page.changes,
    }


ROUTES: list[tuple[str, str, Any]] = [
    ("/sync/push", "POST", push),
    ("/sync/pull", "GET", pull),
]
