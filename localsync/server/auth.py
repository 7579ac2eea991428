"""Bearer tokens: HS256 JWTs with ``exp``, the user's ``email`` and project ids."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import jwt

from localsync.errors import Forbidden, Unauthorized

ALGORITHM = "HS256"
DEFAULT_LIFETIME_S = 30 * 24 * 3600


@dataclass(frozen=True)
class Principal:
    """The user a token was issued to, and the projects it reaches."""

    email: str
    project_ids: frozenset[str]

    def require_project(self, project_id: str | None) -> None:
        """Raise ``Forbidden`` unless the token grants the project."""
        if project_id not in self.project_ids:
            raise Forbidden(
                "403",
                f"The token of {self.email} does not grant project {project_id!r}; "
                "issue a token for that project",
            )


def issue_token(
    secret: str,
    *,
    email: str,
    project_ids: Iterable[str],
    expires_in: int = DEFAULT_LIFETIME_S,
    now: float | None = None,
) -> str:
    issued_at = int(time.time() if now is None else now)
    payload = {
        "email": email,
        "projects": sorted(set(project_ids)),
        "iat": issued_at,
        "exp": issued_at + expires_in,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify_authorization(secret: str, header: str | None) -> Principal:
    """Return the principal of an ``Authorization: Bearer`` header, or raise 401."""
    if not header:
        raise Unauthorized("401", "Missing Authorization header; send 'Bearer <token>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("401", "Authorization header is not 'Bearer <token>'")
    return verify_token(secret, token.strip())


def verify_token(secret: str, token: str) -> Principal:
    # Only HS256 is accepted, which rejects unsigned ("alg": "none") tokens too.
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "email", "projects"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("401", "Token expired; issue a new token") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("401", f"Invalid token: {exc}") from exc

    email, projects = claims["email"], claims["projects"]
    if not isinstance(email, str) or not isinstance(projects, list):
        raise Unauthorized(
            "401", "Invalid token: 'email' or 'projects' has the wrong type"
        )
    return Principal(email=email, project_ids=frozenset(str(p) for p in projects))
