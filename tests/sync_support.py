"""Helpers for the sync tests: a server that can stop and start on one port, a seeded
dataset with a task, replicas cloned from it, and the state of both sides.

Sizes come from environment variables so ``scripts/soak`` can run the same tests
large: ``LOCALSYNC_SOAK=1`` switches every size to its soak value.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from localsync.hlc import Timestamp
from localsync.server.app import create_app
from localsync.server.auth import issue_token
from localsync.server.sqlite_storage import SQLiteStorage
from localsync.server.storage import NewTask
from localsync.store import Replica
from localsync.sync import RetryPolicy, clone
from tests.server_fixtures import LOOPBACK_ENV, seed_dataset, synthetic_records

REPO = Path(__file__).resolve().parent.parent
PROJECT = "sync-project"
DATASET = "sync-dataset"
TASK = "labeling"
USER = "annotator@example.com"
STATUSES = ("completed", "discard", "approved")
SOAK = os.environ.get("LOCALSYNC_SOAK") == "1"


def size(name: str, ci: int, soak: int) -> int:
    """Return the size ``LOCALSYNC_<NAME>`` if set, else the CI or soak default."""
    value = os.environ.get(f"LOCALSYNC_{name}")
    if value:
        return int(value)
    return soak if SOAK else ci


def fast_retry(**overrides: Any) -> RetryPolicy:
    """A retry policy with short waits, for tests."""
    options: dict[str, Any] = {"max_attempts": 6, "base_wait": 0.02, "max_wait": 0.2}
    options.update(overrides)
    return RetryPolicy(**options)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerRunner:
    """A uvicorn server for one SQLite database, on a port that survives restarts."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.storage = SQLiteStorage(db_path)
        self.port = free_port()
        # App options for the next start(), such as max_body_mb.
        self.app_options: dict[str, Any] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(
            create_app(
                self.storage, secret=self.storage.meta().secret, **self.app_options
            ),
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [listener]},
            daemon=True,
            name="sync-test-server",
        )
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("sync test server did not start within 20 s")
            time.sleep(0.01)
        self._server, self._thread = server, thread

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def replace_database(self, db_path: Path) -> None:
        """Serve another database file, with its own epoch, on the same port."""
        was_running = self.running
        self.stop()
        self.storage.close()
        self.db_path = db_path
        self.storage = SQLiteStorage(db_path)
        if was_running:
            self.start()

    def close(self) -> None:
        self.stop()
        self.storage.close()


@dataclass
class World:
    """A running server with one seeded dataset and one task over all its files."""

    runner: ServerRunner
    tmp: Path
    project: dict[str, Any]
    dataset: dict[str, Any]
    task: dict[str, Any]
    token: str
    item_ids: list[str] = field(default_factory=list)

    @property
    def storage(self) -> SQLiteStorage:
        return self.runner.storage

    @property
    def url(self) -> str:
        return self.runner.url

    def clone(self, name: str = "replica.db", *, url: str | None = None) -> Replica:
        path = self.tmp / name
        clone(
            path,
            url or self.url,
            token=self.token,
            project=PROJECT,
            dataset=DATASET,
            retry=fast_retry(),
        )
        return Replica(path)

    def server_statuses(self) -> dict[str, str | None]:
        """Return each register's status on the server, by item id."""
        with sqlite3.connect(self.runner.db_path) as conn:
            rows = conn.execute(
                "SELECT item_id, status FROM registers WHERE task_id = ?",
                (self.task["id"],),
            ).fetchall()
        return dict(rows)

    def server_count(self, sql: str, *params: Any) -> int:
        with sqlite3.connect(self.runner.db_path) as conn:
            return int(conn.execute(sql, params).fetchone()[0])

    def rest_set_status(
        self, item_ids: list[str], status: str | None, user: str = "online@example.com"
    ) -> None:
        """Write statuses as an online REST user does, stamped by the server's HLC."""
        self.storage.set_statuses(self.task["id"], item_ids, status, user_email=user)


def make_world(tmp: Path, items: int, *, name: str = "server.db") -> World:
    runner = ServerRunner(tmp / name)
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
    item_ids = sorted(
        row[0]
        for row in sqlite3.connect(runner.db_path).execute(
            "SELECT id FROM items WHERE dataset_id = ? AND json_extract(json, '$.type')"
            " = 'file'",
            (dataset["id"],),
        )
    )
    return World(runner, tmp, project, dataset, task, token, item_ids)


def replica_statuses(replica: Replica, task_id: str) -> dict[str, str | None]:
    """Return each item's status in the task as the replica's local view shows it."""
    statuses: dict[str, str | None] = {}
    for (raw,) in replica.conn.execute("SELECT json FROM items"):
        item = json.loads(raw)
        for ref in item["metadata"]["system"].get("refs") or []:
            if ref.get("id") == task_id and ref.get("type") == "task":
                statuses[item["id"]] = (ref.get("metadata") or {}).get("status")
    return statuses


def journal_states(replica: Replica) -> dict[str, int]:
    rows = replica.conn.execute("SELECT state, COUNT(*) FROM journal GROUP BY state")
    return dict(rows.fetchall())


def set_statuses(
    replica: Replica, task_id: str, item_ids: list[str], status: str | None
) -> list[str]:
    result = replica.set_status(item_ids, task_id=task_id, status=status, creator=USER)
    return result.op_ids


def wait_past_clock(replica: Replica) -> None:
    """Sleep until the wall clock is past the replica's last HLC.

    A replica's clock never runs backwards, so a negative ``clock_offset_ms`` set
    right after a clone still stamps ops at the clone's millisecond. A server write
    made in that same millisecond would lose the tie; waiting makes it newer.
    """
    last = replica.setting("last_hlc")
    if last is None:
        return
    wall_ms = Timestamp.parse(last).wall_ms
    while time.time_ns() // 1_000_000 <= wall_ms:
        time.sleep(0.002)


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **LOOPBACK_ENV, "PYTHONPATH": str(REPO)}
    env.pop("LOCALSYNC_STORE", None)
    env.pop("LOCALSYNC_TOKEN", None)
    env.update(extra)
    return env


def localsync_command(*args: str) -> list[str]:
    """Return the command line running the installed ``localsync`` entry point."""
    script = Path(sys.executable).parent / "localsync"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from localsync.cli import main; main()", *args]


def run_cli(
    *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``localsync ARGS`` in a subprocess and return its result."""
    return subprocess.run(
        localsync_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(**env),
        cwd=REPO,
        check=False,
    )
