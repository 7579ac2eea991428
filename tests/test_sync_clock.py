"""Replicas on machines whose clocks are wrong, run under libfaketime.

Every replica command runs as a subprocess under ``faketime``, so the whole replica
process (journal and sync) runs on the skewed clock while the server keeps the real
one. Once a replica has synced, its measured offset corrects its later ops.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from localsync.store import Replica
from tests.sync_support import (
    DATASET,
    PROJECT,
    TASK,
    World,
    cli_env,
    localsync_command,
    make_world,
    replica_statuses,
)

FAKETIME = shutil.which("faketime")
pytestmark = pytest.mark.skipif(
    FAKETIME is None, reason="faketime not found; install Debian's faketime package"
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = make_world(tmp_path, 10)
    yield world
    world.runner.close()


def skewed(skew: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``localsync ARGS`` with the clock moved by ``skew`` (such as ``+1h``)."""
    assert FAKETIME is not None
    command = [FAKETIME, "-f", skew, *localsync_command(*args)]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=cli_env(), check=False
    )
    assert result.returncode in (0, 3), result.stderr
    return result


def clone_skewed(world: World, skew: str, path: Path) -> None:
    skewed(
        skew,
        "clone",
        world.url,
        "--project",
        PROJECT,
        "--dataset",
        DATASET,
        "--token",
        world.token,
        "--store",
        str(path),
    )


def set_status(skew: str, path: Path, item_id: str, status: str) -> None:
    skewed(
        skew,
        "status",
        "set",
        status,
        "--item",
        item_id,
        "--task",
        TASK,
        "--store",
        str(path),
    )


def offset_ms(path: Path) -> int:
    with Replica(path) as replica:
        return int(replica.setting("clock_offset_ms") or 0)


def forget_offset(path: Path) -> None:
    """Make the replica stamp as if it had never measured its clock."""
    with Replica(path) as replica:
        replica.set_setting("clock_offset_ms", 0)


def outcomes(path: Path) -> dict[str, str]:
    with Replica(path) as replica:
        return dict(
            replica.conn.execute("SELECT item_id, state FROM journal").fetchall()
        )


def test_fast_replica_cannot_beat_later_write(world: World, tmp_path: Path) -> None:
    path = tmp_path / "fast.db"
    clone_skewed(world, "+1h", path)
    assert abs(offset_ms(path) + 3_600_000) < 5_000

    corrected, unmeasured = world.item_ids[0], world.item_ids[1]
    # The corrected edit goes first: the uncorrected one moves the HLC an hour on.
    set_status("+1h", path, corrected, "completed")
    forget_offset(path)
    set_status("+1h", path, unmeasured, "completed")
    # A correct clock writes both items later in real time.
    world.rest_set_status([corrected, unmeasured], "discard")

    skewed("+1h", "sync", "--store", str(path))

    assert outcomes(path)[corrected] == "superseded"
    server = world.server_statuses()
    assert server[corrected] == "discard"
    with Replica(path) as replica:
        assert replica_statuses(replica, world.task["id"])[corrected] == "discard"
    # Without the offset the op is an hour ahead: the server restamps it at push
    # time, after the online write, so the fast clock wins. The offset prevents it.
    assert outcomes(path)[unmeasured] == "applied"
    assert server[unmeasured] == "completed"


def test_slow_replica_keeps_its_later_edit(world: World, tmp_path: Path) -> None:
    path = tmp_path / "slow.db"
    clone_skewed(world, "-5m", path)
    measured = offset_ms(path)
    assert abs(measured - 300_000) < 5_000

    corrected, unmeasured = world.item_ids[2], world.item_ids[3]
    world.rest_set_status([corrected, unmeasured], "discard")
    # The replica edits after the online write, in real time, without pulling it.
    # The uncorrected edit goes first: the HLC never runs backwards, so an edit
    # after the corrected one would inherit its time.
    forget_offset(path)
    set_status("-5m", path, unmeasured, "approved")
    with Replica(path) as replica:
        replica.set_setting("clock_offset_ms", measured)
    set_status("-5m", path, corrected, "approved")

    skewed("-5m", "sync", "--store", str(path))

    server = world.server_statuses()
    assert outcomes(path)[corrected] == "applied"
    assert server[corrected] == "approved"
    with Replica(path) as replica:
        assert replica_statuses(replica, world.task["id"])[corrected] == "approved"
    # Stamped 5 minutes slow, the same later edit would lose.
    assert outcomes(path)[unmeasured] == "superseded"
    assert server[unmeasured] == "discard"
