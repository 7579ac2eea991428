"""Key-value settings of a replica: its id, remote, token, cursor and clock state."""

from __future__ import annotations

import sqlite3


def get_setting(
    conn: sqlite3.Connection, key: str, default: str | None = None
) -> str | None:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return default if row is None or row[0] is None else row[0]


def set_setting(conn: sqlite3.Connection, key: str, value: str | int | None) -> None:
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, None if value is None else str(value)),
    )
