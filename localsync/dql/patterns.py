"""Wildcard string values: ``*`` matches any run of characters, ``/`` included.

A backslash before a star (``\\*``) makes the star literal; every other backslash
is an ordinary character. Matching is case-sensitive.
"""

from __future__ import annotations


def split_wildcards(value: str) -> tuple[str, ...]:
    """Split ``value`` at its unescaped stars into the literal runs between them.

    A value without an unescaped star returns one run, with ``\\*`` turned into
    ``*``. Consecutive stars act as one, so ``"/a/**"`` returns ``("/a/", "")``.
    """
    parts: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\" and value.startswith("*", index + 1):
            current.append("*")
            index += 2
            continue
        if char == "*":
            if not (parts and not current and value[index - 1] == "*"):
                parts.append("".join(current))
            current = []
            index += 1
            continue
        current.append(char)
        index += 1
    parts.append("".join(current))
    return tuple(parts)


def matches_wildcards(parts: tuple[str, ...], text: str) -> bool:
    """Return whether ``text`` is the runs of ``parts`` with anything between them.

    The first run must be a prefix and the last a suffix. Each middle run is taken
    at its leftmost position, which is optimal for star-only patterns and keeps the
    check linear in practice.
    """
    first, *middle, last = parts
    if not text.startswith(first):
        return False
    position = len(first)
    for run in middle:
        found = text.find(run, position)
        if found < 0:
            return False
        position = found + len(run)
    return len(text) - len(last) >= position and text.endswith(last)


def glob_pattern(parts: tuple[str, ...]) -> str:
    """Return the SQLite GLOB pattern for ``parts`` joined by wildcards.

    GLOB also gives ``?`` and ``[`` a meaning, so they (and literal stars) are
    written as one-character classes.
    """
    escaped = []
    for run in parts:
        run = run.replace("[", "[[]").replace("?", "[?]").replace("*", "[*]")
        escaped.append(run)
    return "*".join(escaped)
