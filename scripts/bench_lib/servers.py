"""Server databases of a given size, cached like the replicas, and running servers.

A server database contains the same synthesized items as the replica of that size, one
task with two assignees over all files, the same statuses, and the same expression
index on ``metadata.user.score``. ``ServerProcess`` runs
``localsync serve`` on it in a child process on a free 127.0.0.1 port, so the client
under test and the server do not share one interpreter.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from bench_lib.datasets import (
    ASSIGNEES,
    CREATOR,
    ITEMS_PER_BATCH,
    SEED,
    STATUSES,
    UNANNOTATED_SHARE,
    Source,
    check_build,
    file_item_ids,
    schema_digest,
    seeded_statuses,
)
from bench_lib.timing import timed
from localsync import dql
from localsync.exports import exported_items
from localsync.server.auth import issue_token
from localsync.server.sqlite_storage import SQLiteStorage
from localsync.server.storage import NewTask
from localsync.statuses import iso_timestamp
from localsync.synthetic import synthesize_records

logger = logging.getLogger(__name__)

SERVER_BUILD_VERSION = 1
PROJECT = "bench"
TASK = "labeling"
USER = "annotator1@example.com"
START_TIMEOUT_S = 60
# Keep every request on loopback even when the environment sets a proxy.
LOOPBACK_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


@dataclass
class ServerDataset:
    """A built server database and the ids the scenarios need."""

    path: str
    size: int
    project_id: str
    dataset_id: str
    dataset_name: str
    task_id: str
    build_seconds: float
    file_bytes: int
    version: int = SERVER_BUILD_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def server_cache_path(data_dir: Path, size: int, source: Source) -> Path:
    name = f"server-{source.kind}-{size}-v{SERVER_BUILD_VERSION}-{schema_digest()}.db"
    return data_dir / name


def cached_server(data_dir: Path, size: int, source: Source) -> ServerDataset | None:
    path = server_cache_path(data_dir, size, source)
    manifest = path.with_suffix(".json")
    if not path.is_file() or not manifest.is_file():
        return None
    facts = json.loads(manifest.read_text())
    if facts.get("version") != SERVER_BUILD_VERSION or facts.get("size") != size:
        return None
    return ServerDataset(**facts)


def build_server(data_dir: Path, size: int, source: Source) -> ServerDataset:
    """Import ``size`` synthesized items and a task into a new server database."""
    path = server_cache_path(data_dir, size, source)
    partial = path.with_name(path.name + ".partial")
    remove_database(partial)
    data_dir.mkdir(parents=True, exist_ok=True)

    seconds, facts = timed(lambda: _import(partial, size, source))
    remove_database(path)
    os.replace(partial, path)
    server = ServerDataset(
        path=str(path),
        size=size,
        build_seconds=round(seconds, 3),
        file_bytes=path.stat().st_size,
        **facts,
    )
    path.with_suffix(".json").write_text(json.dumps(server.to_json(), indent=2))
    return server


def _import(path: Path, size: int, source: Source) -> dict[str, Any]:
    storage = SQLiteStorage(path)
    try:
        project = storage.ensure_project(PROJECT, creator="admin@localsync")
        name = f"bench-{size}"
        dataset = storage.ensure_dataset(project["id"], name, creator="admin@localsync")
        records = synthesize_records(
            source.records,
            size,
            seed=SEED,
            items_per_batch=ITEMS_PER_BATCH,
            unannotated_share=UNANNOTATED_SHARE,
        )
        now = iso_timestamp()
        entries = exported_items(records, dataset_id=dataset["id"], now=now)
        storage.import_items(dataset["id"], entries, now=now)
        task = storage.create_task(
            NewTask(
                project_id=project["id"],
                dataset_id=dataset["id"],
                name=TASK,
                statuses=STATUSES,
                assignees=ASSIGNEES,
            )
        )
        _seed_statuses(storage, path, task["id"], size)
    finally:
        storage.close()
    _index_and_checkpoint(path)
    return {
        "project_id": project["id"],
        "dataset_id": dataset["id"],
        "dataset_name": name,
        "task_id": task["id"],
    }


def _seed_statuses(storage: SQLiteStorage, path: Path, task_id: str, size: int) -> None:
    conn = sqlite3.connect(path)
    try:
        check_build(conn, task_id, size, "server")
        item_ids = file_item_ids(conn)
    finally:
        conn.close()
    for status, ids in seeded_statuses(item_ids).items():
        storage.set_statuses(task_id, ids, status, user_email=CREATOR)


def _index_and_checkpoint(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        dql.create_path_index(conn, "metadata.user.score")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def server_copy(server: ServerDataset, directory: Path) -> Path:
    """Copy a cached server database for a scenario that writes to it."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"server-work-{server.size}.db"
    remove_database(target)
    shutil.copyfile(server.path, target)
    os.chmod(target, 0o600)
    return target


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def token_for(db_path: Path, project_id: str, email: str = USER) -> str:
    storage = SQLiteStorage(db_path)
    try:
        secret = storage.meta().secret
    finally:
        storage.close()
    return issue_token(secret, email=email, project_ids=[project_id], expires_in=86_400)


def localsync_command() -> list[str]:
    """Return the argv prefix that runs the ``localsync`` CLI of this interpreter."""
    script = Path(sys.executable).parent / "localsync"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from localsync.cli import main; main()"]


def child_env() -> dict[str, str]:
    return {**os.environ, **LOOPBACK_ENV}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        return int(listener.getsockname()[1])


class ServerProcess:
    """``localsync serve`` on a database, in a child process, as a context manager."""

    def __init__(self, db_path: Path, log_path: Path) -> None:
        self.db_path = db_path
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        argv = [
            *localsync_command(),
            "serve",
            "--db",
            str(self.db_path),
            "--port",
            str(self.port),
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=child_env()
        )
        log.close()
        self._wait_until_healthy()
        return self

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(trust_env=False) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"localsync serve exited with {self.process.returncode}; "
                        f"see {self.log_path}"
                    )
                try:
                    if client.get(f"{self.url}/api/v1/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(
            f"localsync serve did not respond on {self.url} within "
            f"{START_TIMEOUT_S} s; see {self.log_path}"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            logger.warning(
                "localsync serve (pid %d) ignored SIGTERM; killing it", self.process.pid
            )
            self.process.kill()
            self.process.wait()
