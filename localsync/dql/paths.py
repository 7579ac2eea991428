"""Dotted field paths and the catalog of paths that hold arrays.

The SQL compiler handles array traversal only at the paths the catalog lists, so
writers register every array path of a document (``array_paths_of``) before they
store it. A catalog that lists too many paths is safe, because the SQL only gets
longer. One that misses a path makes queries across that array miss matches.
"""

from __future__ import annotations

import re
from typing import Any

from localsync.dql.query import Path

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_path(field: str) -> Path:
    """Split a field name into its segments; ``"a..b"`` has an empty middle one.

    NOTE: a numeric segment such as ``tags.0`` is only ever an object key. MongoDB
    would also read it as an array position; neither evaluator does.
    """
    return tuple(field.split("."))


def dotted(path: Path) -> str:
    return ".".join(path)


def is_identifier(segment: str) -> bool:
    """Return whether ``segment`` can be written into SQL text as a JSON path label."""
    return _IDENTIFIER.fullmatch(segment) is not None


def array_paths_of(doc: dict[str, Any]) -> set[str]:
    """Return the dotted paths at which ``doc`` contains an array.

    Array elements add no segment, as in queries: ``{"refs": [{"tags": []}]}`` gives
    ``{"refs", "refs.tags"}``. Arrays nested directly in arrays are not searched,
    because a dotted path does not reach into them.
    """
    found: set[str] = set()
    pending: list[tuple[str, dict[str, Any]]] = [("", doc)]
    while pending:
        prefix, obj = pending.pop()
        for key, value in obj.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                pending.append((path + ".", value))
            elif isinstance(value, list):
                found.add(path)
                for element in value:
                    if isinstance(element, dict):
                        pending.append((path + ".", element))
    return found


def may_be_array(array_paths: frozenset[str] | None, path: Path) -> bool:
    """Return whether ``path`` can contain an array; ``None`` means any path can."""
    if array_paths is None:
        return True
    return dotted(path) in array_paths
