"""Remotes a replica syncs with: the :class:`Remote` interface and the localsync server.

:class:`LocalsyncRemote` speaks the sync protocol (``/api/v1/sync/push`` and
``/api/v1/sync/pull``) and the few REST calls a clone needs, over httpx. Another
kind of remote (a Dataloop-compatible gateway) implements the same interface.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from localsync.errors import BadRequest, SyncError
from localsync.hlc import wall_clock_ms
from localsync.sync.retry import RetryableError, RetryPolicy

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BATCH = 1000

JSON = dict[str, Any]


class EpochMismatch(SyncError):
    """The remote's database is not the one the replica synced with (HTTP 409)."""

    def __init__(self, message: str, epoch: str | None) -> None:
        super().__init__(message)
        self.epoch = epoch


class SeqConflict(SyncError):
    """The remote stores another op under one of the pushed ``(replicaId, seq)``."""

    def __init__(self, message: str, seq: int | None) -> None:
        super().__init__(message)
        self.seq = seq


class BatchTooLarge(SyncError):
    """The push had more ops than the remote takes at once (HTTP 413)."""

    def __init__(self, message: str, max_batch: int | None) -> None:
        super().__init__(message)
        self.max_batch = max_batch


class RemoteRejected(SyncError):
    """The remote refused a request for good (a 4xx other than the ones above)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class PushOp:
    """One journal op as a push sends it."""

    op_id: str
    seq: int
    item_id: str
    task_id: str
    status: str | None
    hlc: str
    creator: str | None

    def to_json(self) -> JSON:
        return {
            "opId": self.op_id,
            "seq": self.seq,
            "itemId": self.item_id,
            "taskId": self.task_id,
            "status": self.status,
            "hlc": self.hlc,
            "creator": self.creator,
        }


@dataclass(frozen=True)
class Winner:
    """The value a register holds on the remote after a push."""

    status: str | None
    hlc: str
    creator: str | None
    replica_id: str | None
    source: str | None


@dataclass(frozen=True)
class PushResult:
    op_id: str
    seq: int | None
    outcome: str
    reason: str | None
    hlc: str | None
    restamped: bool
    winner: Winner | None
    raw: JSON


@dataclass(frozen=True)
class Exchange:
    """The server's clock in a response, and the local clock around the request.

    ``sent_ms`` and ``received_ms`` are read from the local clock without any
    offset, so ``offset_ms`` measures the local clock's error.
    """

    epoch: str
    server_hlc: str | None
    server_time_ms: int | None
    sent_ms: int
    received_ms: int

    @property
    def offset_ms(self) -> int | None:
        """Return ``server_time - local time`` at the middle of the request."""
        if self.server_time_ms is None:
            return None
        return self.server_time_ms - (self.sent_ms + self.received_ms) // 2


@dataclass(frozen=True)
class PushResponse:
    exchange: Exchange
    max_batch: int
    results: list[PushResult]


@dataclass(frozen=True)
class Change:
    """One entry of the remote's change feed."""

    seq: int
    kind: str
    id: str
    deleted: bool
    data: JSON | None


@dataclass(frozen=True)
class PullPage:
    exchange: Exchange
    cursor: int
    has_more: bool
    changes: list[Change] = field(default_factory=list)
    # For a pull with a replica id: the highest seq the remote stored for it.
    replica_seq: int | None = None


class Remote(ABC):
    """A server of record that a replica pushes ops to and pulls changes from."""

    url: str

    @abstractmethod
    def push(
        self, *, replica_id: str, epoch: str, dataset_id: str, ops: list[PushOp]
    ) -> PushResponse:
        """Send ops in seq order; raise ``EpochMismatch``, ``SeqConflict`` or
        ``BatchTooLarge`` when the remote refuses the whole batch."""

    @abstractmethod
    def pull(
        self,
        *,
        dataset_id: str,
        cursor: int,
        limit: int,
        epoch: str | None,
        replica_id: str | None = None,
    ) -> PullPage:
        """Return the changes after ``cursor``; raise ``EpochMismatch`` if stale.

        With ``replica_id`` the remote may leave out register changes whose current
        value that replica wrote (the cursor still moves past them). A remote that
        does not support this sends them, which costs time but changes nothing.
        """

    @abstractmethod
    def project_by_name(self, name: str) -> JSON: ...

    @abstractmethod
    def dataset_by_name(self, project_id: str, name: str) -> JSON: ...

    @abstractmethod
    def history(self, item_id: str) -> list[JSON] | None:
        """Return every known write of the item's registers, or ``None`` when the
        remote keeps no history."""

    def close(self) -> None:  # noqa: B027 - remotes without resources need no close
        """Release connections."""

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def api_base_url(url: str) -> str:
    """Return ``http[s]://HOST[:PORT]/api/v1`` for a remote URL (prefix optional)."""
    text = url.strip() if isinstance(url, str) else ""
    parts = urlsplit(text)
    path = parts.path.rstrip("/")
    if path == API_PREFIX:
        path = ""
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or path
        or parts.query
        or parts.fragment
    ):
        raise BadRequest(
            "400",
            f"Remote URL {url!r} is invalid; use http[s]://HOST:PORT, optionally "
            f"followed by {API_PREFIX}",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise BadRequest(
            "400", f"Remote URL {url!r} has an invalid port: {exc}"
        ) from exc
    return f"{parts.scheme}://{parts.netloc}{API_PREFIX}"


def token_email(token: str) -> str | None:
    """Return the ``email`` claim of a JWT without checking its signature.

    The server checks the token; the replica only needs to know which user
    it journals ops for. Raises ``BadRequest`` for a string that is not a JWT.
    """
    segments = token.split(".") if isinstance(token, str) else []
    if len(segments) != 3 or not segments[1]:
        raise BadRequest(
            "400",
            "Token is not a JWT (three base64url segments separated by dots); "
            "pass the token the server administrator issued with "
            "'localsync server token'",
        )
    padded = segments[1] + "=" * (-len(segments[1]) % 4)
    try:
        payload = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("400", f"Token payload is not base64url JSON: {exc}") from exc
    email = payload.get("email") if isinstance(payload, dict) else None
    return email if isinstance(email, str) else None


def _retry_after_seconds(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header: delay seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _error_body(response: httpx.Response) -> JSON:
    try:
        body = response.json()
    except ValueError:
        return {"message": response.text[:200]}
    return body if isinstance(body, dict) else {"message": str(body)[:200]}


class LocalsyncRemote(Remote):
    """The localsync server (or any server speaking its sync protocol), over httpx.

    Every request is retried by ``retry``; ``now_ms`` reads the local clock that the
    clock offset is measured against. ``transport`` lets tests pass an httpx
    transport.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        now_ms: Callable[[], int] = wall_clock_ms,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = api_base_url(url)
        self.retry = retry or RetryPolicy()
        self._now_ms = now_ms
        self.client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    # Sync protocol

    def push(
        self, *, replica_id: str, epoch: str, dataset_id: str, ops: list[PushOp]
    ) -> PushResponse:
        body = {
            "replicaId": replica_id,
            "epoch": epoch,
            "datasetId": dataset_id,
            "ops": [op.to_json() for op in ops],
        }
        response, sent_ms, received_ms = self._timed("POST", "/sync/push", json=body)
        data = _json_object(response, "push")
        exchange = _exchange(data, sent_ms, received_ms)
        results = [_push_result(raw) for raw in _list(data, "results", "push")]
        max_batch = data.get("maxBatch")
        if not isinstance(max_batch, int) or max_batch < 1:
            max_batch = DEFAULT_MAX_BATCH
        return PushResponse(exchange=exchange, max_batch=max_batch, results=results)

    def pull(
        self,
        *,
        dataset_id: str,
        cursor: int,
        limit: int,
        epoch: str | None,
        replica_id: str | None = None,
    ) -> PullPage:
        params: dict[str, str | int] = {
            "dataset": dataset_id,
            "cursor": cursor,
            "limit": limit,
        }
        if epoch:
            params["epoch"] = epoch
        if replica_id:
            params["replica"] = replica_id
        response, sent_ms, received_ms = self._timed("GET", "/sync/pull", params=params)
        data = _json_object(response, "pull")
        next_cursor = data.get("cursor")
        if not isinstance(next_cursor, int) or next_cursor < cursor:
            raise SyncError(
                f"Remote sent an invalid pull cursor {next_cursor!r} after cursor "
                f"{cursor}"
            )
        return PullPage(
            exchange=_exchange(data, sent_ms, received_ms),
            cursor=next_cursor,
            has_more=bool(data.get("hasMore")),
            changes=[_change(raw) for raw in _list(data, "changes", "pull")],
            replica_seq=_optional_int(data, "replicaSeq"),
        )

    # REST calls of a clone

    def project_by_name(self, name: str) -> JSON:
        response = self._request("GET", f"/projects/{quote(name, safe='')}/name")
        projects = response.json()
        if isinstance(projects, dict):
            projects = [projects]
        if not isinstance(projects, list) or not projects:
            raise RemoteRejected(
                f"Project {name!r} not found on {self.url}; check the name and the "
                "token's "
                "projects",
                404,
            )
        if len(projects) > 1:
            raise RemoteRejected(f"More than one project is named {name!r}", 409)
        return projects[0]

    def dataset_by_name(self, project_id: str, name: str) -> JSON:
        body = {
            "filter": {"$and": [{"name": name}]},
            "page": 0,
            "pageSize": 1000,
            "resource": "datasets",
            "context": {"projects": [project_id]},
        }
        response = self._request("POST", "/datasets/query", json=body)
        items = _list(_json_object(response, "dataset query"), "items", "dataset query")
        matches = [
            item
            for item in items
            if isinstance(item, dict) and item.get("name") == name
        ]
        if not matches:
            raise RemoteRejected(
                f"Dataset {name!r} not found in project {project_id!r} on "
                f"{self.url}; check "
                "the name",
                404,
            )
        if len(matches) > 1:
            raise RemoteRejected(f"More than one dataset is named {name!r}", 409)
        return matches[0]

    def history(self, item_id: str) -> list[JSON] | None:
        try:
            response = self._request("GET", "/sync/history", params={"item": item_id})
        except RemoteRejected as exc:
            # The server's router returns "No endpoint ..." for a path it lacks.
            if exc.status_code == 405 or (
                exc.status_code == 404 and "No endpoint" in str(exc)
            ):
                return None
            raise
        data = response.json()
        if isinstance(data, dict):
            data = data.get("history", data.get("items"))
        if not isinstance(data, list):
            raise SyncError(f"Remote sent an invalid history for item {item_id!r}")
        return [entry for entry in data if isinstance(entry, dict)]

    # Requests

    def _timed(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[httpx.Response, int, int]:
        # The times bracket the attempt that succeeded, not the retries before it.
        times: list[int] = []

        def attempt() -> httpx.Response:
            times[:] = [self._now_ms()]
            response = self._send(method, path, **kwargs)
            times.append(self._now_ms())
            return response

        response = self.retry.call(attempt, description=f"{method} {path}")
        self._raise_for_status(response, method, path)
        return response, times[0], times[1]

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._timed(method, path, **kwargs)[0]

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise RetryableError(
                f"{method} {self.url}{path} timed out ({exc!r})"
            ) from exc
        except httpx.TransportError as exc:
            raise RetryableError(
                f"{method} {self.url}{path} failed: {type(exc).__name__}: {exc}"
            ) from exc
        status = response.status_code
        if status == 429 or status >= 500:
            message = _error_body(response).get("message") or response.reason_phrase
            raise RetryableError(
                f"{method} {self.url}{path} returned {status}: {message}",
                retry_after=_retry_after_seconds(response.headers.get("Retry-After")),
            )
        logger.debug("%s %s%s -> %d", method, self.url, path, status)
        return response

    def _raise_for_status(
        self, response: httpx.Response, method: str, path: str
    ) -> None:
        status = response.status_code
        if status < 400:
            return
        body = _error_body(response)
        message = f"{method} {self.url}{path} returned {status}: {body.get('message')}"
        code = body.get("code")
        if status == 409 and code == "epoch_mismatch":
            raise EpochMismatch(message, body.get("epoch"))
        if status == 409 and code == "seq_conflict":
            seq = body.get("seq")
            raise SeqConflict(message, seq if isinstance(seq, int) else None)
        if status == 413:
            limit = body.get("maxBatch")
            raise BatchTooLarge(message, limit if isinstance(limit, int) else None)
        if status == 401:
            message += (
                "; the token is missing, invalid or expired: run 'localsync login'"
            )
        elif status == 403:
            message += "; the token does not grant this project or replica"
        raise RemoteRejected(message, status)


def _json_object(response: httpx.Response, what: str) -> JSON:
    try:
        data = response.json()
    except ValueError as exc:
        raise SyncError(
            f"Remote sent a {what} response that is not JSON: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise SyncError(f"Remote sent a {what} response that is not a JSON object")
    return data


def _list(data: JSON, key: str, what: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise SyncError(f"Remote sent a {what} response without a {key!r} list")
    return value


def _exchange(data: JSON, sent_ms: int, received_ms: int) -> Exchange:
    epoch = data.get("epoch")
    if not isinstance(epoch, str) or not epoch:
        raise SyncError(f"Remote sent a response without an epoch: {epoch!r}")
    server_time = data.get("serverTime")
    server_hlc = data.get("serverHlc")
    return Exchange(
        epoch=epoch,
        server_hlc=server_hlc if isinstance(server_hlc, str) else None,
        server_time_ms=server_time if isinstance(server_time, int) else None,
        sent_ms=sent_ms,
        received_ms=received_ms,
    )


def _push_result(raw: Any) -> PushResult:
    if not isinstance(raw, dict) or not isinstance(raw.get("opId"), str):
        raise SyncError(f"Remote sent an invalid push result: {raw!r}")
    outcome = raw.get("outcome")
    if outcome not in ("applied", "superseded", "rejected"):
        raise SyncError(
            f"Remote sent an unknown push outcome {outcome!r} for op {raw['opId']}"
        )
    winner_raw = raw.get("winner")
    winner = None
    if isinstance(winner_raw, dict) and isinstance(winner_raw.get("hlc"), str):
        winner = Winner(
            status=winner_raw.get("status"),
            hlc=winner_raw["hlc"],
            creator=winner_raw.get("creator"),
            replica_id=winner_raw.get("replicaId"),
            source=winner_raw.get("source"),
        )
    return PushResult(
        op_id=raw["opId"],
        seq=raw.get("seq") if isinstance(raw.get("seq"), int) else None,
        outcome=outcome,
        reason=raw.get("reason"),
        hlc=raw.get("hlc") if isinstance(raw.get("hlc"), str) else None,
        restamped=bool(raw.get("restamped")),
        winner=winner,
        raw=raw,
    )


def _change(raw: Any) -> Change:
    if not isinstance(raw, dict):
        raise SyncError(f"Remote sent an invalid change: {raw!r}")
    seq, kind, entity_id = raw.get("seq"), raw.get("kind"), raw.get("id")
    if (
        not isinstance(seq, int)
        or not isinstance(kind, str)
        or not isinstance(entity_id, str)
    ):
        raise SyncError(f"Remote sent a change without seq, kind or id: {raw!r}")
    data = raw.get("data")
    return Change(
        seq=seq,
        kind=kind,
        id=entity_id,
        deleted=bool(raw.get("deleted")),
        data=data if isinstance(data, dict) else None,
    )


def _optional_int(data: JSON, key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SyncError(f"Remote sent an invalid {key} {value!r} in a pull")
    return value
