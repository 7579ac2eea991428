"""Hybrid logical clock: timestamps that order writes across replicas.

A timestamp is ``(wall_ms, counter, node)``. Its string form has a fixed width, so
comparing two strings gives the same order as comparing the tuples; that string is
what the journal, the server and the sync protocol store and send.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

WALL_DIGITS = 15
COUNTER_DIGITS = 6
NODE_HEX_DIGITS = 32
MAX_COUNTER = 10**COUNTER_DIGITS - 1

_PATTERN = re.compile(
    rf"^(\d{{{WALL_DIGITS}}})-(\d{{{COUNTER_DIGITS}}})-([0-9a-f]{{{NODE_HEX_DIGITS}}})$"
)


def new_node_id() -> str:
    """Return a random 128-bit node id, as 32 lowercase hex digits."""
    return secrets.token_hex(NODE_HEX_DIGITS // 2)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, order=True)
class Timestamp:
    """One HLC value; instances order as ``(wall_ms, counter, node)``."""

    wall_ms: int
    counter: int
    node: str

    def __post_init__(self) -> None:
        if not 0 <= self.wall_ms < 10**WALL_DIGITS:
            raise ValueError(f"HLC wall time {self.wall_ms!r} is out of range")
        if not 0 <= self.counter <= MAX_COUNTER:
            raise ValueError(f"HLC counter {self.counter!r} is out of range")
        if not re.fullmatch(rf"[0-9a-f]{{{NODE_HEX_DIGITS}}}", self.node):
            raise ValueError(
                f"HLC node {self.node!r} is not {NODE_HEX_DIGITS} lowercase hex digits"
            )

    def __str__(self) -> str:
        return (
            f"{self.wall_ms:0{WALL_DIGITS}d}-{self.counter:0{COUNTER_DIGITS}d}-"
            f"{self.node}"
        )

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """Parse the fixed-width string form; raise ``ValueError`` naming the input."""
        match = _PATTERN.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"invalid HLC {text!r}: expected WALL-COUNTER-NODE with "
                f"{WALL_DIGITS}, {COUNTER_DIGITS} and {NODE_HEX_DIGITS} digits"
            )
        return cls(int(match[1]), int(match[2]), match[3])


class Clock:
    """An HLC for one node.

    ``offset_ms`` is the node's measured clock error (``server_time - local_time``);
    it is added to the physical clock before every reading, so a node whose clock
    runs fast stamps its later writes with corrected time.
    """

    def __init__(
        self,
        node: str,
        *,
        last: Timestamp | None = None,
        offset_ms: int = 0,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        Timestamp(0, 0, node)  # Raises ValueError for a malformed node id.
        self.node = node
        self.offset_ms = offset_ms
        self._now_ms = now_ms
        self._wall = last.wall_ms if last else 0
        self._counter = last.counter if last else 0

    @property
    def last(self) -> Timestamp:
        if not 0 <= self._wall < 10**WALL_DIGITS:
            raise ValueError(f"HLC wall time {self._wall!r} is out of range")
        # The node was checked once above and the counter stays in range, so
        # the per-field checks of Timestamp are skipped on this hot path.
        stamp = object.__new__(Timestamp)
        object.__setattr__(stamp, "wall_ms", self._wall)
        object.__setattr__(stamp, "counter", self._counter)
        object.__setattr__(stamp, "node", self.node)
        return stamp

    def physical_ms(self) -> int:
        return self._now_ms() + self.offset_ms

    def send(self) -> Timestamp:
        """Return a timestamp for a local write, later than every one seen so far."""
        physical = self.physical_ms()
        if physical > self._wall:
            self._wall, self._counter = physical, 0
        else:
            self._advance_counter()
        return self.last

    def send_many(self, count: int) -> list[str]:
        """Return the string forms of ``count`` successive :meth:`send` stamps.

        The physical clock is read once, so the stamps share its millisecond and
        count up from there, as ``count`` calls within that millisecond would.
        """
        physical = self.physical_ms()
        stamps = []
        for index in range(count):
            if index == 0 and physical > self._wall:
                self._wall, self._counter = physical, 0
            else:
                self._advance_counter()
            if not 0 <= self._wall < 10**WALL_DIGITS:
                raise ValueError(f"HLC wall time {self._wall!r} is out of range")
            stamps.append(
                f"{self._wall:0{WALL_DIGITS}d}-{self._counter:0{COUNTER_DIGITS}d}-"
                f"{self.node}"
            )
        return stamps

    def receive(self, remote: Timestamp) -> None:
        """Merge a timestamp seen from elsewhere, so later sends sort after it."""
        if (remote.wall_ms, remote.counter) > (self._wall, self._counter):
            self._wall, self._counter = remote.wall_ms, remote.counter

    def _advance_counter(self) -> None:
        # A counter that runs out moves the wall time on by one millisecond,
        # which keeps the string form fixed-width and the order total.
        if self._counter >= MAX_COUNTER:
            self._wall += 1
            self._counter = 0
        else:
            self._counter += 1
