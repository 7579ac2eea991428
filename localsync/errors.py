"""Errors raised by localsync.

Every error derives from :class:`LocalsyncError`. The SDK-shaped classes keep the
names, the ``(status_code, message)`` arguments and the status codes of
``dtlpy.exceptions`` (dtlpy 1.126.5), so code that catches ``dl.exceptions.NotFound``
keeps working after ``import localsync as dl``::

    LocalsyncError
    ├── ExceptionMain                (SDK-shaped: .status_code, .message)
    │   ├── BadRequest               400
    │   │   └── InvalidQuery         a malformed filter or query body
    │   ├── Unauthorized             401
    │   ├── Forbidden                403
    │   ├── NotFound                 404
    │   ├── RequestTimeout           408
    │   ├── Conflict                 409
    │   ├── FailedDependency         424
    │   ├── InternalServerError      500
    │   ├── TokenExpired             600
    │   ├── MissingEntity            2001
    │   ├── SDKError                 3001
    │   └── UnknownException         any other code
    ├── StoreError                   the replica file cannot be used
    │   └── SchemaVersionError       the file was written by a newer localsync
    ├── NotSupportedError            an SDK call that localsync does not offer
    └── SyncError                    a sync could not finish
"""

from __future__ import annotations


class LocalsyncError(Exception):
    """Root of every error that localsync raises on purpose."""


class ExceptionMain(LocalsyncError):
    """Base of the SDK-shaped errors; ``args`` is ``(status_code, message)``."""

    def __init__(
        self,
        status_code: str = "Unknown Status Code",
        message: str = "Unknown Error Message",
    ) -> None:
        self.status_code = status_code
        self.message = message
        super().__init__(status_code, message)

    def __str__(self) -> str:
        return f"{self.message} (status {self.status_code})"


class BadRequest(ExceptionMain):
    pass


class InvalidQuery(BadRequest):
    """A filter or query body that does not follow the query language."""

    def __init__(self, message: str) -> None:
        super().__init__("400", message)


class Unauthorized(ExceptionMain):
    pass


class Forbidden(ExceptionMain):
    pass


class NotFound(ExceptionMain):
    pass


class RequestTimeout(ExceptionMain):
    pass


class Conflict(ExceptionMain):
    pass


class FailedDependency(ExceptionMain):
    pass


class InternalServerError(ExceptionMain):
    pass


class TokenExpired(ExceptionMain):
    pass


class MissingEntity(ExceptionMain):
    pass


class SDKError(ExceptionMain):
    pass


class UnknownException(ExceptionMain):
    pass


_BY_STATUS_CODE: dict[str, type[ExceptionMain]] = {
    "400": BadRequest,
    "401": Unauthorized,
    "403": Forbidden,
    "404": NotFound,
    "408": RequestTimeout,
    "409": Conflict,
    "424": FailedDependency,
    "500": InternalServerError,
    "600": TokenExpired,
    "2001": MissingEntity,
    "3001": SDKError,
}


def PlatformException(error: str | int | None = None, message: str | None = None):  # noqa: N802
    """Raise the SDK error class mapped to ``error``, as ``dtlpy`` does.

    The SDK's ``PlatformException(...)`` is a class whose constructor always raises a
    subclass; this factory keeps that calling convention.
    """
    status_code = str(error) if error is not None else None
    cls = _BY_STATUS_CODE.get(status_code or "", UnknownException)
    raise cls(status_code=status_code or "Unknown Status Code", message=message or "")


def error_for_status(status_code: int | str, message: str) -> ExceptionMain:
    """Return (not raise) the SDK error instance for an HTTP status code."""
    code = str(status_code)
    cls = _BY_STATUS_CODE.get(code, UnknownException)
    return cls(code, message)


class StoreError(LocalsyncError):
    """The replica file is missing, not SQLite, damaged or otherwise unusable."""


class SchemaVersionError(StoreError):
    """The replica file has a schema version newer than this localsync supports."""


class NotSupportedError(LocalsyncError):
    """An SDK call that localsync does not offer offline."""


class SyncError(LocalsyncError):
    """A sync could not finish; the journal is unchanged and the sync can be rerun."""
