"""Opening a replica file: permissions, SQLite settings, schema version, migrations."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from localsync.errors import SchemaVersionError, StoreError
from localsync.schema_files import read_schema

logger = logging.getLogger(__name__)

# Each entry migrates a replica from version N-1 to N; its SQL runs in one transaction.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    ("sqlite/items.sql", "replica/001_initial.sql"),
)
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_MS = 30_000
SQLITE_HEADER = b"SQLite format 3\x00"


def connect(path: str | Path, *, create: bool = False) -> sqlite3.Connection:
    """Open (or with ``create``, make) a replica file and bring its schema up to date.

    Raises ``StoreError`` for a missing file, a file that is not SQLite or not a
    replica, and ``SchemaVersionError`` for a file written by a newer localsync.
    """
    path = Path(path)
    if not path.exists():
        if not create:
            raise StoreError(
                f"Replica file {str(path)!r} does not exist; create one with "
                "'localsync import' or 'localsync clone', or set LOCALSYNC_STORE"
            )
        _create_private_file(path)
    else:
        _check_sqlite_header(path)

    conn = _open(path)
    try:
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _create_private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)


def _check_sqlite_header(path: Path) -> None:
    """Reject a file that is not SQLite, or of a newer schema, before writing to it.

    Switching a file to WAL rewrites its header, so both checks read the raw
    header: the magic string at offset 0 and ``user_version`` at offset 60.
    """
    try:
        with path.open("rb") as handle:
            header = handle.read(64)
    except OSError as exc:
        raise StoreError(f"Replica file {str(path)!r} cannot be read: {exc}") from exc
    # An empty file is what a crash during creation leaves; SQLite can start it anew.
    if not header:
        return
    if not header.startswith(SQLITE_HEADER):
        raise StoreError(
            f"{str(path)!r} is not a localsync replica (not an SQLite database); "
            "pass the path of a replica file"
        )
    if len(header) == 64:
        _check_version(int.from_bytes(header[60:64], "big"), path)


def _check_version(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"Replica {str(path)!r} has schema version {version}, but this localsync "
            f"supports up to {SCHEMA_VERSION}; upgrade localsync to open it"
        )


def _open(path: Path) -> sqlite3.Connection:
    # SQLite gives the -wal and -shm files the mode of the database file, but the
    # umask still applies, so keep it closed while they may be created.
    old_umask = os.umask(0o077)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        journal_mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{str(path)!r} cannot be opened as a replica: {exc}; restore it from a "
            "backup or clone again"
        ) from exc
    finally:
        os.umask(old_umask)
    if journal_mode.lower() != "wal":
        logger.warning("replica %s runs in %s mode, not WAL", path, journal_mode)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{str(path)!r} is damaged: {exc}") from exc
    _check_version(version, path)
    if version == SCHEMA_VERSION:
        _check_is_replica(conn, path)
        return
    with write_transaction(conn):
        # Re-read inside the lock: another process may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and _has_tables(conn):
            raise StoreError(
                f"{str(path)!r} is an SQLite database but not a localsync replica"
            )
        for number in range(version, SCHEMA_VERSION):
            for relative in MIGRATIONS[number]:
                for statement in _statements(read_schema(relative)):
                    conn.execute(statement)
            logger.info("migrated replica %s to schema version %d", path, number + 1)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _check_is_replica(conn: sqlite3.Connection, path: Path) -> None:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal'"
    ).fetchone()
    if row is None:
        raise StoreError(
            f"{str(path)!r} is an SQLite database but not a localsync replica"
        )


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None


def _statements(script: str) -> list[str]:
    """Split a schema file into statements, so each runs inside our transaction.

    ``executescript`` would commit first; ``sqlite3.complete_statement`` finds the
    ends of statements without being fooled by semicolons inside strings.
    """
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip() and not _only_comments(current):
                statements.append(current.strip())
            current = ""
    if current.strip() and not _only_comments(current):
        statements.append(current.strip())
    return statements


def _only_comments(text: str) -> bool:
    return all(
        not line.strip() or line.strip().startswith("--") for line in text.splitlines()
    )


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run a block as one ``BEGIN IMMEDIATE`` transaction: commit, or roll back.

    Inside a transaction that is already open, the block becomes a savepoint, so
    helpers can be called both on their own and as part of a larger write.
    """
    if conn.in_transaction:
        conn.execute("SAVEPOINT nested_write")
        try:
            yield conn
        except BaseException:
            # After some errors (a full disk, an I/O error) SQLite has already
            # rolled back the whole transaction, and the savepoint with it.
            if conn.in_transaction:
                conn.execute("ROLLBACK TO nested_write")
                conn.execute("RELEASE nested_write")
            raise
        conn.execute("RELEASE nested_write")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
