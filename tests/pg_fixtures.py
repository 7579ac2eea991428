"""Pytest fixtures for tests that need a PostgreSQL database.

``LOCALSYNC_TEST_PG_URL`` names a server where the tests may create databases
(``scripts/test`` and ``.ci/run`` start a private cluster and set it). Without it,
every test that uses these fixtures is skipped with that reason. Each test module
gets its own fresh database, dropped again at the end.

Import the fixtures by name into a test module, or use the module as a plugin
(``pytest_plugins = ["tests.pg_fixtures"]``) without importing from it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_URL_VARIABLE = "LOCALSYNC_TEST_PG_URL"
SKIP_REASON = (
    f"{PG_URL_VARIABLE} is not set; run scripts/test, or start a server with "
    "scripts/pg-cluster and export its URL"
)
FIXTURE_PROJECT = "fixture-project"

# Tables whose rows a request may change; a fingerprint covers all of them.
FINGERPRINT_TABLES = ("items", "registers", "register_history", "changes", "pushed_ops")


def server_url() -> str:
    """Return the test server's URL, or skip the calling test when it is unset."""
    url = os.environ.get(PG_URL_VARIABLE)
    if not url:
        pytest.skip(SKIP_REASON)
    return url


def database_url(server: str, name: str) -> str:
    """Return the URL ``server`` with its database name replaced by ``name``."""
    parts = urlsplit(server)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"{PG_URL_VARIABLE} must be a postgresql:// URL, got {parts.scheme!r}"
        )
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextmanager
def fresh_database(prefix: str = "localsync_test") -> Iterator[str]:
    """Create an empty database on the test server; yield its URL, then drop it."""
    import psycopg

    server = server_url()
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pg_database_url() -> Iterator[str]:
    """The URL of an empty PostgreSQL database, one per test module."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def pg_storage(pg_database_url: str) -> Iterator[Any]:
    """A PostgreSQL server storage with the project ``fixture-project`` in it."""
    from localsync.server.postgres_storage import PostgresStorage

    storage = PostgresStorage(pg_database_url)
    storage.ensure_project(FIXTURE_PROJECT, creator="admin@localsync")
    yield storage
    storage.close()


def postgres_fingerprint(storage: Any) -> tuple[Any, ...]:
    """Return a value that changes when any item, register, history or feed row does.

    It has the shape of the SQLite fingerprint in ``tests/server_fixtures.py``:
    the highest change seq and a digest of the rows.
    """
    digest = hashlib.sha256()
    with storage.db.read() as connection:
        for table in FINGERPRINT_TABLES:
            rows = connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
            for row in rows:
                digest.update(repr(tuple(row.values())).encode())
        found = connection.execute("SELECT max(seq) AS seq FROM changes").fetchone()
    return found["seq"], digest.hexdigest()
