"""The localsync server's ASGI app: routes, authentication, errors and request logs.

``create_app`` builds the app over a storage; ``app_from_env`` is the factory for
``uvicorn --factory``, reading ``LOCALSYNC_DB`` and, when set, ``LOCALSYNC_SECRET``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from localsync import __version__
from localsync.errors import BadRequest, ExceptionMain, NotFound
from localsync.server.auth import Principal, verify_authorization
from localsync.server.limits import DEFAULT_MAX_BODY_MB, MAX_BODY_ENV
from localsync.server.storage import Storage, open_storage

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("localsync.server.access")


@dataclass
class RequestContext:
    """The input of a handler: the storage, the caller and the parsed request."""

    storage: Storage
    principal: Principal | None
    path: dict[str, str]
    query: QueryParams
    body: Any
    base_url: str
    dataset_projects: dict[str, str] = field(default_factory=dict)

    @property
    def user(self) -> Principal:
        assert self.principal is not None, "handler of a public route needs no user"
        return self.principal

    def require_dataset(self, dataset_id: str) -> dict[str, Any]:
        """Return the dataset, raising 404 when unknown and 403 outside the token."""
        dataset = self.storage.dataset(dataset_id)
        if dataset is None:
            raise NotFound("404", f"Dataset {dataset_id!r} not found")
        self.user.require_project(_first_project(dataset))
        return dataset

    def require_dataset_access(self, dataset_id: str) -> None:
        """Raise 403 unless the token grants the dataset's project (404 if unknown)."""
        project_id = self.dataset_projects.get(dataset_id)
        if project_id is None:
            dataset = self.require_dataset(dataset_id)
            # A dataset never changes project, so its project id can be kept.
            self.dataset_projects[dataset_id] = _first_project(dataset) or ""
            return
        self.user.require_project(project_id)

    def object_body(self) -> dict[str, Any]:
        if not isinstance(self.body, dict):
            raise BadRequest("400", "Request body must be a JSON object")
        return self.body


Handler = Callable[[RequestContext], Any]


def _first_project(dataset: dict[str, Any]) -> str | None:
    projects = dataset.get("projects") or []
    return projects[0] if projects else None


def error_response(exc: ExceptionMain) -> JSONResponse:
    """Return the JSON error the SDK maps to its exception classes."""
    try:
        status = int(exc.status_code)
    except ValueError:
        status = 500
    if not 400 <= status <= 599:
        status = 500
    body = {"message": exc.message, **getattr(exc, "extra", {})}
    return JSONResponse(body, status_code=status)


class BodyTooLarge(ExceptionMain):
    """A request body over the server's size limit (HTTP 413)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            "413",
            f"Request body is larger than the server's limit of "
            f"{limit_bytes // (1024 * 1024)} MiB; send fewer items per request, or "
            "start the server with a larger --max-body-mb",
        )


async def _read_body(request: Request, limit_bytes: int) -> bytes:
    """Return the body, raising ``BodyTooLarge`` before reading past the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise BodyTooLarge(limit_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise BodyTooLarge(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request, limit_bytes: int) -> Any:
    if request.method not in ("POST", "PATCH", "PUT"):
        return None
    raw = await _read_body(request, limit_bytes)
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
        _check_unicode(raw, body)
        # JSON strings carry NUL only as this escape; the reason is at _check_no_nul.
        if b"\\u0000" in raw and _has_nul(body):
            raise BadRequest("400", _NUL_MESSAGE.format(where="the body"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest("400", f"Request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadRequest(
            "400", "Request body is nested too deeply to parse; nest fewer levels"
        ) from exc
    return body


_NUL_MESSAGE = (
    "Request contains a NUL character (\\u0000) in {where}; ids, names, "
    "statuses and filters cannot hold one"
)


def _check_no_nul(request: Request) -> None:
    """Raise 400 for a NUL character in the path or the query string.

    PostgreSQL text cannot hold NUL, so both backends reject it the same way
    rather than one of them failing with 500.
    """
    values = [*request.path_params.values(), *request.query_params.values()]
    if any("\x00" in str(value) for value in values):
        raise BadRequest("400", _NUL_MESSAGE.format(where="the URL"))


def _has_nul(body: Any) -> bool:
    """Return whether any key or string value in a parsed JSON body contains NUL."""
    pending = [body]
    while pending:
        value = pending.pop()
        if isinstance(value, str) and "\x00" in value:
            return True
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _check_unicode(raw: bytes, body: Any) -> None:
    """Raise 400 for a body with an unpaired surrogate, which has no UTF-8 form.

    ``json.loads`` accepts one from a ``\\uD800`` escape or from raw surrogate
    bytes (which start with 0xED), and SQLite cannot store it. Other bodies skip
    the check.
    """
    if b"\\u" not in raw and b"\xed" not in raw:
        return
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(
            "400",
            "Request body is not valid Unicode: a string contains an unpaired "
            f"surrogate ({exc.object[exc.start : exc.end]!r})",
        ) from exc


def endpoint(
    handler: Handler, *, public: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: authenticate, parse the body, run it off the event loop."""

    async def route(request: Request) -> Response:
        state = request.app.state
        try:
            principal = None
            if not public:
                principal = verify_authorization(
                    state.secret, request.headers.get("authorization")
                )
            _check_no_nul(request)
            context = RequestContext(
                storage=state.storage,
                principal=principal,
                path=dict(request.path_params),
                query=request.query_params,
                body=await _json_body(request, state.max_body_bytes),
                base_url=str(request.base_url),
                dataset_projects=state.dataset_projects,
            )
            result = await run_in_threadpool(handler, context)
        except ExceptionMain as exc:
            response = error_response(exc)
            level = logging.ERROR if response.status_code >= 500 else logging.INFO
            logger.log(
                level, "%s %s: %s", request.method, request.url.path, exc.message
            )
            return response
        except Exception:
            logger.exception("%s %s failed", request.method, request.url.path)
            return JSONResponse(
                {"message": "Internal server error; the server log has the details"},
                status_code=500,
            )
        if isinstance(result, Response):
            return result
        return JSONResponse(result)

    return route


class AccessLog:
    """ASGI middleware that logs one line per request: method, path, status, ms."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            access_logger.info(
                "%s %s %d %.1fms", scope["method"], scope["path"], status, elapsed_ms
            )


def health(context: RequestContext) -> dict[str, Any]:
    meta = context.storage.meta()
    return {"status": "ok", "epoch": meta.epoch, "version": __version__}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail
    if exc.status_code == 404:
        message = f"No endpoint {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    return JSONResponse({"message": message}, status_code=exc.status_code)


def api_routes() -> list[Route]:
    from localsync.server import rest, rest_tasks, sync_api

    routes = [Route("/health", endpoint(health, public=True), methods=["GET"])]
    for path, method, handler in [*rest.ROUTES, *rest_tasks.ROUTES, *sync_api.ROUTES]:
        routes.append(Route(path, endpoint(handler), methods=[method]))
    return routes


def create_app(
    storage: Storage,
    *,
    secret: str,
    close_storage: bool = False,
    max_body_mb: int = DEFAULT_MAX_BODY_MB,
) -> Starlette:
    """Return the ASGI app serving ``storage``; tokens are checked against ``secret``.

    With ``close_storage`` the app closes the storage when it shuts down. A request
    body over ``max_body_mb`` MiB gets 413 without being read to the end.
    """
    if max_body_mb < 1:
        raise ValueError(f"max_body_mb must be at least 1, not {max_body_mb!r}")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        meta = storage.meta()
        logger.info(
            "localsync server %s started on %s, epoch %s",
            __version__,
            storage.url,
            meta.epoch,
        )
        try:
            yield
        finally:
            if close_storage:
                storage.close()
            logger.info("localsync server stopped")

    app = Starlette(
        routes=[Mount("/api/v1", routes=api_routes())],
        middleware=[Middleware(AccessLog)],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.storage = storage
    app.state.secret = secret
    app.state.max_body_bytes = max_body_mb * 1024 * 1024
    app.state.dataset_projects = {}
    return app


def app_from_env() -> Starlette:
    """Build the app from environment variables, for uvicorn's workers.

    ``LOCALSYNC_DB`` names the database; ``LOCALSYNC_SECRET`` and
    ``LOCALSYNC_MAX_BODY_MB`` are optional. ``localsync serve`` sets them.
    """
    url = os.environ.get("LOCALSYNC_DB")
    if not url:
        raise RuntimeError(
            "LOCALSYNC_DB is not set; set it to the server database path, or run "
            "'localsync serve --db PATH'"
        )
    raw_limit = os.environ.get(MAX_BODY_ENV) or str(DEFAULT_MAX_BODY_MB)
    if not raw_limit.isdigit() or int(raw_limit) < 1:
        raise RuntimeError(
            f"{MAX_BODY_ENV}={raw_limit!r} is not a whole number of MiB of at least 1; "
            f"unset it for the default of {DEFAULT_MAX_BODY_MB}"
        )
    max_body_mb = int(raw_limit)
    storage = open_storage(url)
    secret = os.environ.get("LOCALSYNC_SECRET") or storage.meta().secret
    return create_app(
        storage, secret=secret, close_storage=True, max_body_mb=max_body_mb
    )
