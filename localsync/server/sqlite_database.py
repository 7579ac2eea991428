"""SQLite plumbing of the server storage: connections, transactions, schema, meta.

Each thread gets its own connection. Writers take the write lock at ``BEGIN
IMMEDIATE``, so one write transaction runs at a time, and the others wait up to the
busy timeout instead of failing with "database is locked".
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localsync.errors import SchemaVersionError, StoreError
from localsync.hlc import Clock, Timestamp, new_node_id
from localsync.schema_files import read_schema
from localsync.server.storage import ServerMeta

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000


def split_statements(script: str) -> list[str]:
    """Split an SQL script into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip() and not pending.strip().startswith("--"):
        statements.append(pending.strip())
    return statements


class SQLiteDatabase:
    """A server database file: per-thread connections and transaction helpers."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._create_file()
        self.meta = self._initialize()

    def _create_file(self) -> None:
        # The file stores the token-signing secret, so only its owner may read it.
        if not self.path.parent.is_dir():
            raise StoreError(
                f"Folder {str(self.path.parent)!r} of database {str(self.path)!r} does "
                "not exist; create it or pass another --db path"
            )
        if not self.path.exists():
            descriptor = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(descriptor)

    def connection(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it on first use."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_ms / 1000,
            )
            connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"Cannot open {str(self.path)!r} as a SQLite database: {exc}; "
                "pass the path of a localsync server database or of a new file"
            ) from exc
        connection.row_factory = sqlite3.Row
        return connection

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """Run a write transaction: ``BEGIN IMMEDIATE``, commit, or roll back.

        Threads of one process queue on a lock first: SQLite's busy handler sleeps
        up to 100 ms between retries, which is slower than waiting for the writer.
        """
        connection = self.connection()
        with self._write_lock:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Run a read transaction, so every select reads the same snapshot."""
        connection = self.connection()
        connection.execute("BEGIN")
        try:
            yield connection
        finally:
            connection.execute("ROLLBACK")

    def _initialize(self) -> ServerMeta:
        try:
            with self.write() as connection:
                if not _has_table(connection, "meta"):
                    _create_schema(connection)
                values = dict(
                    connection.execute("SELECT key, value FROM meta").fetchall()
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"Cannot use {str(self.path)!r} as a localsync server database: {exc}"
            ) from exc
        version = int(values.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"Database {str(self.path)!r} has server schema version {version}, "
                "newer "
                f"than this localsync supports ({SCHEMA_VERSION}); upgrade localsync"
            )
        return ServerMeta(
            epoch=values["epoch"],
            node_id=values["node_id"],
            secret=values["secret"],
            schema_version=version,
        )

    def clock(self, connection: sqlite3.Connection) -> Clock:
        """Return the server clock as the last write transaction left it."""
        row = connection.execute(
            "SELECT value FROM meta WHERE key = 'last_hlc'"
        ).fetchone()
        return Clock(self.meta.node_id, last=Timestamp.parse(row[0]))

    def save_clock(self, connection: sqlite3.Connection, clock: Clock) -> None:
        connection.execute(
            "UPDATE meta SET value = ? WHERE key = 'last_hlc'", (str(clock.last),)
        )

    def last_hlc(self, connection: sqlite3.Connection) -> str:
        return str(self.clock(connection).last)


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    row = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def _create_schema(connection: sqlite3.Connection) -> None:
    script = (
        read_schema("sqlite/items.sql") + "\n" + read_schema("server_sqlite/server.sql")
    )
    for statement in split_statements(script):
        connection.execute(statement)

    node_id = new_node_id()
    values = {
        "schema_version": str(SCHEMA_VERSION),
        "epoch": secrets.token_hex(16),
        "node_id": node_id,
        "last_hlc": str(Timestamp(0, 0, node_id)),
        "secret": secrets.token_urlsafe(32),
    }
    connection.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)", values.items()
    )
    logger.info("created server database, epoch %s", values["epoch"])
