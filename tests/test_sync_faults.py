"""Faults between replica and server: lost responses, resets, 5xx and 429 with and
without Retry-After, stalls, duplicated requests, and a sync killed at random points.
Every case must end with each op applied exactly once."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localsync.store import Replica
from localsync.sync import SyncEngine, open_remote
from localsync.sync.remote import RemoteRejected
from localsync.sync.retry import RemoteUnavailable, RetryableError, RetryPolicy
from tests.proxy import Fault, FaultKind, FaultProxy, RandomFaults
from tests.sync_support import (
    World,
    cli_env,
    fast_retry,
    journal_states,
    localsync_command,
    make_world,
    replica_statuses,
    run_cli,
    set_statuses,
    size,
)

PUSH = "/api/v1/sync/push"
PULL = "/api/v1/sync/pull"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = make_world(tmp_path, 100)
    yield world
    world.runner.close()


@pytest.fixture
def proxy(world: World) -> Iterator[FaultProxy]:
    proxy = FaultProxy(world.runner.port).start()
    yield proxy
    proxy.stop()


def sync(replica: Replica, policy: RetryPolicy | None = None, **options: int):
    with open_remote(replica, retry=policy or fast_retry(), timeout=5) as remote:
        return SyncEngine(replica, remote, **options).sync()


def assert_applied_once(world: World, replica: Replica, ops: int) -> None:
    """Check that every op was applied once on both sides and the views agree."""
    assert journal_states(replica) == {"applied": ops}
    assert world.server_count("SELECT COUNT(*) FROM pushed_ops") == ops
    assert (
        world.server_count(
            "SELECT COUNT(*) FROM register_history WHERE source = 'replica'"
        )
        == ops
    )
    view = replica_statuses(replica, world.task["id"])
    server = world.server_statuses()
    assert server == {item: view[item] for item in server}


def write_ops(world: World, replica: Replica, count: int) -> None:
    statuses = ("completed", "discard", "approved")
    written = 0
    while written < count:
        batch = world.item_ids[: min(len(world.item_ids), count - written)]
        status = statuses[(written // len(world.item_ids)) % 3]
        written += len(set_statuses(replica, world.task["id"], batch, status))


def test_lost_push_response_applies_nothing_twice(
    world: World, proxy: FaultProxy
) -> None:
    replica = world.clone(url=proxy.url)
    write_ops(world, replica, 300)
    proxy.add(Fault.cut_after_response_start(), path=PUSH)

    report = sync(replica, batch_size=100)

    assert proxy.count(FaultKind.CUT_AFTER_RESPONSE_START) == 1
    assert report.push.applied == 300
    assert_applied_once(world, replica, 300)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.reset_before_forward(),
        Fault.truncate(keep_bytes=40),
        Fault.answer(503),
        Fault.answer(502, retry_after="0"),
        Fault.answer(429),
        Fault.duplicate(),
        Fault.delay(0.3),
    ],
    ids=lambda fault: f"{fault.kind.value}-{fault.status}",
)
def test_push_fault_is_retried(world: World, proxy: FaultProxy, fault: Fault) -> None:
    replica = world.clone(url=proxy.url)
    write_ops(world, replica, 120)
    proxy.add(fault, path=PUSH, times=2)

    sync(replica, batch_size=50)

    assert proxy.count(fault.kind) == 2
    assert_applied_once(world, replica, 120)


def test_connection_reset_on_accept_is_retried(world: World, proxy: FaultProxy) -> None:
    replica = world.clone(url=proxy.url)
    write_ops(world, replica, 10)
    # Each rule hits one new connection; the client connects again after each.
    proxy.add(Fault.reset_on_accept(), times=2)
    proxy.add(Fault.close_on_accept(), times=1)

    sync(replica)

    assert proxy.count(FaultKind.RESET_ON_ACCEPT) == 2
    assert proxy.count(FaultKind.CLOSE_ON_ACCEPT) == 1
    assert_applied_once(world, replica, 10)


def test_stalled_request_times_out_and_retries(world: World, proxy: FaultProxy) -> None:
    replica = world.clone(url=proxy.url)
    write_ops(world, replica, 10)
    proxy.add(Fault.stall(), path=PUSH)

    with open_remote(replica, retry=fast_retry(), timeout=0.5) as remote:
        SyncEngine(replica, remote).sync()

    assert proxy.count(FaultKind.STALL) == 1
    assert_applied_once(world, replica, 10)


def test_retry_after_is_honored(world: World, proxy: FaultProxy) -> None:
    replica = world.clone(url=proxy.url)
    proxy.add(Fault.answer(503, retry_after="1"), path=PULL)

    started = time.monotonic()
    sync(replica, RetryPolicy(max_attempts=3, base_wait=0.01, max_wait=5))
    assert time.monotonic() - started >= 1.0


def test_retry_after_is_capped_by_max_wait(world: World, proxy: FaultProxy) -> None:
    replica = world.clone(url=proxy.url)
    proxy.add(Fault.answer(503, retry_after="30"), path=PULL)

    started = time.monotonic()
    sync(replica, RetryPolicy(max_attempts=3, base_wait=0.01, max_wait=0.1))
    assert time.monotonic() - started < 10
    assert proxy.count(FaultKind.STATUS) == 1


def test_client_error_is_not_retried(world: World, proxy: FaultProxy) -> None:
    replica = world.clone(url=proxy.url)
    write_ops(world, replica, 5)
    proxy.add(Fault.answer(400), path=PUSH, times=None)

    with pytest.raises(RemoteRejected, match="returned 400"):
        sync(replica)

    assert proxy.count(FaultKind.STATUS) == 1
    assert journal_states(replica) == {"pending": 5}


def test_remote_down_gives_up_after_max_attempts(
    world: World, proxy: FaultProxy
) -> None:
    replica = world.clone(url=proxy.url)
    write_ops(world, replica, 5)
    proxy.pause()

    with pytest.raises(RemoteUnavailable, match="after 3 attempts"):
        sync(replica, fast_retry(max_attempts=3))
    assert journal_states(replica) == {"pending": 5}

    proxy.resume()
    sync(replica)
    assert_applied_once(world, replica, 5)


def test_random_faults_converge(world: World, proxy: FaultProxy) -> None:
    replica = world.clone(url=proxy.url)
    ops = size("RANDOM_FAULT_OPS", 400, 5000)
    write_ops(world, replica, ops)
    proxy.chooser = RandomFaults(rate=0.4, seed=7)

    sync(replica, fast_retry(max_attempts=30), batch_size=25, page_limit=100)

    assert len(proxy.events) > 0
    assert_applied_once(world, replica, ops)


def test_backoff_waits_are_capped_with_full_jitter() -> None:
    highest = RetryPolicy(base_wait=0.5, max_wait=30, random=lambda low, high: high)
    lowest = RetryPolicy(base_wait=0.5, max_wait=30, random=lambda low, high: low)

    assert [highest.wait_before(n, None) for n in (1, 2, 3, 7, 8)] == [
        0.5,
        1.0,
        2.0,
        30,
        30,
    ]
    assert lowest.wait_before(5, None) == 0.0
    assert highest.wait_before(1, 12.0) == 12.0
    assert highest.wait_before(1, 90.0) == 30


def test_retry_policy_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="must not be negative"):
        RetryPolicy(max_wait=-1)


def test_retry_policy_stops_after_max_attempts() -> None:
    calls = []

    def failing() -> None:
        calls.append(1)
        raise RetryableError("boom", retry_after=0)

    with pytest.raises(RemoteUnavailable, match="failed after 4 attempts: boom"):
        RetryPolicy(max_attempts=4).call(failing, description="test call")
    assert len(calls) == 4


def test_killed_sync_resumes_without_loss(world: World, tmp_path: Path) -> None:
    ops = size("KILL_OPS", 5000, 20000)
    kills_wanted = size("KILLS", 5, 20)
    replica = world.clone()
    write_ops(world, replica, ops)
    path = replica.path
    replica.close()

    chooser = random.Random(11)
    kills = attempts = 0
    progress: list[int] = []
    while kills < kills_wanted and attempts < kills_wanted * 3:
        attempts += 1
        process = subprocess.Popen(
            localsync_command("sync", "--store", str(path), "--batch-size", "250"),
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if attempts % 2 == 0:
            # Anywhere: while starting, pushing, pulling or writing a batch.
            time.sleep(chooser.uniform(0.2, 3.0))
        else:
            # In the middle of the push, a random moment after a batch was marked.
            # This comes first and aims at the first half: a push of all the ops
            # takes about a second, so a later or random kill may find it done.
            wait_for_applied(path, process, chooser.randint(1, ops // 2))
            time.sleep(chooser.uniform(0, 0.05))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(30)
        with Replica(path) as check:
            progress.append(journal_states(check).get("applied", 0))

    assert kills == kills_wanted
    # Some kills must land in the middle of the push, between two batches or in one.
    assert any(0 < applied < ops for applied in progress), progress
    result = run_cli("sync", "--store", str(path))
    assert result.returncode == 0, result.stderr
    with Replica(path) as after:
        assert_applied_once(world, after, ops)


def wait_for_applied(path: Path, process: subprocess.Popen[bytes], target: int) -> None:
    """Wait until the replica has ``target`` applied ops or the process has ended."""
    deadline = time.monotonic() + 60
    with Replica(path) as replica:
        while process.poll() is None and time.monotonic() < deadline:
            if journal_states(replica).get("applied", 0) >= target:
                return
            time.sleep(0.02)
