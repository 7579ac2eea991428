"""Reading the claims of a stored JWT without verifying it, as dtlpy's client does.

The replica keeps the token for the next sync; the remote verifies its signature.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import UTC, datetime
from typing import Any

# dtlpy counts a token as expired this many seconds before its ``exp``.
EXPIRY_MARGIN_S = 60


def token_claims(token: str | None) -> dict[str, Any] | None:
    """Return a JWT's payload, or ``None`` when it is missing or not a JWT."""
    if not token or not isinstance(token, str):
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    return claims if isinstance(claims, dict) else None


def token_expires_at(token: str | None) -> datetime | None:
    """Return the time of the token's ``exp`` claim, or ``None`` when it has none."""
    exp = (token_claims(token) or {}).get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    return datetime.fromtimestamp(exp, UTC)


def is_expired(token: str | None, margin_s: float = EXPIRY_MARGIN_S) -> bool:
    """Return whether the token is missing, lacks ``exp`` or expires within margin."""
    expires = token_expires_at(token)
    if expires is None:
        return True
    return time.time() >= expires.timestamp() - margin_s


def token_email(token: str | None) -> str | None:
    email = (token_claims(token) or {}).get("email")
    return email if isinstance(email, str) and email else None
