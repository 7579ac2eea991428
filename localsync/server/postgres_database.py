"""PostgreSQL plumbing of the server storage: pool, transactions, migrations, clock.

Several server processes may share one database, so every rule that SQLite gets
from its single writer is made explicit here:

- Write transactions lock the rows they read before changing them (callers lock
  items ``FOR UPDATE`` in id order), and a deadlock or serialization failure runs
  the whole transaction again.
- Change-feed rows are written last, under a per-dataset advisory lock that is held
  until commit (see :meth:`Transaction.write_feed`), so no pull returns a cursor
  past a change that another transaction could still commit.
- Each process keeps its own HLC; register writes first merge the register's
  current HLC, so a new server write always sorts after the value it replaces.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from localsync.errors import SchemaVersionError, StoreError
from localsync.hlc import Clock, Timestamp, new_node_id
from localsync.schema_files import schema_dir
from localsync.server.storage import ServerMeta

logger = logging.getLogger(__name__)

Result = TypeVar("Result")

# First key of localsync's two-key advisory locks; the second is a hash of the
# dataset id. Two datasets whose ids share a hash only wait for each other.
FEED_LOCK_CLASS = 0x6C73
# The one-key advisory lock that serializes schema migrations.
MIGRATION_LOCK = 0x6C73_0000_0001

# How often a write transaction that failed on a deadlock or a serialization
# failure is tried again, and the first pause between tries in seconds.
MAX_ATTEMPTS = 8
RETRY_PAUSE_S = 0.01

# How often the process's clock is saved to the meta table, in seconds.
CLOCK_SAVE_INTERVAL_S = 1.0

DEFAULT_POOL_SIZE = 10
CONNECT_TIMEOUT_S = 30.0


class RetryTransaction(Exception):
    """Raised inside a write transaction to roll it back and run it again."""


def migrations() -> list[tuple[int, str]]:
    """Return ``(version, SQL)`` of each file in ``schema/postgres/``, in order."""
    found = []
    for path in sorted((schema_dir() / "postgres").glob("[0-9][0-9][0-9]_*.sql")):
        found.append((int(path.name[:3]), path.read_text(encoding="utf-8")))
    versions = [version for version, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise StoreError(
            f"PostgreSQL migrations are numbered {versions}; expected 1, 2, ... "
            "without gaps; reinstall localsync"
        )
    return found


SCHEMA_VERSION = len(migrations())


class Transaction:
    """One write transaction: its connection and the feed changes it will make."""

    def __init__(self, connection: psycopg.Connection[dict[str, Any]]) -> None:
        self.connection = connection
        self.new_array_paths: set[tuple[str, str, str]] = set()
        self._feed: dict[tuple[str, str, str], bool] = {}

    def execute(self, query: str, params: Any = ()) -> psycopg.Cursor[dict[str, Any]]:
        return self.connection.execute(query, params)  # type: ignore[arg-type]

    def touch(
        self, dataset_id: str, kind: str, entity_id: str, *, deleted: bool = False
    ) -> None:
        """Queue a move of the entity's feed row to the end of the feed."""
        key = (dataset_id, kind, entity_id)
        self._feed.pop(key, None)
        self._feed[key] = deleted

    def forget(self, dataset_id: str, kind: str, entity_ids: Iterable[str]) -> None:
        """Remove entities' feed rows, and any queued move of them."""
        ids = list(entity_ids)
        for entity_id in ids:
            self._feed.pop((dataset_id, kind, entity_id), None)
        if ids:
            self.execute(
                "DELETE FROM changes WHERE dataset_id = %s AND kind = %s "
                "AND entity_id = ANY(%s)",
                (dataset_id, kind, ids),
            )

    def write_feed(self) -> None:
        """Write the queued feed rows; the caller commits right after.

        Sequence values are handed out in call order but transactions commit in
        any order, so a reader could see seq 11 committed while seq 10 is not yet,
        return cursor 11 and skip 10 for good. The advisory lock taken here, per
        dataset, is held until commit or rollback, and PostgreSQL releases a
        transaction's locks only after its commit is visible to new snapshots. So
        a transaction takes a dataset's next seq only after the previous holder's
        rows are visible, and the seqs of one dataset become visible in increasing
        order. The lock is the last step of a transaction, after its row locks, so
        writers queue for it only for the feed insert and the commit.

        Recording ``pg_current_xact_id()`` per row and returning only rows below
        ``pg_snapshot_xmin`` would not suffice alone: a transaction can take its
        xid before another one takes a lower seq, so rows would still be skipped.
        """
        by_dataset: dict[str, list[tuple[str, str, bool]]] = {}
        for (dataset_id, kind, entity_id), deleted in self._feed.items():
            by_dataset.setdefault(dataset_id, []).append((kind, entity_id, deleted))
        for dataset_id in sorted(by_dataset):
            rows = by_dataset[dataset_id]
            self.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (FEED_LOCK_CLASS, dataset_id),
            )
            self.execute(
                "INSERT INTO changes (dataset_id, kind, entity_id, deleted) "
                "SELECT %s, t.kind, t.entity_id, t.deleted "
                "FROM unnest(%s::text[], %s::text[], %s::boolean[]) "
                "WITH ORDINALITY AS t (kind, entity_id, deleted, position) "
                "ORDER BY t.position "
                "ON CONFLICT (dataset_id, kind, entity_id) "
                "DO UPDATE SET seq = excluded.seq, deleted = excluded.deleted",
                (
                    dataset_id,
                    [row[0] for row in rows],
                    [row[1] for row in rows],
                    [row[2] for row in rows],
                ),
            )
        self._feed.clear()


class PostgresDatabase:
    """A server database on PostgreSQL: a connection pool and transaction helpers."""

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.url = url
        self.pool = _open_pool(url, pool_size)
        # Array paths this process saw committed. Threads only read it, and a
        # commit swaps in a new set, so no reader sees a set change size. Two
        # commits at once may drop one's paths, which costs a redundant insert.
        self.known_array_paths: frozenset[tuple[str, str, str]] = frozenset()
        self._clock_lock = threading.Lock()
        try:
            self.meta = self._initialize()
            self._clock = Clock(self.meta.node_id, last=self._saved_clock())
        except BaseException:
            self.pool.close()
            raise
        self._clock_saved_at = time.monotonic()

    def close(self) -> None:
        try:
            self.save_clock()
        except psycopg.Error as exc:
            logger.warning("could not save the server clock on close: %s", exc)
        self.pool.close()

    # Transactions.

    def write(self, work: Callable[[Transaction], Result]) -> Result:
        """Run ``work`` in a write transaction and commit; retry it on a deadlock.

        ``work`` may run more than once, so it must not change anything outside
        the transaction that a second run would see.
        """
        pause = RETRY_PAUSE_S
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return self._write_once(work)
            except (
                pg_errors.DeadlockDetected,
                pg_errors.SerializationFailure,
                RetryTransaction,
            ) as exc:
                if attempt == MAX_ATTEMPTS:
                    raise StoreError(
                        f"A write transaction failed {attempt} times ({exc}); "
                        "the database is overloaded, so retry the request later"
                    ) from exc
                logger.warning(
                    "write transaction attempt %d failed, retrying: %s", attempt, exc
                )
                time.sleep(pause * (1 + secrets.randbelow(100) / 100))
                pause *= 2
        raise AssertionError("unreachable")

    def _write_once(self, work: Callable[[Transaction], Result]) -> Result:
        with self.pool.connection() as connection:
            transaction = Transaction(connection)
            with connection.transaction():
                result = work(transaction)
                transaction.write_feed()
        if transaction.new_array_paths:
            self.known_array_paths = self.known_array_paths | frozenset(
                transaction.new_array_paths
            )
        self._save_clock_now_and_then()
        return result

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """Run a read-only transaction in which every select reads one snapshot."""
        with self.pool.connection() as connection:
            with connection.transaction():
                connection.execute(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                )
                yield connection

    # Clock.

    def with_clock(self, work: Callable[[Clock], Result]) -> Result:
        """Run ``work`` with this process's clock, one thread at a time.

        ``work`` should do no I/O, since every request of the process waits for it.
        """
        with self._clock_lock:
            return work(self._clock)

    def last_hlc(self) -> str:
        with self._clock_lock:
            return str(self._clock.last)

    def save_clock(self) -> None:
        """Store the clock in the meta table, unless a stored value is later."""
        last = self.last_hlc()
        with self.pool.connection() as connection:
            connection.execute(
                "UPDATE meta SET value = %s WHERE key = 'last_hlc' "
                'AND value COLLATE "C" < %s',
                (last, last),
            )
        self._clock_saved_at = time.monotonic()

    def _save_clock_now_and_then(self) -> None:
        if time.monotonic() - self._clock_saved_at >= CLOCK_SAVE_INTERVAL_S:
            self.save_clock()

    def _saved_clock(self) -> Timestamp:
        with self.read() as connection:
            row = connection.execute(
                "SELECT value FROM meta WHERE key = 'last_hlc'"
            ).fetchone()
        assert row is not None
        saved = Timestamp.parse(row["value"])
        # Every process shares the server's node id in its HLCs.
        return Timestamp(saved.wall_ms, saved.counter, self.meta.node_id)

    # Schema.

    def _initialize(self) -> ServerMeta:
        with self.pool.connection() as connection:
            with connection.transaction():
                connection.execute(
                    "SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,)
                )
                version = _migrate(connection)
                _insert_meta(connection)
                values = {
                    row["key"]: row["value"]
                    for row in connection.execute("SELECT key, value FROM meta")
                }
        return ServerMeta(
            epoch=values["epoch"],
            node_id=values["node_id"],
            secret=values["secret"],
            schema_version=version,
        )


def _open_pool(url: str, pool_size: int) -> ConnectionPool[Any]:
    _check_connection(url)
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=1,
        max_size=pool_size,
        kwargs={"autocommit": True, "row_factory": dict_row},
        configure=_configure_connection,
        check=ConnectionPool.check_connection,
        name="localsync",
        open=False,
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
    except PoolTimeout as exc:
        pool.close()
        raise StoreError(
            f"Cannot connect to PostgreSQL at {without_password(url)!r} within "
            f"{CONNECT_TIMEOUT_S:.0f} s; check that the server runs and that the URL, "
            "user and database are right"
        ) from exc
    return pool


def _configure_connection(connection: psycopg.Connection[Any]) -> None:
    # Compiled queries nest many small subqueries whose estimated cost passes
    # jit_above_cost. On PostgreSQL 15 compiling one took about 0.5 s, against
    # 1 ms to run it without JIT.
    connection.execute("SET jit = off")


def _check_connection(url: str) -> None:
    """Connect once, so a wrong URL fails at once with the server's reason."""
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        # The parser's message repeats the URL, password included, so it is dropped.
        raise StoreError(
            "The PostgreSQL URL cannot be parsed; "
            "pass postgresql://USER@HOST:PORT/DATABASE"
        ) from None
    try:
        connection = psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT_S))
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split()) or "connection failed"
        raise StoreError(
            f"Cannot connect to PostgreSQL at {without_password(url)!r}: {reason}; "
            "check that the server runs and that the URL, user and database are right"
        ) from exc
    connection.close()


def without_password(url: str) -> str:
    """Return the URL without its password and options, for messages and logs."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<invalid URL>"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{info.get('host', '')}{port}/{info.get('dbname', '')}"


def _migrate(connection: psycopg.Connection[dict[str, Any]]) -> int:
    """Apply the migrations the database lacks; return its schema version."""
    exists = connection.execute(
        "SELECT to_regclass('schema_version') IS NOT NULL AS found"
    ).fetchone()
    current = 0
    if exists and exists["found"]:
        row = connection.execute(
            "SELECT coalesce(max(version), 0) AS version FROM schema_version"
        ).fetchone()
        current = row["version"] if row else 0
    elif _has_tables(connection):
        raise StoreError(
            "The PostgreSQL database already contains tables but no localsync "
            "schema_version table; pass the URL of an empty database or of a "
            "localsync server database"
        )
    if current > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"The PostgreSQL database has server schema version {current}, newer "
            f"than this localsync supports ({SCHEMA_VERSION}); upgrade localsync"
        )
    for version, script in migrations()[current:]:
        try:
            connection.execute(script.encode())
        except psycopg.Error as exc:
            # The caller's transaction rolls back every migration of this open.
            raise StoreError(
                f"PostgreSQL server schema migration {version:03d} failed: {exc}; "
                f"the database was left at version {current}"
            ) from exc
        connection.execute(
            "INSERT INTO schema_version (version) VALUES (%s)", (version,)
        )
        logger.info("applied PostgreSQL server schema migration %03d", version)
    return max(current, SCHEMA_VERSION)


def _has_tables(connection: psycopg.Connection[dict[str, Any]]) -> bool:
    row = connection.execute(
        "SELECT count(*) AS tables FROM pg_catalog.pg_tables "
        "WHERE schemaname = current_schema()"
    ).fetchone()
    return bool(row and row["tables"])


def _insert_meta(connection: psycopg.Connection[dict[str, Any]]) -> None:
    node_id = new_node_id()
    values = {
        "epoch": secrets.token_hex(16),
        "node_id": node_id,
        "last_hlc": str(Timestamp(0, 0, node_id)),
        "secret": secrets.token_urlsafe(32),
    }
    inserted = connection.execute(
        "INSERT INTO meta (key, value) SELECT * FROM unnest(%s::text[], %s::text[]) "
        "ON CONFLICT (key) DO NOTHING RETURNING key",
        (list(values), list(values.values())),
    ).fetchall()
    if inserted:
        logger.info("created server database, epoch %s", values["epoch"])
