"""Crashes at each step of the sync protocol: the replica's ``localsync sync`` and the
server's ``localsync serve`` are killed with SIGKILL at a named step (through the
``LOCALSYNC_TEST_CRASH_AT`` hook) or at a random moment of a large push. After a
restart, one sync converges: every op applied exactly once, the server's count of
applied ops equal to the journal's, and both sides showing the same statuses.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from localsync.crash_points import CRASH_ENV, STEPS
from localsync.store import Replica
from tests.reliability_report import Tally
from tests.sync_support import (
    STATUSES,
    World,
    cli_env,
    free_port,
    journal_states,
    localsync_command,
    make_world,
    replica_statuses,
    run_cli,
    set_statuses,
    size,
)

ITEMS = 120
OPS = 300
BATCH = "50"
PAGE = "40"
SIGKILLED = -signal.SIGKILL
CLIENT_STEPS = [step for step in STEPS if not step.startswith("server-")]
RANDOM_SERVER_KILLS = size("SERVER_KILLS", 2, 10)

tally = Tally("crash")


@pytest.fixture(scope="module", autouse=True)
def write_report() -> Iterator[None]:
    yield
    tally.flush()


def write_ops(
    world: World, replica: Replica, count: int, item_ids: list[str] | None = None
) -> None:
    """Journal ``count`` ops over the items (default all), cycling the statuses."""
    item_ids = item_ids or world.item_ids
    written = 0
    while written < count:
        batch = item_ids[: min(len(item_ids), count - written)]
        status = STATUSES[(written // len(item_ids)) % len(STATUSES)]
        written += len(set_statuses(replica, world.task["id"], batch, status))


def assert_converged(db_path: Path, replica_path: Path, task_id: str) -> None:
    """Every op pushed once and applied or superseded once, and the views agree.

    An op can lose to an online write made just before it when the replica's
    measured clock offset is a few milliseconds off; it then has a conflict row.
    """
    with Replica(replica_path) as replica:
        ops = replica.conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
        states = journal_states(replica)
        assert set(states) <= {"applied", "superseded"}, states
        assert sum(states.values()) == ops
        conflicts = replica.conn.execute("SELECT COUNT(*) FROM conflicts").fetchone()
        assert conflicts[0] == states.get("superseded", 0)
        view = replica_statuses(replica, task_id)
        cursor = int(replica.setting("cursor") or 0)
    with sqlite3.connect(db_path) as server:
        pushed = server.execute("SELECT COUNT(*) FROM pushed_ops").fetchone()[0]
        history = server.execute(
            "SELECT op_id, COUNT(*) FROM register_history WHERE source = 'replica'"
            " GROUP BY op_id"
        ).fetchall()
        registers = dict(
            server.execute(
                "SELECT item_id, status FROM registers WHERE task_id = ?", (task_id,)
            ).fetchall()
        )
        last_change = server.execute("SELECT MAX(seq) FROM changes").fetchone()[0]
    assert pushed == ops
    assert len(history) == ops
    assert all(count == 1 for _, count in history)
    assert registers == {item: view[item] for item in registers}
    assert cursor == last_change


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = make_world(tmp_path, ITEMS)
    yield world
    world.runner.close()


@pytest.mark.parametrize("step", CLIENT_STEPS)
def test_sync_killed_at_step_resumes(world: World, step: str) -> None:
    replica = world.clone()
    # Online writes on the half of the items that the replica leaves alone give
    # the pull pages to apply: a pull leaves out the replica's own writes.
    world.rest_set_status(world.item_ids[ITEMS // 2 :], "discard")
    write_ops(world, replica, OPS, world.item_ids[: ITEMS // 2])
    path = replica.path
    replica.close()

    # The second time the step is reached: one batch or page is already done.
    killed = run_cli(
        "sync",
        "--store",
        str(path),
        "--batch-size",
        BATCH,
        "--page-size",
        PAGE,
        **{CRASH_ENV: f"{step}:2"},
    )

    assert killed.returncode == SIGKILLED, killed.stderr
    assert f"{CRASH_ENV}={step}:2" in killed.stderr
    with Replica(path) as check:
        states = journal_states(check)
        assert sum(states.values()) == OPS
        assert set(states) <= {"pending", "applied"}
    resumed = run_cli("sync", "--store", str(path), "--format", "json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["pending"] == 0
    assert_converged(world.runner.db_path, path, world.task["id"])
    tally.add(f"kill:{step}")
    tally.add("kills_survived")
    tally.add("ops_lost", 0)


def test_killed_clone_resumes(world: World, tmp_path: Path) -> None:
    path = tmp_path / "clone.db"
    base = (world.url, "--project", "sync-project", "--dataset", "sync-dataset")
    token = ("--token", world.token, "--store", str(path), "--page-size", "20")

    killed = run_cli("clone", *base, *token, **{CRASH_ENV: "pull-cursor-saved:3"})
    assert killed.returncode == SIGKILLED, killed.stderr
    with Replica(path) as partial:
        cursor = int(partial.setting("cursor") or 0)
        assert cursor > 0
    resumed = run_cli("clone", *base, *token)

    assert resumed.returncode == 0, resumed.stderr
    with Replica(path) as replica:
        assert set(replica_statuses(replica, world.task["id"])) == set(world.item_ids)
        assert int(replica.setting("cursor") or 0) > cursor
    tally.add("kill:clone")
    tally.add("kills_survived")


# The server process


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def serve(db_path: Path, port: int, log: Path, **env: str) -> ServerProcess:
    """Start ``localsync serve`` on ``port``; return once its health check passes."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            localsync_command("serve", "--db", str(db_path), "--port", str(port)),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=cli_env(**env),
        )
    server = ServerProcess(process, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"localsync serve exited: {log.read_text()}")
        try:
            response = httpx.get(f"{server.url}/api/v1/health", timeout=2)
            if response.status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"localsync serve did not start: {log.read_text()}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[World, Path]]:
    """A seeded server database served by ``localsync serve``, and a replica of it."""
    world = make_world(tmp_path, ITEMS)
    world.runner.stop()
    port = free_port()
    server = serve(world.runner.db_path, port, tmp_path / "server.log")
    replica = world.clone(url=server.url)
    server.stop()
    path = replica.path
    replica.close()
    world.runner.port = port
    yield world, path
    world.runner.close()


def sync_until_down(path: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "sync",
        "--store",
        str(path),
        "--batch-size",
        "1000",
        "--max-attempts",
        "2",
        "--max-wait",
        "0.1",
    )


@pytest.mark.parametrize("step", ["server-push-applying", "server-push-committed"])
def test_server_killed_mid_batch(
    served: tuple[World, Path], tmp_path: Path, step: str
) -> None:
    world, path = served
    with Replica(path) as replica:
        write_ops(world, replica, OPS)
    db_path, port = world.runner.db_path, world.runner.port
    server = serve(db_path, port, tmp_path / "server.log", **{CRASH_ENV: step})

    failed = sync_until_down(path)
    server.process.wait(timeout=30)

    assert server.process.returncode == SIGKILLED
    assert failed.returncode == 1
    assert "Error:" in failed.stderr
    with Replica(path) as replica:
        assert journal_states(replica) == {"pending": OPS}
    committed = OPS if step == "server-push-committed" else 0
    assert pushed_ops(db_path) == committed

    server = serve(db_path, port, tmp_path / "server.log")
    try:
        resumed = run_cli("sync", "--store", str(path))
    finally:
        server.stop()
    assert resumed.returncode == 0, resumed.stderr
    assert_converged(db_path, path, world.task["id"])
    tally.add(f"kill:{step}")
    tally.add("kills_survived")
    tally.add("ops_lost", 0)


def test_server_killed_at_random_moments(
    served: tuple[World, Path], tmp_path: Path
) -> None:
    world, path = served
    ops = size("SERVER_KILL_OPS", 3000, 20000)
    with Replica(path) as replica:
        write_ops(world, replica, ops)
    db_path, port = world.runner.db_path, world.runner.port
    chooser = random.Random(5)
    log = tmp_path / "server.log"

    kills = 0
    progress: list[int] = []
    for _ in range(RANDOM_SERVER_KILLS):
        server = serve(db_path, port, log)
        client = subprocess.Popen(
            localsync_command(
                "sync",
                *("--store", str(path), "--batch-size", "100"),
                *("--max-attempts", "2", "--max-wait", "0.1"),
            ),
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Kill the server once the push is under way, at a random point of it.
        # A batch of 100 ops takes tens of milliseconds, so 0.1 s at most keeps
        # every kill well before the last batch.
        wait_for_push(db_path, client)
        time.sleep(chooser.uniform(0, 0.1))
        kills += server.process.poll() is None
        server.kill()
        client.wait(timeout=120)
        progress.append(pushed_ops(db_path))
    server = serve(db_path, port, log)
    try:
        resumed = run_cli("sync", "--store", str(path))
    finally:
        server.stop()

    assert kills == RANDOM_SERVER_KILLS
    # The kills landed while the push was under way, not after it.
    assert all(0 < pushed < ops for pushed in progress), progress
    assert resumed.returncode == 0, resumed.stderr
    assert_converged(db_path, path, world.task["id"])
    tally.add("kill:server-random", kills)
    tally.add("kills_survived", kills)
    tally.add("ops_lost", 0)


def pushed_ops(db_path: Path) -> int:
    with sqlite3.connect(db_path) as server:
        return int(server.execute("SELECT COUNT(*) FROM pushed_ops").fetchone()[0])


def wait_for_push(db_path: Path, client: subprocess.Popen[bytes]) -> None:
    """Wait until the server stores more pushed ops than before, or the client ends."""
    start = pushed_ops(db_path)
    deadline = time.monotonic() + 60
    while client.poll() is None and time.monotonic() < deadline:
        if pushed_ops(db_path) > start:
            return
        time.sleep(0.01)
