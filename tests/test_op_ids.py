"""Naming an op by part of its id: the ops of one call share their first digits."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from localsync.cli import main
from localsync.errors import BadRequest, NotFound
from localsync.store import Replica
from localsync.sync.conflicts import find_op
from tests.store_helpers import make_replica


@pytest.fixture
def replica(tmp_path: Path):
    replica, plan = make_replica(tmp_path / "r.db", 5)
    item_ids = [f"{number:024x}" for number in range(5)]
    replica.op_ids = replica.set_status(
        item_ids, task_id=plan.task["id"], status="completed", creator=None
    ).op_ids
    yield replica
    replica.close()


def test_one_call_shares_prefix(replica: Replica) -> None:
    first, second = replica.op_ids[:2]

    assert first[:8] == second[:8]
    with pytest.raises(BadRequest, match="matches several ops"):
        find_op(replica, first[:8])


def test_unique_suffix_finds_op(replica: Replica) -> None:
    for op_id in replica.op_ids:
        assert find_op(replica, op_id[-8:])["op_id"] == op_id


def test_full_id_finds_op(replica: Replica) -> None:
    op_id = replica.op_ids[3]

    assert find_op(replica, op_id)["op_id"] == op_id
    assert find_op(replica, f" {op_id.upper()} ")["op_id"] == op_id


def test_prefix_of_lone_op_finds_it(replica: Replica, tmp_path: Path) -> None:
    other, plan = make_replica(tmp_path / "other.db", 1)
    (op_id,) = other.set_status(
        [f"{0:024x}"], task_id=plan.task["id"], status="discard", creator=None
    ).op_ids

    assert find_op(other, op_id[:10])["op_id"] == op_id
    other.close()


def test_unknown_part_not_found(replica: Replica) -> None:
    with pytest.raises(NotFound, match="not found in the journal"):
        find_op(replica, "zzzzzzzz")


def test_short_part_is_rejected(replica: Replica) -> None:
    with pytest.raises(BadRequest, match="6 of its first or last characters"):
        find_op(replica, replica.op_ids[0][-5:])


def test_drop_by_suffix_from_cli(replica: Replica) -> None:
    op_id = replica.op_ids[2]

    result = CliRunner().invoke(
        main, ["drop", op_id[-8:], "--store", str(replica.path)]
    )

    assert result.exit_code == 0, result.output
    state = replica.conn.execute(
        "SELECT state FROM journal WHERE op_id = ?", (op_id,)
    ).fetchone()[0]
    assert state == "dropped"
