"""Retrying remote calls: exponential backoff with full jitter, honoring Retry-After.

A call is retried when it raises :class:`RetryableError` (the remote is down, timed
out, or returned 429 or 5xx). Any other error passes through at once.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from localsync.errors import SyncError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RetryableError(SyncError):
    """A failure worth retrying; ``retry_after`` is the remote's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RemoteUnavailable(SyncError):
    """The remote could not be reached, or kept failing, after every allowed attempt."""


class SyncStopped(SyncError):
    """The sync was asked to stop (SIGINT, SIGTERM) while it waited to retry."""


@dataclass
class RetryPolicy:
    """How often and how long a remote call is retried.

    Before retry ``n`` (from 1) the wait is a random time in
    ``[0, min(max_wait, base_wait * 2 ** (n - 1))]``; a ``Retry-After`` from the
    remote replaces it, still capped at ``max_wait``. All times are in seconds.
    ``stop`` interrupts a wait; the call then raises :class:`SyncStopped`.
    """

    max_attempts: int = 8
    base_wait: float = 0.5
    max_wait: float = 30.0
    stop: threading.Event = field(default_factory=threading.Event)
    random: Callable[[float, float], float] = random.uniform

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(
                f"max_attempts must be at least 1, got {self.max_attempts!r}"
            )
        if self.base_wait < 0 or self.max_wait < 0:
            raise ValueError(
                f"waits must not be negative, got base_wait={self.base_wait!r}, "
                f"max_wait={self.max_wait!r}"
            )

    def wait_before(self, retry: int, retry_after: float | None) -> float:
        """Return the seconds to wait before retry number ``retry`` (from 1)."""
        if retry_after is not None and retry_after >= 0:
            return min(self.max_wait, retry_after)
        ceiling = min(self.max_wait, self.base_wait * 2 ** (retry - 1))
        return self.random(0.0, ceiling)

    def call(self, action: Callable[[], T], *, description: str) -> T:
        """Run ``action``, retrying it on :class:`RetryableError` with backoff.

        Raises :class:`RemoteUnavailable` with the last error once every attempt
        failed, and :class:`SyncStopped` when ``stop`` is set during a wait.
        """
        for attempt in range(1, self.max_attempts + 1):
            try:
                return action()
            except RetryableError as exc:
                if attempt == self.max_attempts:
                    raise RemoteUnavailable(
                        f"{description} failed after {attempt} attempts: {exc}; check "
                        "that the remote is up and run the sync again"
                    ) from exc
                wait = self.wait_before(attempt, exc.retry_after)
                logger.warning(
                    "%s failed (attempt %d of %d): %s; retrying in %.2f s",
                    description,
                    attempt,
                    self.max_attempts,
                    exc,
                    wait,
                )
                if self.stop.wait(wait):
                    raise SyncStopped(
                        f"{description} stopped while waiting to retry"
                    ) from exc
        raise AssertionError("unreachable: the loop returns or raises")
