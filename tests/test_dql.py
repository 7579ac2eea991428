"""Query language: SQL compiler and Python evaluator on the same cases.

Every case runs on a real SQLite file built from schema/sqlite/items.sql, through
``compile_query`` with the stored array catalog, through ``compile_query`` with no
catalog (every path may be an array) and through ``run_query``; all three must
return the expected ids.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from localsync import dql
from localsync.dql.rows import UPSERT_ITEM_SQL, item_row
from localsync.errors import InvalidQuery

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "schema" / "sqlite" / "items.sql"
DATASET = "D1"


def open_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    # Tests need no durability; skipping fsync keeps a file per test cheap.
    conn.execute("PRAGMA synchronous = OFF")
    conn.executescript(SCHEMA.read_text())
    return conn


def store(
    conn: sqlite3.Connection,
    items: Sequence[dict[str, Any]],
    annotations: Sequence[dict[str, Any]] = (),
    dataset_id: str = DATASET,
) -> None:
    dql.register_array_paths(conn, dataset_id, "items", items)
    dql.register_array_paths(conn, dataset_id, "annotations", annotations)
    conn.executemany(
        UPSERT_ITEM_SQL,
        [item_row(item, json.dumps(item), dataset_id=dataset_id) for item in items],
    )
    conn.executemany(
        "INSERT INTO annotations (id, item_id, dataset_id, json) VALUES (?, ?, ?, ?)",
        [(a["id"], a["itemId"], dataset_id, json.dumps(a)) for a in annotations],
    )
    conn.commit()


def sql_ids(
    conn: sqlite3.Connection,
    body: dict[str, Any],
    *,
    catalog: bool = True,
    dataset_id: str = DATASET,
) -> list[str]:
    paths = dql.load_array_paths(conn, dataset_id) if catalog else None
    notes = dql.load_array_paths(conn, dataset_id, "annotations") if catalog else None
    compiled = dql.compile_query(
        body,
        dataset_id=dataset_id,
        array_paths=paths,
        annotation_array_paths=notes,
    )
    return [row[0] for row in conn.execute(compiled.select_sql, compiled.select_params)]


def sql_count(conn: sqlite3.Connection, body: dict[str, Any]) -> int:
    compiled = dql.compile_query(
        body, dataset_id=DATASET, array_paths=dql.load_array_paths(conn, DATASET)
    )
    return int(conn.execute(compiled.count_sql, compiled.count_params).fetchone()[0])


def python_ids(
    body: dict[str, Any],
    items: Sequence[dict[str, Any]],
    annotations: Sequence[dict[str, Any]] = (),
) -> list[str]:
    by_item: dict[str, list[dict[str, Any]]] = {}
    for annotation in annotations:
        by_item.setdefault(annotation["itemId"], []).append(annotation)
    page, _ = dql.run_query(body, items, by_item)
    return [item["id"] for item in page]


def assert_all_return(
    conn: sqlite3.Connection,
    items: Sequence[dict[str, Any]],
    body: dict[str, Any],
    expected: Sequence[str],
    annotations: Sequence[dict[str, Any]] = (),
) -> None:
    """Check the SQL (with and without catalog) and Python results, in order."""
    expected = list(expected)
    assert sql_ids(conn, body) == expected, "SQL with the array catalog"
    assert sql_ids(conn, body, catalog=False) == expected, "SQL without a catalog"
    assert python_ids(body, items, annotations) == expected, "Python evaluator"


def item(item_id: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": item_id,
        "datasetId": DATASET,
        "type": "file",
        "hidden": False,
        "metadata": {"system": {}, "user": {}},
    }
    doc.update(fields)
    return doc


def user(item_id: str, **values: Any) -> dict[str, Any]:
    return item(item_id, metadata={"system": {}, "user": values})


def refs(item_id: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return item(item_id, metadata={"system": {"refs": list(entries)}, "user": {}})


def ref(task_id: str, status: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "task", "id": task_id}
    if status is not None:
        entry["metadata"] = {"status": status}
    return entry


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_db(tmp_path / "items.db")
    yield connection
    connection.close()


# Pinned cases: the expected ids are requirements of the platform's semantics.

SCORES = [
    item("A", metadata={"system": {}, "user": {}}),
    user("B", score=None),
    user("C", score=5),
]


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"metadata.user.score": {"$ne": 5}}, ["A", "B"]),
        ({"metadata.user.score": None}, ["A", "B"]),
        ({"metadata.user.score": {"$exists": False}}, ["A"]),
        ({"metadata.user.score": {"$exists": True}}, ["B", "C"]),
        ({"metadata.user.score": {"$eq": 5}}, ["C"]),
        ({"metadata.user.score": {"$ne": None}}, ["C"]),
        ({"metadata.user.score": {"$in": [None, 7]}}, ["A", "B"]),
        ({"metadata.user.score": {"$nin": [None]}}, ["C"]),
        ({"metadata.user.score": {"$nin": [5]}}, ["A", "B"]),
    ],
)
def test_missing_and_null_scores(conn, filter_, expected):
    store(conn, SCORES)
    assert_all_return(conn, SCORES, {"filter": filter_}, expected)


REFS = [
    refs("X", ref("T1", "approved"), ref("T2", "completed")),
    refs("Y", ref("T1", "completed")),
    refs("Z"),
    item("W"),
    refs("V", ref("T1")),
]


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        (
            {
                "$and": [
                    {"metadata.system.refs.id": "T1"},
                    {"metadata.system.refs.metadata.status": "completed"},
                ]
            },
            ["X", "Y"],
        ),
        (
            {
                "metadata.system.refs": {
                    "$match": {"id": "T1", "metadata": {"status": {"$eq": "completed"}}}
                }
            },
            ["Y"],
        ),
        # An object value without operators on an array of objects is a $match.
        (
            {"metadata.system.refs": {"id": "T1", "metadata": {"status": "completed"}}},
            ["Y"],
        ),
        # dtlpy's "status by task" filter.
        (
            {
                "metadata.system.refs": {
                    "$match": {
                        "id": "T1",
                        "type": "task",
                        "metadata": {"status": {"$in": ["completed"]}},
                    }
                }
            },
            ["Y"],
        ),
        # dtlpy's "items without a status" filter: the ref of V has no metadata.
        (
            {
                "metadata.system.refs": {
                    "$match": {
                        "type": "task",
                        "metadata": {"status": {"$exists": False}},
                    }
                }
            },
            ["V"],
        ),
        ({"metadata.system.refs.id": {"$in": ["T2"]}}, ["X"]),
        ({"metadata.system.refs.id": {"$ne": "T1"}}, ["W", "Z"]),
        ({"metadata.system.refs.id": {"$nin": ["T1", "T2"]}}, ["W", "Z"]),
        ({"metadata.system.refs.id": None}, ["W", "Z"]),
        ({"metadata.system.refs.metadata.status": None}, ["V", "W", "Z"]),
        ({"metadata.system.refs": []}, ["Z"]),
        ({"metadata.system.refs": [{"type": "task", "id": "T1"}]}, ["V"]),
        ({"metadata.system.refs": {"$exists": False}}, ["W"]),
    ],
)
def test_refs_cross_arrays(conn, filter_, expected):
    store(conn, REFS)
    assert_all_return(conn, REFS, {"filter": filter_}, expected)


def test_match_needs_an_array(conn):
    # json_each lists an object's members too, and "0" is a member key, not an index.
    matching = {"id": "T1", "metadata": {"status": "discard"}}
    docs = [
        refs("R1", ref("T2"), ref("T1", "discard")),
        item("R2", metadata={"system": {"refs": {"a": matching}}}),
        item("R3", metadata={"system": {"refs": {"0": matching}}}),
        item("R4", metadata={"system": {"refs": matching}}),
        item("R5", metadata={"system": {"refs": "T1"}}),
        item("R6", metadata={"system": {"refs": [[matching]]}}),
        refs("R7"),
    ]
    store(conn, docs)
    body = {"filter": {"metadata.system.refs": {"$match": matching}}}
    assert_all_return(conn, docs, body, ["R1"])
    body = {"filter": {"metadata.system.refs": {"$match": {"$exists": True}}}}
    assert_all_return(conn, docs, body, ["R1", "R6"])


FLAGS = [user("F1", flag=True), user("F2", flag=1), user("F3", flag="true")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, ["F1"]), (1, ["F2"]), ("true", ["F3"]), (1.0, ["F2"]), (False, [])],
)
def test_true_one_and_string_differ(conn, value, expected):
    store(conn, FLAGS)
    body = {"filter": {"metadata.user.flag": value}}
    assert_all_return(conn, FLAGS, body, expected)


DEFAULTS = [
    item("I1"),
    item("I2", hidden=True),
    item("I3", type="dir"),
    item("I4", annotated=True),
]


def test_default_filter_skips_hidden_and_dirs(conn):
    store(conn, DEFAULTS)
    body = {"filter": {"$and": [{"hidden": False}, {"type": "file"}]}}
    assert_all_return(conn, DEFAULTS, body, ["I1", "I4"])


def test_empty_filter_returns_all(conn):
    store(conn, DEFAULTS)
    assert_all_return(conn, DEFAULTS, {"filter": {}}, ["I1", "I2", "I3", "I4"])
    assert_all_return(conn, DEFAULTS, {}, ["I1", "I2", "I3", "I4"])


def test_query_stays_in_its_dataset(conn):
    store(conn, DEFAULTS)
    store(conn, [item("OTHER")], dataset_id="D2")
    assert sql_ids(conn, {"filter": {}}) == ["I1", "I2", "I3", "I4"]
    assert sql_ids(conn, {"filter": {}}, dataset_id="D2") == ["OTHER"]


# A table of general cases on one varied set of items.

CORPUS = [
    item(
        "c01",
        filename="/a/one.jpg",
        dir="/a",
        name="one.jpg",
        annotated=True,
        createdAt="2024-03-01T10:00:00.000Z",
        metadata={
            "system": {"tags": ["train"]},
            "user": {"score": 10, "tags": ["x", "y"]},
        },
    ),
    item(
        "c02",
        filename="/a/two.png",
        dir="/a",
        name="two.png",
        annotated=False,
        createdAt="2024-03-15T10:00:00.000Z",
        metadata={"system": {"tags": []}, "user": {"score": 55.5, "tags": ["y"]}},
    ),
    item(
        "c03",
        filename="/b/c/three.jpg",
        dir="/b/c",
        name="three.jpg",
        annotated=True,
        createdAt="2024-04-01T00:00:00.000Z",
        metadata={"system": {}, "user": {"score": "70", "tags": [["x"], "z"]}},
    ),
    item(
        "c04",
        filename="/b/four.jpg",
        dir="/b",
        name="four.jpg",
        createdAt="2023-12-31T23:59:59.999Z",
        metadata={
            "system": {},
            "user": {"score": [3, 80], "nested": {"deep": {"x": 1}}},
        },
    ),
    item(
        "c05",
        filename="/b/five.JPG",
        dir="/b",
        name="five.JPG",
        metadata={
            "system": {},
            "user": {"score": True, "nested": [{"deep": {"x": 2}}]},
        },
    ),
    item("c06", filename="/b/", dir="/", name="b", type="dir"),
]


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"dir": "/a"}, ["c01", "c02"]),
        ({"dir": {"$in": ["/a", "/b"]}}, ["c01", "c02", "c04", "c05"]),
        ({"annotated": True}, ["c01", "c03"]),
        ({"annotated": {"$ne": True}}, ["c02", "c04", "c05", "c06"]),
        ({"filename": "/b/**"}, ["c03", "c04", "c05", "c06"]),
        ({"filename": "/b/*"}, ["c03", "c04", "c05", "c06"]),
        ({"filename": "*.jpg"}, ["c01", "c03", "c04"]),
        ({"filename": {"$ne": "*.jpg"}}, ["c02", "c05", "c06"]),
        ({"filename": {"$in": ["*.png", "/b/four.jpg"]}}, ["c02", "c04"]),
        ({"filename": {"$nin": ["*.png", "*.jpg"]}}, ["c05", "c06"]),
        ({"name": "*o*"}, ["c01", "c02", "c04"]),
        ({"createdAt": "2024-03-*"}, ["c01", "c02"]),
        ({"createdAt": {"$gte": "2024-03-15T00:00:00.000Z"}}, ["c02", "c03"]),
        ({"createdAt": {"$lt": "2024-01-01"}}, ["c04"]),
        ({"metadata.user.score": {"$gt": 50}}, ["c02", "c04"]),
        ({"metadata.user.score": {"$gt": 1, "$lt": 5}}, ["c04"]),
        ({"metadata.user.score": {"$lte": 10}}, ["c01", "c04"]),
        ({"metadata.user.score": {"$gt": "6"}}, ["c03"]),
        ({"metadata.user.score": {"$gte": True}}, ["c05"]),
        ({"metadata.user.score": {"$lt": True}}, []),
        ({"metadata.user.score": 80}, ["c04"]),
        ({"metadata.user.score": [3, 80]}, ["c04"]),
        ({"metadata.user.score": [80, 3]}, []),
        ({"metadata.user.tags": "y"}, ["c01", "c02"]),
        ({"metadata.user.tags": ["y"]}, ["c02"]),
        ({"metadata.user.tags": ["x"]}, ["c03"]),
        ({"metadata.user.tags": {"$in": ["z", "q"]}}, ["c03"]),
        ({"metadata.user.tags": {"$nin": ["y"]}}, ["c03", "c04", "c05", "c06"]),
        ({"metadata.user.tags": {"$match": {"$eq": "x"}}}, ["c01"]),
        ({"metadata.user.tags": {"$match": {"$match": {"$eq": "x"}}}}, ["c03"]),
        ({"metadata.user.tags": {"$match": {"$ne": "y"}}}, ["c01", "c03"]),
        ({"metadata.user.tags": {"$match": {"$gt": "x", "$lt": "z"}}}, ["c01", "c02"]),
        ({"metadata.system.tags": []}, ["c02"]),
        ({"metadata.system.tags": {"$exists": True}}, ["c01", "c02"]),
        ({"metadata.user.nested.deep.x": {"$in": [1, 2]}}, ["c04", "c05"]),
        ({"metadata.user.nested": {"deep": {"x": 2}}}, ["c05"]),
        ({"metadata": {"user": {"nested": {"deep": {"x": 1}}}}}, ["c04"]),
        ({"metadata.user.nested": {"$match": {"deep.x": 1}}}, []),
        (
            {
                "$or": [{"dir": "/a"}, {"name": "four.jpg"}],
                "$and": [{"annotated": True}],
            },
            ["c01"],
        ),
        (
            {"$or": [{"$and": [{"dir": "/b"}, {"name": "*.jpg"}]}, {"type": "dir"}]},
            ["c04", "c06"],
        ),
        ({"$and": []}, ["c01", "c02", "c03", "c04", "c05", "c06"]),
        ({"$or": []}, []),
        ({"id": {"$gt": "c04"}}, ["c05", "c06"]),
        ({"id": {"$in": ["c02", "c06", "nope"]}}, ["c02", "c06"]),
    ],
)
def test_corpus_cases(conn, filter_, expected):
    store(conn, CORPUS)
    assert_all_return(conn, CORPUS, {"filter": filter_}, expected)


# One value of each kind at the score path; no array, so bounds on it merge.
MIXED_SCORES = [
    user("m00", score=0),
    user("m01", score=1),
    user("m02", score=0.5),
    user("m03", score=-1),
    user("m04", score=20),
    user("m05", score=25),
    user("m06", score=29),
    user("m07", score=29.5),
    user("m08", score=30),
    user("m09", score=True),
    user("m10", score=False),
    user("m11", score="25"),
    user("m12", score=""),
    user("m13", score={"x": 25}),
    user("m14", score=None),
    user("m15"),
]


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"$gte": 20, "$lte": 29}, ["m04", "m05", "m06"]),
        ({"$gt": 20, "$lt": 29}, ["m05"]),
        ({"$gt": 0, "$lt": 2}, ["m01", "m02"]),
        ({"$gte": 0, "$lte": 1}, ["m00", "m01", "m02"]),
        ({"$gte": -0.0, "$lt": 1}, ["m00", "m02"]),
        ({"$gt": 0.5, "$lte": 1}, ["m01"]),
        ({"$gt": 1, "$lt": 29}, ["m04", "m05"]),
        ({"$lt": 1}, ["m00", "m02", "m03"]),
        ({"$lte": 0}, ["m00", "m03"]),
        ({"$gt": 29}, ["m07", "m08"]),
        ({"$gte": 1}, ["m01", "m04", "m05", "m06", "m07", "m08"]),
        ({"$gt": 5, "$lt": 3}, []),
        ({"$gte": 20, "$lt": "3"}, []),
        ({"$gte": 20, "$lt": True}, []),
        ({"$gte": 20, "$ne": 25}, ["m04", "m06", "m07", "m08"]),
    ],
)
def test_number_range_keeps_kinds_apart(conn, filter_, expected):
    store(conn, MIXED_SCORES)
    body = {"filter": {"metadata.user.score": filter_}}
    assert_all_return(conn, MIXED_SCORES, body, expected)


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        (
            {
                "$and": [
                    {"metadata.user.score": {"$gte": 20}},
                    {"metadata.user.score": {"$lte": 29}},
                    {"metadata.user.score": {"$lt": 25}},
                ]
            },
            ["m04"],
        ),
        (
            {
                "$and": [
                    {"metadata.user.score": {"$gte": 0}},
                    {"metadata.user.score": {"$lte": 25}},
                    {"metadata.user.score": {"$gt": 0}},
                ]
            },
            ["m01", "m02", "m04", "m05"],
        ),
        (
            {
                "$or": [
                    {"metadata.user.score": {"$gt": 29}},
                    {"metadata.user.score": {"$lt": 0}},
                ]
            },
            ["m03", "m07", "m08"],
        ),
    ],
)
def test_number_bounds_in_and_or(conn, filter_, expected):
    store(conn, MIXED_SCORES)
    assert_all_return(conn, MIXED_SCORES, {"filter": filter_}, expected)


def test_number_bounds_on_array_stay_apart(conn):
    # Each bound may pass on another element, so an array of 10 and 40 is in
    # 20..29; the catalog lists the path, so the bounds are not merged.
    docs = [*MIXED_SCORES, user("m16", score=[10, 40]), user("m17", score=[True])]
    store(conn, docs)
    body = {"filter": {"metadata.user.score": {"$gte": 20, "$lte": 29}}}
    assert_all_return(conn, docs, body, ["m04", "m05", "m06", "m16"])
    body = {"filter": {"metadata.user.score": {"$gte": 0, "$lte": 1}}}
    assert_all_return(conn, docs, body, ["m00", "m01", "m02"])


def test_number_bounds_in_element_match(conn):
    docs = [
        user("e1", values=[True, 0, 3]),
        user("e2", values=[1.5, "x"]),
        user("e3", values=[{"v": 1}, 2]),
        user("e4", values=[False, "1"]),
    ]
    store(conn, docs)
    body = {"filter": {"metadata.user.values": {"$match": {"$gte": 1, "$lte": 2}}}}
    assert_all_return(conn, docs, body, ["e2", "e3"])
    body = {"filter": {"metadata.user.values": {"$match": {"$gte": 0, "$lt": 1}}}}
    assert_all_return(conn, docs, body, ["e1"])


def test_count_ignores_paging(conn):
    store(conn, CORPUS)
    body = {"filter": {"filename": "/b/**"}, "page": 1, "pageSize": 2}
    assert sql_ids(conn, body) == ["c05", "c06"]
    assert sql_count(conn, body) == 4
    page, total = dql.run_query(body, CORPUS, {})
    assert [doc["id"] for doc in page] == ["c05", "c06"]
    assert total == 4


# Wildcards, with literal stars and GLOB's own special characters in values.

PATTERNS = [
    item("p1", name="a*b"),
    item("p2", name="axxb"),
    item("p3", name="what?.jpg"),
    item("p4", name="[draft] plan"),
    item("p5", name="whatX.jpg"),
    item("p6", name="back\\slash"),
    item("p7", name="Case.JPG"),
]


WILDCARD_CASES = [
    ("a\\*b", ["p1"]),
    ("a*b", ["p1", "p2"]),
    ("a\\**", ["p1"]),
    ("what?.jpg", ["p3"]),
    ("what?*", ["p3"]),
    ("*?*", ["p3"]),
    ("[draft]*", ["p4"]),
    ("[d*", ["p4"]),
    ("*]*", ["p4"]),
    ("back\\slash", ["p6"]),
    ("back\\*", []),
    ("back*", ["p6"]),
    ("*.jpg", ["p3", "p5"]),
    ("*.JPG", ["p7"]),
    ("*", ["p1", "p2", "p3", "p4", "p5", "p6", "p7"]),
]


@pytest.mark.parametrize(("value", "expected"), WILDCARD_CASES)
def test_wildcard_values(conn, value, expected):
    store(conn, PATTERNS)
    assert_all_return(conn, PATTERNS, {"filter": {"name": value}}, expected)


@pytest.mark.parametrize(("value", "expected"), WILDCARD_CASES)
def test_wildcard_values_in_json(conn, value, expected):
    moved = [user(doc["id"], label=doc["name"]) for doc in PATTERNS]
    store(conn, moved)
    assert_all_return(conn, moved, {"filter": {"metadata.user.label": value}}, expected)
    in_list = {"filter": {"metadata.user.label": {"$in": [value]}}}
    assert_all_return(conn, moved, in_list, expected)


# Field names are data: no SQL error, no extra rows.

INJECTIONS = [
    "a') OR 1=1 --",
    'metadata.user."x',
    "x'); DROP TABLE items; --",
    "metadata.user.x' OR '1'='1",
    "metadata.$.a",
    "a[0]",
    'metadata.user.a"b.c',
    "metadata.user.ünï",
    "metadata.user.",
    "",
]
TRICKY = [
    user("t1", **{"a') OR 1=1 --": 1, 'a"b': {"c": 1}, "ünï": 1}),
    user("t2", x=1),
    item("t3", **{"a') OR 1=1 --": 1, "x'); DROP TABLE items; --": 1, "a[0]": 1}),
]


@pytest.mark.parametrize("field", INJECTIONS)
@pytest.mark.parametrize("value", [1, {"$ne": 1}, {"$exists": True}, None])
def test_injection_shaped_field_names(conn, field, value):
    store(conn, TRICKY)
    body = {"filter": {field: value}}
    expected = python_ids(body, TRICKY)
    assert sql_ids(conn, body) == expected
    assert sql_ids(conn, body, catalog=False) == expected
    assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == len(TRICKY)


def test_odd_field_names_reach_their_keys(conn):
    store(conn, TRICKY)
    cases = {
        "a') OR 1=1 --": ["t3"],
        "x'); DROP TABLE items; --": ["t3"],
        "a[0]": ["t3"],
        "metadata.user.a') OR 1=1 --": ["t1"],
        'metadata.user.a"b.c': ["t1"],
        "metadata.user.ünï": ["t1"],
    }
    for field, expected in cases.items():
        assert_all_return(conn, TRICKY, {"filter": {field: 1}}, expected)


def test_odd_field_names_stay_out_of_sql_text():
    compiled = dql.compile_query(
        {"filter": {"a') OR 1=1 --": 1}, "sort": {"x'y": "ascending"}},
        dataset_id=DATASET,
    )
    assert "1=1" not in compiled.select_sql
    assert "x'y" not in compiled.select_sql
    assert "a') OR 1=1 --" in compiled.select_params
    assert "x'y" in compiled.select_params


# Malformed queries.

MALFORMED = [
    ({"filter": {"a": {"$foo": 1}}}, "'$foo'"),
    ({"filter": {"$foo": [{"a": 1}]}}, "'$foo'"),
    ({"filter": {"a": {"$in": "x"}}}, "$in of field 'a' must be a list"),
    ({"filter": {"a": {"$nin": {"b": 1}}}}, "$nin of field 'a' must be a list"),
    ({"filter": {"a": {"$in": [{"b": 1}]}}}, "$in of field 'a' lists an object"),
    ({"filter": {"$and": {"a": 1}}}, "'$and' must be a list"),
    ({"filter": {"$or": "a"}}, "'$or' must be a list"),
    ({"filter": {"$or": [1]}}, "filter must be a JSON object, got 1"),
    ({"filter": [{"a": 1}]}, "filter must be a JSON object"),
    ({"filter": None}, "filter must be a JSON object"),
    ({"filter": {1: "a"}}, "field names must be strings"),
    ({"filter": {"a": {"b": 1, 2: 3}}}, "field names must be strings"),
    ({"filter": {"a": {"$gt": 1, "b": 2}}}, "mixes operators and field names"),
    ({"filter": {"a": {"$gt": [1]}}}, "$gt of field 'a' must be a number"),
    ({"filter": {"a": {"$gt": None}}}, "$gt of field 'a' must be a number"),
    ({"filter": {"a": {"$exists": "yes"}}}, "$exists of field 'a'"),
    ({"filter": {"a": {"$match": [1]}}}, "$match of field 'a' needs an object"),
    ({"filter": {"a": {"$eq": {"b": 1}}}}, "$eq of field 'a' takes a value"),
    ({"filter": {"a": {"$or": [1, 2]}}}, "$or is not an operator of field 'a'"),
    ({"filter": {"a": float("nan")}}, "not finite"),
    ({"filter": {"a": 2**70}}, "does not fit in 64 bits"),
    ({"filter": {"a": object()}}, "value of field 'a' is not JSON"),
    ({"filter": {}, "sort": {"a": "up"}}, "sort direction of 'a'"),
    ({"filter": {}, "sort": ["a"]}, "sort must be an object"),
    ({"filter": {}, "page": -1}, "page must be an integer of 0 or more, got -1"),
    ({"filter": {}, "page": "1"}, "page must be an integer"),
    ({"filter": {}, "pageSize": 0}, "pageSize must be an integer from 1 to 1000"),
    ({"filter": {}, "pageSize": True}, "pageSize must be an integer"),
    (
        {"filter": {}, "join": {"on": {"resource": "tasks"}, "filter": {}}},
        "join resource must be 'annotations', got 'tasks'",
    ),
    (
        {"filter": {}, "join": {"on": {"resource": "annotations", "local": "x"}}},
        "join must link annotation 'itemId'",
    ),
    ({"filter": {}, "join": {"filter": {"label": {"$bad": 1}}}}, "'$bad'"),
    ({"filter": {}, "resource": "tasks"}, "resource 'tasks' cannot be queried in SQL"),
    ("not a body", "query body must be a JSON object"),
    ({"filter": {".".join(["a"] * 33): 1}}, "more than 32 segments"),
]


def _nested(depth: int) -> dict[str, Any]:
    filter_: dict[str, Any] = {"a": 1}
    for _ in range(depth - 1):
        filter_ = {"$and": [filter_]}
    return filter_


@pytest.mark.parametrize(("body", "message"), MALFORMED)
def test_malformed_query_names_the_part(conn, body, message):
    store(conn, CORPUS)
    with pytest.raises(InvalidQuery) as raised:
        dql.compile_query(body, dataset_id=DATASET)
    assert message in raised.value.message
    assert raised.value.status_code == "400"
    if message.startswith("resource"):
        return  # Python evaluation has no tables, so any resource is fine there.
    with pytest.raises(InvalidQuery) as raised:
        dql.run_query(body, CORPUS, {})  # type: ignore[arg-type]
    assert message in raised.value.message
    assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == len(CORPUS)


def test_nesting_limit():
    # {"$and": [ ... ]} adds two levels (the object and the list) per step.
    accepted = _nested(16)
    dql.compile_query({"filter": accepted}, dataset_id=DATASET)
    with pytest.raises(InvalidQuery, match="nested deeper than 32 levels"):
        dql.compile_query({"filter": _nested(17)}, dataset_id=DATASET)
    with pytest.raises(InvalidQuery, match="nested deeper than 32 levels"):
        dql.compile_query({"filter": _nested(5000)}, dataset_id=DATASET)


def test_too_deep_for_sqlite_is_invalid_query(conn):
    store(conn, CORPUS)
    filter_: dict[str, Any] = {"a": 1}
    for _ in range(15):
        filter_ = {"a": {"$match": filter_}}
    body = {"filter": filter_}
    with pytest.raises(InvalidQuery, match="too complex for SQLite"):
        dql.compile_query(body, dataset_id=DATASET, array_paths=None)
    assert python_ids(body, CORPUS) == []


def test_matches_keeps_true_and_one_apart():
    doc = {"id": "x", "a": 1}
    assert dql.matches({"a": 1}, doc)
    assert not dql.matches({"a": True}, doc)
    assert not dql.matches({"a": "1"}, doc)
    assert dql.matches({"a": 1.0}, doc)


def test_value_limit():
    ids = [f"id{index}" for index in range(dql.MAX_VALUES - 3)]
    dql.compile_query({"filter": {"id": {"$in": ids}}}, dataset_id=DATASET)
    with pytest.raises(InvalidQuery, match="has more than 10000 values"):
        dql.compile_query(
            {"filter": {"id": {"$in": [*ids, "a", "b"]}}}, dataset_id=DATASET
        )


def test_long_in_list_runs(conn):
    store(conn, CORPUS)
    ids = [f"id{index}" for index in range(5000)] + ["c03"]
    body = {"filter": {"metadata.user.score": {"$in": [*range(5000, 10000), "70"]}}}
    assert_all_return(conn, CORPUS, body, ["c03"])
    assert_all_return(conn, CORPUS, {"filter": {"id": {"$in": ids}}}, ["c03"])


def test_page_size_over_limit_is_clipped(conn):
    many = [item(f"m{index:04d}") for index in range(1200)]
    store(conn, many)
    body = {"filter": {}, "pageSize": 5000}
    assert len(sql_ids(conn, body)) == 1000
    assert len(python_ids(body, many)) == 1000


# Sort and paging.

SORTABLE = [
    item("s1", name="b", metadata={"system": {}, "user": {"rank": 2}}),
    item("s2", name="a", metadata={"system": {}, "user": {"rank": "x"}}),
    item("s3", name="c", metadata={"system": {}, "user": {"rank": 2.0}}),
    item("s4", name="a", metadata={"system": {}, "user": {"rank": None}}),
    item("s5", name="d", metadata={"system": {}, "user": {"rank": True}}),
    item("s6", name="e", metadata={"system": {}, "user": {"rank": [1]}}),
    item("s7", name="f", metadata={"system": {}, "user": {"rank": {"a": 1}}}),
    item("s8", name="g", metadata={"system": {}, "user": {"rank": -1}}),
    item("s9", name="h", metadata={"system": {}, "user": {}}),
]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ({"name": "ascending"}, ["s2", "s4", "s1", "s3", "s5", "s6", "s7", "s8", "s9"]),
        (
            {"name": "descending"},
            ["s9", "s8", "s7", "s6", "s5", "s3", "s1", "s2", "s4"],
        ),
        (
            {"metadata.user.rank": "ascending"},
            ["s4", "s9", "s8", "s1", "s3", "s2", "s7", "s6", "s5"],
        ),
        (
            {"metadata.user.rank": "descending"},
            ["s5", "s6", "s7", "s2", "s1", "s3", "s8", "s4", "s9"],
        ),
        (
            {"name": "ascending", "id": "descending"},
            ["s4", "s2", "s1", "s3", "s5", "s6", "s7", "s8", "s9"],
        ),
        ({"id": "descending"}, ["s9", "s8", "s7", "s6", "s5", "s4", "s3", "s2", "s1"]),
        (
            {"metadata.user.rank.a": "descending"},
            ["s7", "s1", "s2", "s3", "s4", "s5", "s6", "s8", "s9"],
        ),
    ],
)
def test_sort_directions(conn, sort, expected):
    store(conn, SORTABLE)
    assert_all_return(conn, SORTABLE, {"filter": {}, "sort": sort}, expected)


def test_offset_paging(conn):
    store(conn, SORTABLE)
    seen = []
    for page in range(4):
        body = {
            "filter": {},
            "sort": {"name": "descending"},
            "page": page,
            "pageSize": 4,
        }
        ids = sql_ids(conn, body)
        assert ids == python_ids(body, SORTABLE)
        seen.extend(ids)
    assert seen == ["s9", "s8", "s7", "s6", "s5", "s3", "s1", "s2", "s4"]


def test_keyset_paging_returns_each_item_once(conn):
    many = [item(f"{index * 7919 % 2500:05d}k") for index in range(2500)]
    store(conn, many)
    last = None
    seen: list[str] = []
    pages = 0
    while True:
        conditions: list[dict[str, Any]] = [{"hidden": False}, {"type": "file"}]
        if last is not None:
            conditions.append({"id": {"$gt": last}})
        body = {
            "filter": {"$and": conditions},
            "sort": {"id": "ascending"},
            "page": 0,
            "pageSize": 1000,
        }
        ids = sql_ids(conn, body)
        assert ids == python_ids(body, many)
        if not ids:
            break
        pages += 1
        seen.extend(ids)
        last = ids[-1]
    assert pages == 3
    assert len(seen) == 2500
    assert sorted(seen) == seen
    assert set(seen) == {doc["id"] for doc in many}


# Join on annotations.

JOINED_ITEMS = [item("j1"), item("j2"), item("j3"), item("j4")]
ANNOTATIONS = [
    {"id": "a1", "itemId": "j1", "label": "cat", "type": "box", "attributes": ["big"]},
    {"id": "a2", "itemId": "j1", "label": "dog", "type": "point", "attributes": []},
    {"id": "a3", "itemId": "j2", "label": "cat", "type": "polygon", "attributes": []},
    {"id": "a4", "itemId": "j3", "label": "dog", "type": "box", "attributes": ["big"]},
]
JOIN_ON = {"resource": "annotations", "local": "itemId", "forigen": "id"}


@pytest.mark.parametrize(
    ("join_filter", "expected"),
    [
        ({"$and": [{"label": "cat"}]}, ["j1", "j2"]),
        (
            {"$and": [{"label": "cat"}, {"type": {"$in": ["box", "polygon"]}}]},
            ["j1", "j2"],
        ),
        ({"$and": [{"label": "dog"}, {"type": "box"}]}, ["j3"]),
        ({"$or": [{"label": "bird"}, {"type": "point"}]}, ["j1"]),
        ({"attributes": "big"}, ["j1", "j3"]),
        ({"label": {"$ne": "cat"}}, ["j1", "j3"]),
        ({}, ["j1", "j2", "j3"]),
    ],
)
def test_join_on_annotations(conn, join_filter, expected):
    store(conn, JOINED_ITEMS, ANNOTATIONS)
    body = {"filter": {}, "join": {"on": JOIN_ON, "filter": join_filter}}
    assert_all_return(conn, JOINED_ITEMS, body, expected, ANNOTATIONS)
    by_item = {"j1": ANNOTATIONS[:2], "j2": ANNOTATIONS[2:3], "j3": ANNOTATIONS[3:]}
    matched = [
        doc["id"]
        for doc in JOINED_ITEMS
        if dql.matches({}, doc, by_item.get(doc["id"], []), body["join"])
    ]
    assert matched == expected


def test_join_finds_foreign_annotations(conn):
    # The annotations table takes dataset_id from each annotation's own datasetId,
    # so an item's annotation may carry another dataset's id, or none.
    store(conn, JOINED_ITEMS, ANNOTATIONS)
    body = {"filter": {}, "join": {"on": JOIN_ON, "filter": {"label": "cat"}}}
    assert sql_ids(conn, body) == ["j1", "j2"]
    foreign = [
        {"id": "a5", "itemId": "j4", "label": "cat", "datasetId": "D0"},
        {"id": "a6", "itemId": "j3", "label": "cat"},
    ]
    conn.executemany(
        "INSERT INTO annotations (id, item_id, dataset_id, json) VALUES (?, ?, ?, ?)",
        [
            (a["id"], a["itemId"], a.get("datasetId", ""), json.dumps(a))
            for a in foreign
        ],
    )
    annotations = [*ANNOTATIONS, *foreign]
    expected = ["j1", "j2", "j3", "j4"]
    assert_all_return(conn, JOINED_ITEMS, body, expected, annotations)
    body["join"]["filter"] = {"label": {"$in": ["cat", "bird"]}, "type": "box"}
    assert_all_return(conn, JOINED_ITEMS, body, ["j1"], annotations)


def test_label_join_uses_label_index(conn):
    store(conn, JOINED_ITEMS, ANNOTATIONS)
    body = {"filter": {}, "join": {"on": JOIN_ON, "filter": {"label": "cat"}}}
    compiled = dql.compile_query(
        body,
        dataset_id=DATASET,
        array_paths=dql.load_array_paths(conn, DATASET),
        annotation_array_paths=dql.load_array_paths(conn, DATASET, "annotations"),
    )
    plan = " ".join(
        row[3]
        for row in conn.execute(
            "EXPLAIN QUERY PLAN " + compiled.count_sql, compiled.count_params
        )
    )
    assert "annotations_label (dataset_id=? AND label=?)" in plan
    # Annotations filed under another dataset are looked up by item, not scanned.
    assert "annotations_item (item_id=?)" in plan
    assert "SCAN annotations" not in plan
    assert conn.execute(compiled.count_sql, compiled.count_params).fetchone()[0] == 2


def test_join_with_item_filter(conn):
    items = [item("j1", dir="/a"), item("j2", dir="/b"), item("j3", dir="/a")]
    store(conn, items, ANNOTATIONS)
    body = {
        "filter": {"dir": "/a"},
        "join": {"on": JOIN_ON, "filter": {"label": "dog"}},
    }
    assert_all_return(conn, items, body, ["j1", "j3"], ANNOTATIONS)


def test_annotation_resource_query(conn):
    store(conn, JOINED_ITEMS, ANNOTATIONS)
    compiled = dql.compile_query(
        {"filter": {"type": {"$in": ["box", "point"]}}, "resource": "annotations"},
        dataset_id=DATASET,
    )
    rows = conn.execute(compiled.select_sql, compiled.select_params).fetchall()
    assert [row[0] for row in rows] == ["a1", "a2", "a4"]


def test_compile_filter_on_annotations(conn):
    store(conn, JOINED_ITEMS, ANNOTATIONS)
    where, params = dql.compile_filter(
        {"label": "cat", "attributes": {"$ne": "big"}},
        alias="n",
        array_paths=dql.load_array_paths(conn, DATASET, "annotations"),
        table="annotations",
    )
    rows = conn.execute(f"SELECT n.id FROM annotations AS n WHERE {where}", params)
    assert [row[0] for row in rows] == ["a3"]


def test_where_sql_in_own_statement(conn):
    store(conn, CORPUS)
    compiled = dql.compile_query({"filter": {"dir": "/b"}}, dataset_id=DATASET)
    conn.execute(
        "UPDATE items SET json = json_set(json, '$.metadata.user.seen', 1)"
        f" WHERE id IN (SELECT items.id FROM items WHERE {compiled.where_sql})",
        compiled.where_params,
    )
    seen = dql.compile_query({"filter": {"metadata.user.seen": 1}}, dataset_id=DATASET)
    rows = conn.execute(seen.select_sql, seen.select_params).fetchall()
    assert [row[0] for row in rows] == ["c04", "c05"]


# Catalog and indexes.


def test_array_paths_of_document():
    doc = {
        "a": [{"b": [1], "c": {"d": []}}, [{"e": []}], 3],
        "f": {"g": {"h": ["x"]}},
        "i": {},
        "j": "[]",
    }
    assert dql.array_paths_of(doc) == {"a", "a.b", "a.c.d", "f.g.h"}


def test_path_index_serves_range_count(conn):
    store(conn, CORPUS)
    name = dql.create_path_index(conn, "metadata.user.score")
    body = {"filter": {"metadata.user.score": {"$gt": 50}}}
    compiled = dql.compile_query(body, dataset_id=DATASET, array_paths=frozenset())
    plan = " ".join(
        row[3]
        for row in conn.execute(
            "EXPLAIN QUERY PLAN " + compiled.count_sql, compiled.count_params
        )
    )
    assert name in plan
    assert conn.execute(compiled.count_sql, compiled.count_params).fetchone()[0] == 1


def test_number_range_is_one_index_range(conn):
    store(conn, MIXED_SCORES)
    name = dql.create_path_index(conn, "metadata.user.score")
    body = {"filter": {"metadata.user.score": {"$gte": 20, "$lte": 29}}}
    compiled = dql.compile_query(body, dataset_id=DATASET, array_paths=frozenset())
    plan = " ".join(
        row[3]
        for row in conn.execute(
            "EXPLAIN QUERY PLAN " + compiled.count_sql, compiled.count_params
        )
    )
    assert f"{name} (dataset_id=? AND <expr>>? AND <expr><?)" in plan
    # A type test, or the bound below strings, would read each row's JSON.
    assert "json_type" not in compiled.count_sql
    assert "< ''" not in compiled.count_sql
    assert conn.execute(compiled.count_sql, compiled.count_params).fetchone()[0] == 3


def test_filename_prefix_pattern_uses_index(conn):
    store(conn, CORPUS)
    compiled = dql.compile_query({"filter": {"filename": "/b/**"}}, dataset_id=DATASET)
    plan = " ".join(
        row[3]
        for row in conn.execute(
            "EXPLAIN QUERY PLAN " + compiled.select_sql, compiled.select_params
        )
    )
    assert "items_filename (dataset_id=? AND filename>? AND filename<?)" in plan


def test_path_index_rejects_odd_path(conn):
    with pytest.raises(ValueError, match="every segment must match"):
        dql.create_path_index(conn, "metadata.user.a b")
    names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    assert not any("a b" in name for name in names)


def test_generated_columns_are_typed_projections(conn):
    docs = [
        item("g1", hidden="false", annotated=1, filename=5, dir=None),
        item("g2", hidden=False, annotated=True, filename="/x", dir="/"),
    ]
    store(conn, docs)
    rows = conn.execute(
        "SELECT id, hidden, annotated, filename, dir, type FROM items ORDER BY id"
    ).fetchall()
    assert rows == [
        ("g1", None, None, None, None, "file"),
        ("g2", 0, 1, "/x", "/", "file"),
    ]
    assert_all_return(conn, docs, {"filter": {"hidden": False}}, ["g2"])
    assert_all_return(conn, docs, {"filter": {"hidden": "false"}}, ["g1"])
    assert_all_return(conn, docs, {"filter": {"filename": 5}}, ["g1"])


def test_schema_rejects_invalid_json(conn):
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute(
            "INSERT INTO items (id, dataset_id, json) VALUES ('x', 'D', '[1]')"
        )
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("INSERT INTO items (id, dataset_id, json) VALUES ('x', 'D', '{')")
    assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 0


# The real SheepFace export.


def load_export(folder: Path) -> list[dict[str, Any]]:
    """Build platform-shaped items from an export's per-item JSON files."""
    items = []
    for path in sorted(folder.rglob("*.json")):
        record = json.loads(path.read_text())
        filename = record["filename"]
        directory, _, name = filename.rpartition("/")
        items.append(
            {
                "id": record["_id"],
                "datasetId": DATASET,
                "filename": filename,
                "name": name,
                "dir": directory or "/",
                "type": "file",
                "hidden": False,
                "annotated": bool(record.get("annotations")),
                "metadata": record["itemMetadata"],
            }
        )
    return items


@pytest.fixture
def sheep(conn, exports_dir) -> list[dict[str, Any]]:
    items = load_export(exports_dir / "SheepFace" / "json")
    decoys = [
        item("decoy1", filename="/Poll Dorset2/a.jpg"),
        item("decoy2", filename="/poll dorset/a.jpg"),
        item("decoy3", filename="/Poll Dorset.jpg"),
        item("decoy4", filename="/x/a.jpg.txt"),
        item("decoy5", filename="/x/a.JPG"),
        item("decoy6", filename="/x/Poll Dorset/a.png"),
    ]
    store(conn, items + decoys)
    return items + decoys


def test_sheepface_folder_pattern(conn, sheep):
    body = {"filter": {"filename": "/Poll Dorset/**"}, "pageSize": 1000}
    expected = sorted(
        doc["id"] for doc in sheep if doc["filename"].startswith("/Poll Dorset/")
    )
    assert len(expected) == 420
    assert sql_count(conn, body) == 420
    first = sql_ids(conn, body)
    second = sql_ids(conn, {**body, "page": 1})
    assert sorted(first + second) == expected
    assert python_ids(body, sheep) == sorted(expected)[:1000]


def test_sheepface_extension_pattern(conn, sheep):
    body = {"filter": {"filename": "*.jpg"}}
    expected = [doc["id"] for doc in sheep if doc["filename"].endswith(".jpg")]
    assert len(expected) == 1680 + 3
    assert sql_count(conn, body) == len(expected)
    _, total = dql.run_query(body, sheep, {})
    assert total == len(expected)
    everything: list[str] = []
    for page in range(2):
        everything += sql_ids(conn, {**body, "page": page})
    assert sorted(everything) == sorted(expected)


def test_sheepface_refs_are_empty(conn, sheep):
    body = {"filter": {"metadata.system.refs": []}}
    expected = [
        doc["id"] for doc in sheep if doc["metadata"]["system"].get("refs") == []
    ]
    assert len(expected) > 0
    assert sql_count(conn, body) == len(expected)
