"""The sync test suites again, with the server on PostgreSQL.

The tests of ``test_sync``, ``test_sync_conflicts``, ``test_sync_faults`` and
``test_sync_rounds`` are collected here a second time, with a ``world`` fixture whose server stores its data
in a fresh PostgreSQL database. Tests that copy the server's SQLite file are left
out, since they exercise SQLite's backup, not the sync.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from _pytest.fixtures import FixtureFunctionDefinition

import tests.test_sync as sync_tests
import tests.test_sync_conflicts as conflict_tests
import tests.test_sync_faults as fault_tests
import tests.test_sync_rounds as round_tests
from localsync.server.auth import issue_token
from localsync.server.postgres_storage import PostgresStorage
from localsync.server.storage import NewTask
from tests.pg_fixtures import fresh_database
from tests.server_fixtures import seed_dataset, synthetic_records
from tests.sync_support import (
    DATASET,
    PROJECT,
    STATUSES,
    TASK,
    USER,
    ServerRunner,
    World,
    free_port,
)

# Tests that read or replace the server's SQLite file directly.
SQLITE_FILE_TESTS = {
    "test_new_epoch_refetches_and_loses_nothing",
    "test_new_epoch_refetch_learns_own_values",
}

# Items in the world of each suite, copied from that suite's own ``world`` fixture.
WORLD_ITEMS = {
    sync_tests.__name__: sync_tests.ITEMS,
    conflict_tests.__name__: 10,
    fault_tests.__name__: 100,
    round_tests.__name__: round_tests.ITEMS,
}

# The fixtures each suite defines besides ``world``, collected with its tests.
for _suite in (sync_tests, conflict_tests, fault_tests, round_tests):
    for _name, _value in vars(_suite).items():
        if _name == "world" or _name in SQLITE_FILE_TESTS:
            continue
        if _name.startswith("test_") and inspect.isfunction(_value):
            globals()[_name] = _value
        elif isinstance(_value, FixtureFunctionDefinition):
            globals()[_name] = _value


class PostgresRunner(ServerRunner):
    """A uvicorn server over a PostgreSQL database, on a port that survives restarts."""

    def __init__(self, url: str) -> None:
        self.db_url = url
        self.storage = PostgresStorage(url)  # type: ignore[assignment]
        self.port = free_port()
        self.app_options: dict[str, Any] = {}
        self._server = None
        self._thread = None

    def replace_database(self, db_path: Path) -> None:
        raise NotImplementedError("a PostgreSQL world cannot swap in a SQLite file")


class PostgresWorld(World):
    """A world whose server state is read from PostgreSQL."""

    def _connection(self) -> Any:
        storage: Any = self.runner.storage
        return storage.db.read()

    def server_statuses(self) -> dict[str, str | None]:
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT item_id, status FROM registers WHERE task_id = %s",
                (self.task["id"],),
            ).fetchall()
        return {row["item_id"]: row["status"] for row in rows}

    def server_count(self, sql: str, *params: Any) -> int:
        with self._connection() as connection:
            row = connection.execute(sql.replace("?", "%s"), params).fetchone()
        return int(next(iter(row.values())))


def make_postgres_world(tmp: Path, url: str, items: int) -> PostgresWorld:
    """Seed a PostgreSQL server as ``tests.sync_support.make_world`` seeds SQLite."""
    runner = PostgresRunner(url)
    storage = runner.storage
    project = storage.ensure_project(PROJECT, creator="admin@localsync")
    dataset = seed_dataset(
        storage, synthetic_records(items), dataset=DATASET, project=PROJECT
    )
    task = storage.create_task(
        NewTask(
            project_id=project["id"],
            dataset_id=dataset["id"],
            name=TASK,
            statuses=STATUSES,
            assignees=(USER,),
        )
    )
    token = issue_token(storage.meta().secret, email=USER, project_ids=[project["id"]])
    runner.start()
    page = storage.query_items(
        dataset["id"], {"filter": {"type": "file"}, "pageSize": 1000}
    )
    item_ids = sorted(item["id"] for item in page.items)
    return PostgresWorld(runner, tmp, project, dataset, task, token, item_ids)


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    items = WORLD_ITEMS[request.function.__module__]
    with ExitStack() as stack:
        url = stack.enter_context(fresh_database("localsync_sync"))
        built = make_postgres_world(tmp_path, url, items)
        stack.callback(built.runner.close)
        yield built
