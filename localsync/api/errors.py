"""The error for SDK attributes that localsync does not offer offline."""

from __future__ import annotations

from localsync.errors import NotSupportedError


class UnsupportedAttributeError(NotSupportedError, AttributeError):
    """An SDK attribute that localsync does not offer.

    It is also an ``AttributeError``, so ``hasattr()``, ``getattr(obj, name,
    default)`` and ``from localsync import name`` treat the attribute as missing.
    """


def unsupported(call: str) -> UnsupportedAttributeError:
    """Return the error for an SDK attribute, named as the caller wrote it."""
    return UnsupportedAttributeError(
        f"{call} is not available offline in localsync; it offers projects, "
        "datasets, items, tasks, assignments, Filters and item statuses "
        "(update_status, status, set_status, get_items)"
    )
