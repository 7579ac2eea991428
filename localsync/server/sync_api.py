"""Handlers of the sync protocol: push, pull, and an item's register history."""

from __future__ import annotations

import time
from typing import Any

from localsync.crash_points import crash_point
from localsync.errors import BadRequest, NotFound
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
    crash_point("server-push-committed")
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
        request.dataset_id,
        cursor=request.cursor,
        limit=request.limit,
        replica_id=request.replica_id,
    )
    body = {
        "epoch": epoch,
        "serverHlc": page.server_hlc,
        "serverTime": _server_time_ms(),
        "cursor": page.cursor,
        "hasMore": page.has_more,
        "changes": page.changes,
    }
    if page.replica_seq is not None:
        body["replicaSeq"] = page.replica_seq
    return body


def history(context: RequestContext) -> JSON:
    """Return every write of an item's registers, winning or losing, oldest first."""
    item_id = context.query.get("item")
    if not item_id:
        raise BadRequest("400", "Query parameter 'item' (an item id) is missing")
    item = context.storage.item(item_id)
    if item is None:
        raise NotFound("404", f"Item {item_id!r} not found")
    context.require_dataset_access(item["datasetId"])

    refs = (item.get("metadata") or {}).get("system", {}).get("refs") or []
    task_ids = [ref.get("id") for ref in refs if ref.get("type") == "task"]
    writes = [
        write
        for task_id in dict.fromkeys(task_ids)
        for write in context.storage.register_history(item_id, task_id)
    ]
    writes.sort(key=lambda write: write["hlc"])
    return {"itemId": item_id, "history": writes}


ROUTES: list[tuple[str, str, Any]] = [
    ("/sync/push", "POST", push),
    ("/sync/pull", "GET", pull),
    ("/sync/history", "GET", history),
]
