"""The query language on PostgreSQL: the pinned cases and generated queries.

The case tables of ``tests/test_dql.py`` (read from its ``parametrize`` marks) and
the Hypothesis strategies of ``tests/test_dql_properties.py`` run here through the
PostgreSQL dialect, on the items table of ``schema/postgres/``. Every result must
equal what the Python evaluator returns, with the array catalog and without one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

import tests.test_dql as cases
import tests.test_dql_properties as properties
from localsync import dql
from localsync.dql.paths import array_paths_of
from localsync.dql.postgres_dialect import POSTGRES, like_pattern
from localsync.server.postgres_storage import PostgresStorage
from tests.pg_fixtures import fresh_database

EXAMPLES = int(os.environ.get("LOCALSYNC_HYPOTHESIS_EXAMPLES", "150"))
DATASET = cases.DATASET

Connection = psycopg.Connection[dict[str, Any]]


@pytest.fixture(scope="module")
def conn() -> Iterator[Connection]:
    """A connection to a fresh database with the server schema, in autocommit."""
    with fresh_database("localsync_dql") as url:
        PostgresStorage(url).close()
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as connection:
            # As the server storage does: JIT compiles these queries slowly.
            connection.execute("SET jit = off")
            yield connection


_datasets = itertools.count()


def store(
    conn: Connection,
    items: Sequence[dict[str, Any]],
    annotations: Sequence[dict[str, Any]] = (),
    dataset_id: str = DATASET,
    *,
    replace: bool = True,
) -> None:
    """Store documents and their array paths; ``replace`` empties the tables first."""
    if replace:
        for table in ("items", "annotations", "array_paths"):
            conn.execute(f"DELETE FROM {table}")
    paths = [
        (dataset_id, resource, path)
        for resource, documents in (("items", items), ("annotations", annotations))
        for path in set().union(*(array_paths_of(dict(doc)) for doc in documents))
    ]
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO array_paths (dataset_id, resource, path) VALUES (%s, %s, %s)",
            paths,
        )
        cursor.executemany(
            "INSERT INTO items (id, dataset_id, json) VALUES (%s, %s, %s)",
            [(doc["id"], dataset_id, Jsonb(doc)) for doc in items],
        )
        cursor.executemany(
            "INSERT INTO annotations (id, item_id, dataset_id, json) "
            "VALUES (%s, %s, %s, %s)",
            [(a["id"], a["itemId"], dataset_id, Jsonb(a)) for a in annotations],
        )


def catalog(conn: Connection, dataset_id: str, resource: str) -> frozenset[str]:
    rows = conn.execute(
        "SELECT path FROM array_paths WHERE dataset_id = %s AND resource = %s",
        (dataset_id, resource),
    )
    return frozenset(row["path"] for row in rows)


def run_sql(
    conn: Connection,
    body: dict[str, Any],
    *,
    with_catalog: bool = True,
    dataset_id: str = DATASET,
) -> tuple[list[str], int]:
    """Return the ids of the page and the count of all matches, from PostgreSQL."""
    compiled = dql.compile_query(
        body,
        dataset_id=dataset_id,
        array_paths=catalog(conn, dataset_id, "items") if with_catalog else None,
        annotation_array_paths=(
            catalog(conn, dataset_id, "annotations") if with_catalog else None
        ),
        dialect=POSTGRES,
    )
    rows = conn.execute(compiled.select_sql, compiled.select_params).fetchall()
    count = conn.execute(compiled.count_sql, compiled.count_params).fetchone()
    assert count is not None
    return [row["id"] for row in rows], count["count"]


def assert_both_return(
    conn: Connection, body: dict[str, Any], expected: Sequence[str]
) -> None:
    """Check the SQL with and without the array catalog, in order."""
    assert run_sql(conn, body)[0] == list(expected), "with the array catalog"
    assert run_sql(conn, body, with_catalog=False)[0] == list(expected), (
        "without a catalog"
    )


# The pinned cases of tests/test_dql.py.


def _marked_cases(test: Callable[..., Any]) -> list[tuple[Any, ...]]:
    """Return the argument tuples of a test's single ``parametrize`` mark."""
    marks = [mark for mark in test.pytestmark if mark.name == "parametrize"]
    assert len(marks) == 1, f"{test.__name__} should have one parametrize mark"
    return [tuple(values) for values in marks[0].args[1]]


def _moved_patterns() -> list[dict[str, Any]]:
    return [cases.user(doc["id"], label=doc["name"]) for doc in cases.PATTERNS]


def _join(join_filter: dict[str, Any]) -> dict[str, Any]:
    return {"filter": {}, "join": {"on": cases.JOIN_ON, "filter": join_filter}}


# Each table: its name, the test that contains it, the items and annotations it
# runs on, and how one row of it becomes a query body.
CASE_TABLES: list[tuple[str, Callable[..., Any], Any, Any, Callable[[Any], Any]]] = [
    (
        "scores",
        cases.test_missing_and_null_scores,
        cases.SCORES,
        [],
        lambda f: {"filter": f},
    ),
    ("refs", cases.test_refs_cross_arrays, cases.REFS, [], lambda f: {"filter": f}),
    (
        "flags",
        cases.test_true_one_and_string_differ,
        cases.FLAGS,
        [],
        lambda v: {"filter": {"metadata.user.flag": v}},
    ),
    ("corpus", cases.test_corpus_cases, cases.CORPUS, [], lambda f: {"filter": f}),
    (
        "number-ranges",
        cases.test_number_range_keeps_kinds_apart,
        cases.MIXED_SCORES,
        [],
        lambda f: {"filter": {"metadata.user.score": f}},
    ),
    (
        "number-bounds",
        cases.test_number_bounds_in_and_or,
        cases.MIXED_SCORES,
        [],
        lambda f: {"filter": f},
    ),
    (
        "wildcards",
        cases.test_wildcard_values,
        cases.PATTERNS,
        [],
        lambda v: {"filter": {"name": v}},
    ),
    (
        "wildcards-json",
        cases.test_wildcard_values_in_json,
        _moved_patterns(),
        [],
        lambda v: {"filter": {"metadata.user.label": {"$in": [v]}}},
    ),
    (
        "sort",
        cases.test_sort_directions,
        cases.SORTABLE,
        [],
        lambda s: {"filter": {}, "sort": s},
    ),
    (
        "join",
        cases.test_join_on_annotations,
        cases.JOINED_ITEMS,
        cases.ANNOTATIONS,
        _join,
    ),
]

PINNED = [
    pytest.param(items, annotations, to_body(row[0]), row[1], id=f"{name}-{index}")
    for name, test, items, annotations, to_body in CASE_TABLES
    for index, row in enumerate(_marked_cases(test))
]


@pytest.mark.parametrize(("items", "annotations", "body", "expected"), PINNED)
def test_pinned_case(conn, items, annotations, body, expected):
    store(conn, items, annotations)
    assert_both_return(conn, body, expected)


def test_case_tables_are_found():
    sizes = {name: len(_marked_cases(test)) for name, test, *_ in CASE_TABLES}
    assert all(size > 0 for size in sizes.values()), sizes
    assert len(PINNED) == sum(sizes.values())


@pytest.mark.parametrize("field", cases.INJECTIONS)
@pytest.mark.parametrize("value", [1, {"$ne": 1}, {"$exists": True}, None])
def test_injection_shaped_field_names(conn, field, value):
    store(conn, cases.TRICKY)
    body = {"filter": {field: value}}
    expected = cases.python_ids(body, cases.TRICKY)
    assert_both_return(conn, body, expected)
    total = conn.execute("SELECT count(*) AS items FROM items").fetchone()
    assert total == {"items": len(cases.TRICKY)}


def test_odd_field_names_stay_out_of_sql_text():
    compiled = dql.compile_query(
        {"filter": {"a') OR 1=1 --": 1}, "sort": {"x'y": "ascending"}},
        dataset_id=DATASET,
        dialect=POSTGRES,
    )
    assert "1=1" not in compiled.select_sql
    assert "x'y" not in compiled.select_sql
    assert "a') OR 1=1 --" in compiled.select_params
    assert "x'y" in compiled.select_params


def test_query_stays_in_its_dataset(conn):
    store(conn, cases.DEFAULTS)
    store(conn, [cases.item("OTHER")], dataset_id="D2", replace=False)
    assert run_sql(conn, {"filter": {}})[0] == ["I1", "I2", "I3", "I4"]
    assert run_sql(conn, {"filter": {}}, dataset_id="D2")[0] == ["OTHER"]


def test_count_ignores_paging(conn):
    store(conn, cases.CORPUS)
    body = {"filter": {"filename": "/b/**"}, "page": 1, "pageSize": 2}
    assert run_sql(conn, body) == (["c05", "c06"], 4)


def test_keyset_paging_returns_each_item_once(conn):
    many = [cases.item(f"{index * 7919 % 2500:05d}k") for index in range(2500)]
    store(conn, many)
    last = None
    seen: list[str] = []
    while True:
        conditions: list[dict[str, Any]] = [{"hidden": False}, {"type": "file"}]
        if last is not None:
            conditions.append({"id": {"$gt": last}})
        body = {"filter": {"$and": conditions}, "sort": {"id": "ascending"}}
        ids, _ = run_sql(conn, body)
        if not ids:
            break
        seen.extend(ids)
        last = ids[-1]
    assert len(seen) == 2500
    assert seen == sorted(seen)
    assert set(seen) == {doc["id"] for doc in many}


def test_dialect_found_by_name():
    assert dql.get_dialect("postgresql") is POSTGRES
    compiled = dql.compile_query(
        {"filter": {}}, dataset_id=DATASET, dialect="postgresql"
    )
    assert "%s" in compiled.select_sql
    assert "?" not in compiled.select_sql
    with pytest.raises(ValueError, match="postgresql, sqlite"):
        dql.get_dialect("oracle")


def test_like_pattern_escapes_its_own_characters():
    assert like_pattern(("50%", "_x\\")) == "50\\%%\\_x\\\\"
    assert like_pattern(("", "")) == "%"


# The indexes the schema promises.


def _plan(conn: Connection, body: dict[str, Any]) -> str:
    compiled = dql.compile_query(
        body,
        dataset_id=DATASET,
        array_paths=catalog(conn, DATASET, "items"),
        dialect=POSTGRES,
    )
    conn.execute("SET enable_seqscan = off")
    try:
        rows = conn.execute("EXPLAIN " + compiled.count_sql, compiled.count_params)
        return "\n".join(row["QUERY PLAN"] for row in rows)
    finally:
        conn.execute("RESET enable_seqscan")


def test_nested_equality_uses_gin_index(conn):
    groups = [cases.user(f"g{index:04d}", group=index % 50) for index in range(1000)]
    store(conn, groups)
    conn.execute("ANALYZE items")
    # Without the dataset condition, the GIN index is the only one that applies.
    where, params = dql.compile_filter(
        {"metadata.user.group": 3}, alias="items", dialect=POSTGRES, table="items"
    )
    conn.execute("SET enable_seqscan = off")
    try:
        rows = conn.execute(
            f"EXPLAIN SELECT count(*) FROM items AS items WHERE {where}", params
        )
        plan = "\n".join(row["QUERY PLAN"] for row in rows)
    finally:
        conn.execute("RESET enable_seqscan")
    assert "@>" in where
    assert "Bitmap Index Scan on items_json" in plan


def test_filename_prefix_uses_btree_index(conn):
    items = [
        cases.item(f"f{index:03d}", filename=f"/folder{index % 5}/{index}.jpg")
        for index in range(300)
    ]
    store(conn, items)
    conn.execute("ANALYZE items")
    plan = _plan(conn, {"filter": {"filename": "/folder3/**"}})
    assert "items_filename" in plan


# Generated items and queries.


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(data=properties.datasets(), body=properties.query_bodies())
def test_sql_matches_evaluator(conn, data, body):
    dataset_id = f"H{next(_datasets)}"
    items, annotations = data
    store(conn, items, annotations, dataset_id=dataset_id)
    by_item: dict[str, list[dict[str, Any]]] = {}
    for annotation in annotations:
        by_item.setdefault(annotation["itemId"], []).append(annotation)

    page, total = dql.run_query(body, items, by_item)
    expected = ([doc["id"] for doc in page], total)
    for with_catalog in (True, False):
        result = run_sql(conn, body, with_catalog=with_catalog, dataset_id=dataset_id)
        assert result == expected, f"with_catalog={with_catalog}"
