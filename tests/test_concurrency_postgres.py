"""Several server processes on one PostgreSQL database, many replicas at once.

Four ``localsync serve`` processes share one database. Eight replicas (two per
server) journal statuses on an overlapping set of registers and sync all the time,
while an observer per server pulls the change feed. At the end every replica, the
server and the observers must agree with a plain last-write-wins oracle computed
from every op, and every op must have been applied exactly once.

``LOCALSYNC_CONCURRENCY_OPS`` sets the ops per replica (500; ``LOCALSYNC_SOAK=1``
makes it 5,000).
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from localsync.server.auth import issue_token
from localsync.server.postgres_storage import PostgresStorage
from localsync.server.storage import NewTask
from localsync.store import Replica
from localsync.sync import SyncEngine, clone, open_remote
from tests.pg_fixtures import fresh_database
from tests.server_fixtures import seed_dataset, synthetic_records
from tests.sync_support import (
    DATASET,
    PROJECT,
    STATUSES,
    TASK,
    USER,
    cli_env,
    fast_retry,
    free_port,
    journal_states,
    localsync_command,
    replica_statuses,
    size,
)

SERVERS = 4
REPLICAS = 8
OBSERVERS_LIMIT = 50
OPS = size("CONCURRENCY_OPS", 500, 5000)
# Items in the task; every replica writes all of them, so registers overlap.
ITEMS = 8


@dataclass
class ServerProcess:
    """One ``localsync serve`` process and the file its output goes to."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


def start_server(db_url: str, log: Path, *extra: str) -> ServerProcess:
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            localsync_command("serve", "--db", db_url, "--port", str(port), *extra),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
    server = ServerProcess(process, port, log)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"localsync serve exited: {log.read_text()}")
        try:
            if httpx.get(f"{server.url}/api/v1/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"localsync serve did not start: {log.read_text()}")
        time.sleep(0.1)


@dataclass
class Cluster:
    """A seeded database and the server processes on it."""

    url: str
    storage: PostgresStorage
    servers: list[ServerProcess]
    dataset: dict[str, Any]
    task: dict[str, Any]
    token: str
    item_ids: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("cluster")
    with fresh_database("localsync_concurrency") as url:
        storage = PostgresStorage(url)
        project = storage.ensure_project(PROJECT, creator="admin@localsync")
        dataset = seed_dataset(
            storage, synthetic_records(ITEMS), dataset=DATASET, project=PROJECT
        )
        task = storage.create_task(
            NewTask(
                project_id=project["id"],
                dataset_id=dataset["id"],
                name=TASK,
                statuses=STATUSES,
            )
        )
        token = issue_token(
            storage.meta().secret, email=USER, project_ids=[project["id"]]
        )
        item_ids = [record["_id"] for record in synthetic_records(ITEMS)]
        servers: list[ServerProcess] = []
        try:
            for index in range(SERVERS):
                servers.append(start_server(url, folder / f"server-{index}.log"))
            yield Cluster(url, storage, servers, dataset, task, token, item_ids)
        finally:
            for server in servers:
                server.stop()
            storage.close()


def sync(replica: Replica) -> None:
    with open_remote(replica, retry=fast_retry(max_attempts=10), timeout=60) as remote:
        SyncEngine(replica, remote).sync()


def write_and_sync(path: Path, task_id: str, item_ids: list[str], seed: int) -> None:
    """Journal ``OPS`` ops on random items of the task, syncing after some calls."""
    chooser = random.Random(seed)
    with Replica(path) as replica:
        written = 0
        while written < OPS:
            items = chooser.sample(item_ids, min(chooser.randint(1, 3), OPS - written))
            status = chooser.choice([*STATUSES, None])
            replica.set_status(items, task_id=task_id, status=status, creator=USER)
            written += len(items)
            if chooser.random() < 0.25:
                sync(replica)
        sync(replica)


class Observer:
    """Pulls one server's change feed page by page and keeps each register's HLC."""

    def __init__(self, server: ServerProcess, cluster: Cluster) -> None:
        self.url = f"{server.url}/api/v1/sync/pull"
        self.headers = {"Authorization": f"Bearer {cluster.token}"}
        self.dataset_id = cluster.dataset["id"]
        self.cursor = 0
        self.hlcs: dict[str, str | None] = {}
        self.problems: list[str] = []

    def pull_page(self, client: httpx.Client) -> bool:
        """Pull one page; return whether more changes remain."""
        response = client.get(
            self.url,
            params={
                "dataset": self.dataset_id,
                "cursor": self.cursor,
                "limit": OBSERVERS_LIMIT,
            },
            headers=self.headers,
        )
        response.raise_for_status()
        page = response.json()
        seqs = [change["seq"] for change in page["changes"]]
        if seqs != sorted(set(seqs)) or (seqs and seqs[0] <= self.cursor):
            self.problems.append(f"seqs {seqs} after cursor {self.cursor}")
        if page["cursor"] < self.cursor:
            self.problems.append(f"cursor went back to {page['cursor']}")
        for change in page["changes"]:
            if change["kind"] == "register":
                data = change["data"]
                self.hlcs[change["id"]] = data["hlc"] if data else None
        self.cursor = page["cursor"]
        return bool(page["hasMore"])

    def run(self, stop: threading.Event) -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                if not self.pull_page(client):
                    time.sleep(0.05)
            while self.pull_page(client):
                pass


def server_history(storage: PostgresStorage, task_id: str) -> list[dict[str, Any]]:
    with storage.db.read() as connection:
        return connection.execute(
            "SELECT op_id, item_id, status, hlc, outcome FROM register_history "
            "WHERE task_id = %s AND source = 'replica' ORDER BY id",
            (task_id,),
        ).fetchall()


def server_registers(storage: PostgresStorage, task_id: str) -> dict[str, Any]:
    with storage.db.read() as connection:
        rows = connection.execute(
            "SELECT item_id, status, hlc FROM registers WHERE task_id = %s",
            (task_id,),
        ).fetchall()
    return {row["item_id"]: row for row in rows}


def test_replicas_and_servers_converge(cluster: Cluster, tmp_path: Path) -> None:
    task_id = cluster.task["id"]
    paths = []
    for index in range(REPLICAS):
        path = tmp_path / f"replica-{index}.db"
        server = cluster.servers[index % SERVERS]
        clone(
            path,
            server.url,
            token=cluster.token,
            project=PROJECT,
            dataset=DATASET,
            retry=fast_retry(),
        )
        paths.append(path)

    observers = [Observer(server, cluster) for server in cluster.servers]
    stop = threading.Event()
    observer_threads = [
        threading.Thread(target=observer.run, args=(stop,)) for observer in observers
    ]
    failures: list[BaseException] = []

    def write(index: int) -> None:
        try:
            write_and_sync(paths[index], task_id, cluster.item_ids, seed=index)
        except BaseException as exc:  # reported by the assert below
            failures.append(exc)

    writers = [threading.Thread(target=write, args=(i,)) for i in range(REPLICAS)]
    for thread in [*observer_threads, *writers]:
        thread.start()
    for thread in writers:
        thread.join(timeout=600)
    stop.set()
    for thread in observer_threads:
        thread.join(timeout=120)
    assert failures == []

    # Every replica pushed its last ops; one more pull brings in the others'.
    replicas = [Replica(path) for path in paths]
    try:
        for replica in replicas:
            sync(replica)
        check_convergence(cluster, replicas, observers)
    finally:
        for replica in replicas:
            replica.close()


def check_convergence(
    cluster: Cluster, replicas: list[Replica], observers: list[Observer]
) -> None:
    task_id = cluster.task["id"]
    journaled = {row["op_id"]: row for replica in replicas for row in replica.journal()}
    history = server_history(cluster.storage, task_id)

    # Exactly once: each journaled op has one history row, and nothing else does.
    recorded = [row["op_id"] for row in history]
    assert len(journaled) == REPLICAS * OPS
    assert len(recorded) == len(set(recorded))
    assert set(recorded) == set(journaled)
    assert all(row["outcome"] in ("applied", "superseded") for row in history)

    # Writes of one register take turns under its item's row lock, so history
    # order is commit order. A write must be applied exactly when its HLC beats
    # every earlier write of the register.
    highest: dict[str, str] = {}
    wrong = []
    for row in history:
        beats = row["hlc"] > highest.get(row["item_id"], "")
        if beats != (row["outcome"] == "applied"):
            wrong.append(row)
        if beats:
            highest[row["item_id"]] = row["hlc"]
    assert wrong == []

    # The oracle: per register, the op with the highest HLC the server recorded.
    newest: dict[str, dict[str, Any]] = {}
    for row in history:
        current = newest.get(row["item_id"])
        if current is None or row["hlc"] > current["hlc"]:
            newest[row["item_id"]] = row
    oracle = {item_id: newest[item_id]["status"] for item_id in newest}
    assert set(oracle) == set(cluster.item_ids)

    registers = server_registers(cluster.storage, task_id)
    assert {item: row["status"] for item, row in registers.items()} == oracle
    assert {item: row["hlc"] for item, row in registers.items()} == {
        item: row["hlc"] for item, row in newest.items()
    }

    for replica in replicas:
        assert journal_states(replica).get("pending", 0) == 0
        view = replica_statuses(replica, task_id)
        assert {item: view.get(item) for item in oracle} == oracle, replica.path

    expected_hlcs = {f"{item}:{task_id}": row["hlc"] for item, row in newest.items()}
    for observer in observers:
        assert observer.problems == []
        assert observer.hlcs == expected_hlcs, observer.url


def test_serve_with_workers_shares_database(cluster: Cluster, tmp_path: Path) -> None:
    """``serve --workers 2`` runs two processes that serve one port."""
    log = tmp_path / "workers.log"
    server = start_server(cluster.url, log, "--workers", "2")
    headers = {"Authorization": f"Bearer {cluster.token}"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            for _ in range(40):
                response = client.get(
                    "/api/v1/sync/pull",
                    params={"dataset": cluster.dataset["id"], "cursor": 0, "limit": 1},
                )
                assert response.status_code == 200
        deadline = time.monotonic() + 30
        while log.read_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        server.stop()
    assert log.read_text().count("Started server process") == 2
