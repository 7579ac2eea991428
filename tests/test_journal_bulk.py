"""Bulk status calls on items whose refs differ: positions, metadata, clears, op ids."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from localsync.store import Replica
from localsync.store.journal import new_op_ids
from tests.store_helpers import make_replica

OTHER_TASK = "e" * 24
CREATOR = "ann@example.com"


def item_id(number: int) -> str:
    return f"{number:024x}"


def set_refs(replica: Replica, number: int, refs: list[Any]) -> None:
    """Store ``refs`` as the item's refs, with annotationStatus left as it was."""
    (raw,) = replica.conn.execute(
        "SELECT json FROM items WHERE id = ?", (item_id(number),)
    ).fetchone()
    document = json.loads(raw)
    document["metadata"]["system"]["refs"] = refs
    replica.conn.execute(
        "UPDATE items SET json = ? WHERE id = ?",
        (json.dumps(document), item_id(number)),
    )


def system(replica: Replica, number: int) -> dict[str, Any]:
    return replica.get_item(item_id(number))["metadata"]["system"]


def stamp(status: str, creator: str = "old@example.com") -> dict[str, str]:
    return {"status": status, "creator": creator, "timestamp": "2024-01-01T00:00:00Z"}


@pytest.fixture
def replica(replica_path: Path) -> Replica:
    replica, _ = make_replica(replica_path, 12, assignees=("a@x", "b@x", "c@x"))
    return replica


def task_ids(replica: Replica) -> tuple[str, list[str]]:
    task_id = replica.tasks()[0]["id"]
    return task_id, replica.assignment_ids(task_id)


def test_task_ref_at_any_position(replica: Replica) -> None:
    task_id, (first, second, _) = task_ids(replica)
    other = {"type": "task", "id": OTHER_TASK, "metadata": stamp("discard")}
    shapes = {
        0: [{"type": "task", "id": task_id}, {"type": "assignment", "id": first}],
        1: [{"type": "assignment", "id": first}, {"type": "task", "id": task_id}],
        2: [
            other,
            {"type": "task", "id": task_id},
            {"type": "assignment", "id": second},
        ],
        3: [{"type": "task", "id": task_id}],
    }
    for number, refs in shapes.items():
        set_refs(replica, number, refs)

    result = replica.set_status(
        [item_id(n) for n in shapes],
        task_id=task_id,
        status="approved",
        creator=CREATOR,
    )

    assert result.changed == [item_id(n) for n in shapes]
    for number, refs in shapes.items():
        stored = system(replica, number)["refs"]
        assert [ref["id"] for ref in stored] == [ref["id"] for ref in refs]
        for ref in stored:
            if ref["id"] == OTHER_TASK:
                assert ref["metadata"] == stamp("discard")
            else:
                assert ref["metadata"]["status"] == "approved"
                assert ref["metadata"]["creator"] == CREATOR
    assert system(replica, 2)["annotationStatus"] == ["approved", "discard"]
    assert system(replica, 3)["annotationStatus"] == ["approved"]


def test_several_assignments_show_task_status(replica: Replica) -> None:
    task_id, assignments = task_ids(replica)
    refs = [
        {"type": "assignment", "id": a, "metadata": stamp("discard")}
        for a in assignments
    ]
    set_refs(
        replica,
        4,
        [*refs, {"type": "task", "id": task_id, "metadata": stamp("discard")}],
    )

    replica.set_status(
        [item_id(4)], task_id=task_id, status="completed", creator=CREATOR
    )

    stored = system(replica, 4)
    assert [ref["metadata"]["status"] for ref in stored["refs"]] == ["completed"] * 4
    assert {ref["metadata"]["creator"] for ref in stored["refs"]} == {CREATOR}
    assert len({ref["metadata"]["timestamp"] for ref in stored["refs"]}) == 1
    assert stored["annotationStatus"] == ["completed"]


def test_metadata_missing_or_not_an_object(replica: Replica) -> None:
    task_id, (first, second, third) = task_ids(replica)
    set_refs(
        replica,
        5,
        [
            {"type": "task", "id": task_id},
            {"type": "assignment", "id": first, "metadata": None},
            {"type": "assignment", "id": second, "metadata": "note"},
            {"type": "assignment", "id": third, "metadata": {"keep": 1}},
        ],
    )

    replica.set_status(
        [item_id(5)], task_id=task_id, status="approved", creator=CREATOR
    )

    stored = system(replica, 5)["refs"]
    for ref in stored[:3]:
        assert list(ref["metadata"]) == ["status", "creator", "timestamp"]
        assert ref["metadata"]["status"] == "approved"
    assert stored[3]["metadata"]["keep"] == 1
    assert stored[3]["metadata"]["status"] == "approved"


def test_clear_keeps_refs_and_other_metadata(replica: Replica) -> None:
    task_id, (first, _, _) = task_ids(replica)
    other = {"type": "task", "id": OTHER_TASK, "metadata": stamp("discard")}
    set_refs(
        replica,
        6,
        [
            other,
            {"type": "task", "id": task_id, "metadata": {**stamp("approved"), "k": 2}},
            {"type": "assignment", "id": first, "metadata": "note"},
        ],
    )

    result = replica.set_status(
        [item_id(6)], task_id=task_id, status=None, creator=CREATOR
    )

    assert result.changed == [item_id(6)]
    stored = system(replica, 6)
    assert stored["refs"][0] == other
    assert stored["refs"][1] == {"type": "task", "id": task_id, "metadata": {"k": 2}}
    assert stored["refs"][2]["metadata"] == "note"
    assert stored["annotationStatus"] == ["discard"]


def test_clear_of_ref_without_metadata(replica: Replica) -> None:
    task_id, _ = task_ids(replica)
    set_refs(replica, 7, [{"type": "task", "id": task_id}])

    result = replica.set_status(
        [item_id(7)], task_id=task_id, status=None, creator=CREATOR
    )

    assert result.reasserted == [item_id(7)]
    assert system(replica, 7)["refs"] == [{"type": "task", "id": task_id}]
    assert system(replica, 7)["annotationStatus"] == []


def test_mixed_changed_and_reasserted(replica: Replica) -> None:
    task_id, _ = task_ids(replica)
    replica.set_status(
        [item_id(n) for n in (9, 3, 7)],
        task_id=task_id,
        status="discard",
        creator=CREATOR,
    )
    order = [item_id(n) for n in (8, 7, 2, 9, 11, 3, 7)]

    result = replica.set_status(
        order, task_id=task_id, status="discard", creator=CREATOR
    )

    assert result.changed == [item_id(n) for n in (8, 2, 11)]
    assert result.reasserted == [item_id(n) for n in (7, 9, 3)]
    ops = replica.conn.execute(
        "SELECT seq, item_id, op_id FROM journal ORDER BY seq"
    ).fetchall()
    latest = ops[3:]
    assert [seq for seq, _, _ in ops] == list(range(1, 10))
    assert [item for _, item, _ in latest] == sorted(set(order))
    assert [op for _, _, op in latest] == result.op_ids
    assert result.op_ids == sorted(result.op_ids)
    assert all(system(replica, n)["annotationStatus"] == ["discard"] for n in (2, 7, 8))


def test_more_refs_than_function_arguments(replica: Replica) -> None:
    """70 stamped refs need 420 json_set arguments, over the limit set here."""
    replica.conn.setlimit(sqlite3.SQLITE_LIMIT_FUNCTION_ARG, 100)
    task_id, (first, _, _) = task_ids(replica)
    refs = [{"type": "assignment", "id": first, "metadata": stamp("discard")}] * 69
    set_refs(replica, 0, [{"type": "task", "id": task_id}, *refs])

    replica.set_status(
        [item_id(0)], task_id=task_id, status="approved", creator=CREATOR
    )
    stamped = system(replica, 0)
    replica.set_status([item_id(0)], task_id=task_id, status=None, creator=CREATOR)
    cleared = system(replica, 0)

    assert len(stamped["refs"]) == 70
    assert {ref["metadata"]["status"] for ref in stamped["refs"]} == {"approved"}
    assert {ref["metadata"]["creator"] for ref in stamped["refs"]} == {CREATOR}
    assert stamped["annotationStatus"] == ["approved"]
    assert len(cleared["refs"]) == 70
    assert all(ref["metadata"] == {} for ref in cleared["refs"])
    assert cleared["annotationStatus"] == []


def test_ref_without_id_is_left_alone(replica: Replica) -> None:
    task_id, _ = task_ids(replica)
    note = {"type": "note", "metadata": stamp("completed")}
    set_refs(replica, 1, [{"type": "task", "id": task_id}, note])

    replica.set_status(
        [item_id(1)], task_id=task_id, status="approved", creator=CREATOR
    )

    stored = system(replica, 1)
    assert stored["refs"][1] == note
    assert stored["annotationStatus"] == ["approved", "completed"]


def test_skipped_items_are_unchanged(replica: Replica) -> None:
    task_id, _ = task_ids(replica)
    set_refs(
        replica, 10, [{"type": "task", "id": OTHER_TASK, "metadata": stamp("discard")}]
    )
    set_refs(replica, 11, {"task": {"type": "task", "id": task_id}})  # type: ignore[arg-type]
    before = dict(replica.conn.execute("SELECT id, json FROM items"))

    result = replica.set_status(
        [item_id(10), "f" * 24, item_id(11), item_id(10)],
        task_id=task_id,
        status="approved",
        creator=CREATOR,
    )

    assert result.skipped == {
        item_id(10): f"item is not in task {task_id}",
        "f" * 24: "item not found",
        item_id(11): f"item is not in task {task_id}",
    }
    assert result.op_ids == []
    assert replica.conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0
    assert dict(replica.conn.execute("SELECT id, json FROM items")) == before


def test_empty_item_list_journals_nothing(replica: Replica) -> None:
    task_id, _ = task_ids(replica)

    result = replica.set_status([], task_id=task_id, status="approved", creator=CREATOR)

    assert (result.changed, result.skipped, result.op_ids) == ([], {}, [])
    assert replica.conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0


def expected_system(
    system_json: dict[str, Any], ref_ids: set[str], status: str | None
) -> dict[str, Any]:
    """Apply a status call to one item's system metadata, in plain Python."""
    expected = json.loads(json.dumps(system_json))
    for ref in expected["refs"]:
        if ref.get("id") not in ref_ids:
            continue
        metadata = ref.get("metadata")
        if status is None:
            if isinstance(metadata, dict):
                for key in ("status", "creator", "timestamp"):
                    metadata.pop(key, None)
        elif isinstance(metadata, dict):
            metadata.update(status=status, creator=CREATOR, timestamp="NOW")
        else:
            ref["metadata"] = {"status": status, "creator": CREATOR, "timestamp": "NOW"}
    statuses = {
        ref["metadata"]["status"]
        for ref in expected["refs"]
        if isinstance(ref.get("metadata"), dict) and ref["metadata"].get("status")
    }
    expected["annotationStatus"] = sorted(statuses)
    return expected


def test_random_ref_shapes_match_model(replica_path: Path) -> None:
    """Seeded random refs (positions, metadata, other tasks) against a model."""
    replica, plan = make_replica(replica_path, 150, assignees=("a@x", "b@x"))
    task_id = plan.task["id"]
    ref_ids = {task_id, *replica.assignment_ids(task_id)}
    rng = random.Random(7)
    pool = [*sorted(ref_ids), OTHER_TASK, "d" * 24]
    metadata_choices: list[Any] = [None, "absent", {}, {"k": 1}, "note"]
    metadata_choices += [stamp(s) for s in ("completed", "approved", "discard")]
    for number in range(150):
        refs = []
        for ref_id in rng.sample(pool, rng.randrange(1, len(pool) + 1)):
            ref: dict[str, Any] = {"type": "task", "id": ref_id}
            metadata = rng.choice(metadata_choices)
            if metadata != "absent":
                ref["metadata"] = metadata
            refs.append(ref)
        set_refs(replica, number, refs)

    for call in range(6):
        status = rng.choice(["completed", "approved", "discard", None])
        chosen = rng.sample(range(150), rng.randrange(1, 150))
        before = {n: system(replica, n) for n in chosen}

        result = replica.set_status(
            [item_id(n) for n in chosen],
            task_id=task_id,
            status=status,
            creator=CREATOR,
        )

        for number in chosen:
            stored = system(replica, number)
            in_task = any(ref.get("id") == task_id for ref in before[number]["refs"])
            if not in_task:
                assert stored == before[number], (call, number)
                assert item_id(number) in result.skipped
                continue
            for ref in stored["refs"]:
                if (
                    isinstance(ref.get("metadata"), dict)
                    and ref["metadata"].get("creator") == CREATOR
                ):
                    ref["metadata"]["timestamp"] = "NOW"
            assert stored == expected_system(before[number], ref_ids, status), (
                call,
                number,
            )


def test_new_op_ids_are_ordered_uuid7() -> None:
    first = new_op_ids(1_000)
    second = new_op_ids(1_000)

    for op_id in (first[0], first[-1], second[0]):
        assert re.fullmatch(r"[0-9a-f]{32}", op_id)
        assert uuid.UUID(hex=op_id).version == 7
        assert uuid.UUID(hex=op_id).variant == uuid.RFC_4122
    assert first == sorted(first)
    assert len(set(first + second)) == 2_000
    assert new_op_ids(0) == []
