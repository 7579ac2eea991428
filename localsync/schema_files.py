"""Locating the SQL and JSON Schema files of ``schema/``.

In a source checkout they sit in ``schema/`` beside the package; an installed wheel
carries them as ``localsync/_schema``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def schema_dir() -> Path:
    for candidate in (_PACKAGE / "_schema", _PACKAGE.parent / "schema"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"schema folder not found next to {_PACKAGE}; reinstall localsync"
    )


def read_schema(relative: str) -> str:
    """Return the text of one file under ``schema/``, e.g. ``sqlite/items.sql``."""
    return (schema_dir() / relative).read_text(encoding="utf-8")
