"""Annotation joins on a replica: the label index, and labels stored as arrays."""

from __future__ import annotations

from pathlib import Path

import localsync as dl
from localsync.store import Replica
from tests.store_helpers import make_replica


def annotation(replica: Replica, number: int, item: int, label: object) -> dict:
    return {
        "id": f"a{number:023x}",
        "itemId": f"{item:024x}",
        "datasetId": replica.dataset_id,
        "type": "box",
        "label": label,
    }


def label_join(label: str) -> dict:
    filters = dl.Filters()
    filters.add_join(field="label", values=label)
    return filters.prepare()


def plan_of(replica: Replica, body: dict) -> str:
    compiled = replica.compile(body)
    rows = replica.conn.execute(
        f"EXPLAIN QUERY PLAN {compiled.count_sql}", compiled.count_params
    ).fetchall()
    return " / ".join(row[-1] for row in rows)


def test_label_join_uses_label_index(tmp_path: Path) -> None:
    replica, _ = make_replica(tmp_path / "r.db", 6)
    replica.put_annotations(
        [
            annotation(replica, 0, 0, "cat"),
            annotation(replica, 1, 1, "dog"),
            annotation(replica, 2, 2, "cat"),
        ]
    )

    items, total = replica.query(label_join("cat"))

    assert total == 2
    assert [item["id"] for item in items] == [f"{0:024x}", f"{2:024x}"]
    assert "annotations_label" in plan_of(replica, label_join("cat"))
    replica.close()


def test_label_join_matches_array_label(tmp_path: Path) -> None:
    replica, _ = make_replica(tmp_path / "r.db", 6)
    replica.put_annotations(
        [
            annotation(replica, 0, 0, "cat"),
            annotation(replica, 1, 1, ["cat", "dog"]),
            annotation(replica, 2, 2, "dog"),
        ]
    )

    items, total = replica.query(label_join("cat"))

    assert total == 2
    assert [item["id"] for item in items] == [f"{0:024x}", f"{1:024x}"]
    assert replica.array_paths("annotations") == frozenset({"label"})
    assert "label" not in replica.array_paths("items")
    replica.close()
