"""Generated items and queries: the SQLite compiler returns what the evaluator returns.

Set LOCALSYNC_HYPOTHESIS_EXAMPLES to run more examples than the default 300.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from localsync import dql
from localsync.dql.rows import UPSERT_ITEM_SQL, item_row
from localsync.errors import InvalidQuery

SCHEMA = Path(__file__).resolve().parent.parent / "schema" / "sqlite" / "items.sql"
EXAMPLES = int(os.environ.get("LOCALSYNC_HYPOTHESIS_EXAMPLES", "300"))

# Few names, so that generated queries often hit generated fields. "d e", "é" and
# "0" are not identifiers and take the json_each route; "0" is also not an index.
KEYS = ["a", "b", "c", "d e", "é", "0"]
COLUMNS = ["filename", "dir", "name", "type", "hidden", "annotated", "createdAt"]
ALPHABET = "ab*?[/\\{é"

texts = st.text(alphabet=ALPHABET, max_size=4)
numbers = st.one_of(st.integers(-2, 3), st.sampled_from([0.5, 1.0, 2.5, -0.0]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from([*KEYS, "a.b"]), children, max_size=3),
    ),
    max_leaves=8,
)

patterns = st.sampled_from(
    ["*", "a*", "*b", "a*b", "*a*", "\\*", "a\\*", "[*", "?*", "*{*", "*/*", "*\\"]
)
query_scalars = st.one_of(st.none(), st.booleans(), numbers, texts, patterns)
plain_values = st.one_of(query_scalars, st.lists(json_values, max_size=2))
bounds = st.one_of(st.booleans(), numbers, texts)
paths = st.one_of(
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join),
    st.sampled_from([*COLUMNS, "id"]),
)


def value_operators() -> st.SearchStrategy[dict[str, Any]]:
    """One operator applied to a value, as an operator-form $match also uses."""
    return st.one_of(
        st.builds(lambda v: {"$eq": v}, plain_values),
        st.builds(lambda v: {"$ne": v}, plain_values),
        st.builds(lambda vs: {"$in": vs}, st.lists(plain_values, max_size=3)),
        st.builds(lambda vs: {"$nin": vs}, st.lists(plain_values, max_size=3)),
        st.builds(
            lambda op, v: {op: v},
            st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
            bounds,
        ),
        st.builds(lambda b: {"$exists": b}, st.booleans()),
    )


def merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for part in parts:
        result.update(part)
    return result


operator_values = st.lists(value_operators(), min_size=1, max_size=2).map(merged)


def extend_filters(
    inner: st.SearchStrategy[dict[str, Any]],
) -> st.SearchStrategy[dict[str, Any]]:
    specs = st.one_of(
        plain_values,
        operator_values,
        st.builds(lambda f: {"$match": f}, inner),
        st.builds(lambda ops: {"$match": ops}, operator_values),
        # An object value without operators: nested field names.
        st.dictionaries(st.sampled_from(KEYS), plain_values, min_size=1, max_size=2),
        inner.filter(lambda f: f and not any(key.startswith("$") for key in f)),
    )
    return st.one_of(
        st.dictionaries(paths, specs, min_size=1, max_size=2),
        st.builds(lambda fs: {"$and": fs}, st.lists(inner, max_size=3)),
        st.builds(lambda fs: {"$or": fs}, st.lists(inner, max_size=3)),
        st.builds(
            lambda a, b: {"$or": a, "$and": b},
            st.lists(inner, max_size=2),
            st.lists(inner, max_size=2),
        ),
    )


filters = st.recursive(
    st.dictionaries(paths, st.one_of(plain_values, operator_values), max_size=2),
    extend_filters,
    max_leaves=6,
)

documents = st.dictionaries(
    st.sampled_from([*KEYS, *COLUMNS, "a.b"]), json_values, max_size=5
)
annotation_documents = st.dictionaries(
    st.sampled_from(["label", "type", "a", "b"]), json_values, max_size=3
)
sorts = st.dictionaries(
    st.one_of(paths, st.just("metadata.user.score")),
    st.sampled_from(["ascending", "descending"]),
    max_size=2,
)


@st.composite
def datasets(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    bodies = draw(st.lists(documents, min_size=1, max_size=8))
    items = []
    annotations = []
    for index, body in enumerate(bodies):
        item_id = f"i{index:02d}"
        items.append({**body, "id": item_id})
        for number, note in enumerate(draw(st.lists(annotation_documents, max_size=2))):
            annotations.append({**note, "id": f"{item_id}n{number}", "itemId": item_id})
    return items, annotations


@st.composite
def query_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"filter": draw(filters)}
    if draw(st.booleans()):
        body["sort"] = draw(sorts)
    if draw(st.booleans()):
        body["page"] = draw(st.integers(0, 2))
        body["pageSize"] = draw(st.integers(1, 4))
    if draw(st.integers(0, 3)) == 0:
        on = {"resource": "annotations", "local": "itemId", "forigen": "id"}
        body["join"] = {"on": on, "filter": draw(filters)}
    return body


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path_factory.mktemp("dql") / "items.db")
    connection.execute("PRAGMA synchronous = OFF")
    connection.executescript(SCHEMA.read_text())
    yield connection
    connection.close()


_datasets = itertools.count()


def store(
    conn: sqlite3.Connection,
    items: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Store one example under a new dataset id, so examples never meet.

    Ids get the dataset id as prefix, to stay unique in the shared tables; the
    returned documents carry the same ids as the stored ones.
    """
    dataset_id = f"D{next(_datasets)}"
    items = [{**doc, "id": f"{dataset_id}-{doc['id']}"} for doc in items]
    annotations = [
        {**a, "id": f"{dataset_id}-{a['id']}", "itemId": f"{dataset_id}-{a['itemId']}"}
        for a in annotations
    ]
    dql.register_array_paths(conn, dataset_id, "items", items)
    dql.register_array_paths(conn, dataset_id, "annotations", annotations)
    conn.executemany(
        UPSERT_ITEM_SQL,
        [item_row(doc, json.dumps(doc), dataset_id=dataset_id) for doc in items],
    )
    conn.executemany(
        "INSERT INTO annotations (id, item_id, dataset_id, json) VALUES (?, ?, ?, ?)",
        [(a["id"], a["itemId"], dataset_id, json.dumps(a)) for a in annotations],
    )
    return dataset_id, items, annotations


def run_sql(
    conn: sqlite3.Connection, body: dict[str, Any], dataset_id: str, catalog: bool
) -> tuple[list[str], int]:
    compiled = dql.compile_query(
        body,
        dataset_id=dataset_id,
        array_paths=dql.load_array_paths(conn, dataset_id) if catalog else None,
        annotation_array_paths=(
            dql.load_array_paths(conn, dataset_id, "annotations") if catalog else None
        ),
    )
    rows = conn.execute(compiled.select_sql, compiled.select_params).fetchall()
    total = conn.execute(compiled.count_sql, compiled.count_params).fetchone()[0]
    return [row[0] for row in rows], total


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=datasets(), body=query_bodies())
def test_sql_matches_evaluator(conn, data, body):
    dataset_id, items, annotations = store(conn, *data)
    by_item: dict[str, list[dict[str, Any]]] = {}
    for annotation in annotations:
        by_item.setdefault(annotation["itemId"], []).append(annotation)

    page, total = dql.run_query(body, items, by_item)
    expected = [doc["id"] for doc in page]
    event(
        "matched all"
        if total == len(items)
        else "matched some"
        if total
        else "matched none"
    )

    for catalog in (True, False):
        try:
            result = run_sql(conn, body, dataset_id, catalog=catalog)
        except InvalidQuery as exc:
            # Only SQLite's nesting limits may reject what the evaluator accepts.
            assert "too complex for SQLite" in exc.message
            event(f"too complex for SQLite, catalog={catalog}")
            continue
        assert result == (expected, total), f"catalog={catalog}"


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(doc=documents, filter_=filters)
def test_matches_agrees_with_run_query(doc, filter_):
    doc = {**doc, "id": "x"}
    page, total = dql.run_query({"filter": filter_}, [doc], {})
    assert dql.matches(filter_, doc) == (total == 1)
    assert len(page) == total


# Values of every kind but arrays, so that bounds on one path merge into a range.
# Numbers come first and most often, so that ranges often match some of them.
range_numbers = st.one_of(numbers, st.sampled_from([0, 1, -1, 0.25, 1.5]))
single_values = st.recursive(
    st.one_of(range_numbers, range_numbers, scalars),
    lambda children: st.dictionaries(st.sampled_from(["a", "b"]), children, max_size=2),
    max_leaves=4,
)
range_bounds = st.tuples(
    st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
    st.one_of(range_numbers, range_numbers, st.booleans(), texts),
)


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(
    values=st.lists(single_values, min_size=2, max_size=10),
    path=st.sampled_from(["a", "a.b"]),
    bounds=st.lists(range_bounds, min_size=1, max_size=3),
)
def test_number_bounds_match_evaluator(conn, values, path, bounds):
    # For a.b, every third value sits at a itself, where a.b finds no value.
    nested = path == "a.b"
    items = [
        {"id": f"r{index}", "a": {"b": value} if nested and index % 3 else value}
        for index, value in enumerate(values)
    ]
    dataset_id, items, _ = store(conn, items, [])
    body = {"filter": {"$and": [{path: {op: bound}} for op, bound in bounds]}}

    page, total = dql.run_query(body, items, {})
    event("matched some" if total else "matched none")
    result = run_sql(conn, body, dataset_id, catalog=True)
    assert result == ([doc["id"] for doc in page], total)


labels = st.sampled_from(["cat", "dog", "a*"])
label_values = st.one_of(labels, labels, json_values)
label_annotations = st.fixed_dictionaries(
    {"label": label_values}, optional={"type": st.sampled_from(["box", "point"])}
)
label_filters = st.one_of(
    st.builds(lambda label: {"label": label}, labels),
    st.builds(
        lambda options: {"label": {"$in": options}}, st.lists(labels, max_size=3)
    ),
)
# The annotations' dataset_id column: mostly the query's dataset, sometimes another
# one that sorts before or after it, or none.
note_datasets = st.sampled_from(["D1", "D1", "D1", "D0", "D2", ""])


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    items=st.lists(documents, min_size=1, max_size=6),
    notes=st.lists(st.tuples(st.integers(0, 5), label_annotations, note_datasets)),
    label_filter=label_filters,
    extra=st.one_of(st.none(), filters),
)
def test_label_join_matches_evaluator(items, notes, label_filter, extra):
    items = [{**doc, "id": f"i{index}"} for index, doc in enumerate(items)]
    annotations = [
        {**note, "id": f"n{number}", "itemId": f"i{index}"}
        for number, (index, note, _) in enumerate(notes)
    ]
    join_filter = label_filter if extra is None else {"$and": [label_filter, extra]}
    on = {"resource": "annotations", "local": "itemId", "forigen": "id"}
    body = {"filter": {}, "join": {"on": on, "filter": join_filter}}

    by_item: dict[str, list[dict[str, Any]]] = {}
    for annotation in annotations:
        by_item.setdefault(annotation["itemId"], []).append(annotation)
    page, total = dql.run_query(body, items, by_item)
    event("matched some" if total else "matched none")
    event("foreign annotations" if any(n[2] != "D1" for n in notes) else "own only")

    # A fresh database per example, so that it contains foreign annotations only
    # when this example has some.
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA.read_text())
        dql.register_array_paths(conn, "D1", "items", items)
        dql.register_array_paths(conn, "D1", "annotations", annotations)
        conn.executemany(
            UPSERT_ITEM_SQL,
            [item_row(doc, json.dumps(doc), dataset_id="D1") for doc in items],
        )
        conn.executemany(
            "INSERT INTO annotations (id, item_id, dataset_id, json)"
            " VALUES (?, ?, ?, ?)",
            [
                (a["id"], a["itemId"], dataset, json.dumps(a))
                for a, (_, _, dataset) in zip(annotations, notes, strict=True)
            ],
        )
        result = run_sql(conn, body, "D1", catalog=True)
    except InvalidQuery as exc:
        assert "too complex for SQLite" in exc.message
        return
    finally:
        conn.close()
    assert result == ([doc["id"] for doc in page], total)
