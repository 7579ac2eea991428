"""``localsync sync --watch``: a status set by another process reaches the server
soon, the watcher's own writes do not wake it again, an outage is waited out, and
SIGTERM or SIGINT stop it cleanly."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localsync.store import Replica
from tests.proxy import FaultProxy
from tests.sync_support import (
    World,
    cli_env,
    localsync_command,
    make_world,
    set_statuses,
    size,
)

# How long a status set by another process may take to reach the server.
PUSH_DEADLINE = 30.0
OUTAGE_SECONDS = size("OUTAGE_SECONDS", 3, 60)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = make_world(tmp_path, 20)
    yield world
    world.runner.close()


@pytest.fixture
def proxy(world: World) -> Iterator[FaultProxy]:
    proxy = FaultProxy(world.runner.port).start()
    yield proxy
    proxy.stop()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for ``condition``; return the seconds it took, or fail naming ``what``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


class Watcher:
    """A ``localsync -v sync --watch`` subprocess with its log in a file."""

    def __init__(self, store: Path, log: Path, *extra: str) -> None:
        self.log = log
        self.handle = log.open("w")
        self.process = subprocess.Popen(
            localsync_command("-v", "sync", "--watch", "--store", str(store), *extra),
            env=cli_env(),
            stdout=self.handle,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        wait_until(
            lambda: text in self.output() or self.process.poll() is not None,
            timeout,
            f"log line {text!r}",
        )
        assert self.process.poll() is None, self.output()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(30)
        finally:
            self.handle.close()


@pytest.fixture
def watcher(world: World, proxy: FaultProxy, tmp_path: Path) -> Iterator[Watcher]:
    replica = world.clone(url=proxy.url)
    replica.close()
    watcher = Watcher(
        replica.path, tmp_path / "watch.log", "--interval", "300", "--max-wait", "0.5"
    )
    watcher.wait_for_log("sync round 2 (pull)")
    yield watcher
    watcher.stop(signal.SIGKILL)


def server_has(world: World, item_id: str, status: str) -> Callable[[], bool]:
    return lambda: world.server_statuses().get(item_id) == status


def test_status_from_other_process_reaches_server(
    world: World, watcher: Watcher, proxy: FaultProxy, tmp_path: Path
) -> None:
    latencies = []
    with Replica(tmp_path / "replica.db") as replica:
        for number, status in enumerate(("completed", "discard", "approved")):
            item_id = world.item_ids[number]
            set_statuses(replica, world.task["id"], [item_id], status)
            latencies.append(
                wait_until(
                    server_has(world, item_id, status),
                    PUSH_DEADLINE,
                    f"push of {status}",
                )
            )
    print(f"watch push latencies (s): {[round(t, 3) for t in latencies]}")

    # The watcher's own writes (marking the ops) must not wake it into more pushes.
    requests = len(proxy.requests)
    time.sleep(3)
    assert len(proxy.requests) == requests
    # One push per write, plus the startup round; under load a write that lands
    # while the previous push is still being recorded rides along with it.
    pushes = watcher.output().count("(push)")
    assert pushes <= 3 + 1, watcher.output()
    assert pushes >= 2 + 1, watcher.output()


def test_burst_of_writes_is_pushed_together(
    world: World, watcher: Watcher, tmp_path: Path
) -> None:
    with Replica(tmp_path / "replica.db") as replica:
        for item_id in world.item_ids[:10]:
            set_statuses(replica, world.task["id"], [item_id], "completed")
    wait_until(
        lambda: len([s for s in world.server_statuses().values() if s]) == 10,
        PUSH_DEADLINE,
        "push of 10 ops",
    )

    wait_until(lambda: watcher.output().count("(push)") > 1, 10, "push log line")
    time.sleep(1)
    pushes = watcher.output().count("(push)") - 1
    assert 1 <= pushes <= 3, watcher.output()


def test_outage_is_waited_out(world: World, watcher: Watcher, tmp_path: Path) -> None:
    world.runner.stop()
    item_id = world.item_ids[4]
    with Replica(tmp_path / "replica.db") as replica:
        set_statuses(replica, world.task["id"], [item_id], "discard")
    watcher.wait_for_log("retrying in")
    time.sleep(OUTAGE_SECONDS)
    world.runner.start()

    took = wait_until(
        server_has(world, item_id, "discard"), PUSH_DEADLINE, "push after the outage"
    )
    print(f"push {took:.2f} s after a {OUTAGE_SECONDS} s outage ended")
    assert watcher.process.poll() is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_watch_cleanly(watcher: Watcher, signum: int) -> None:
    code = watcher.stop(signum)

    assert code == 0, watcher.output()
    assert "stopping after the current request" in watcher.output()
    assert "watch stopped: " in watcher.output()
