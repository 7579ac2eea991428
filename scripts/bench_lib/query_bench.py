"""Scenario: local queries through ``Replica.query`` against hand-written SQL.

Each query is built with ``localsync.filters.Filters`` as an SDK user would, and
paired with the SQL that a programmer familiar with the schema would write for the same
result on the same file, using the same indexes. Both sides return the first page
(up to 1,000 items, parsed from JSON) and the total, except the count query, which
returns only the total.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench_lib.datasets import Dataset
from bench_lib.timing import timed
from localsync.filters import Filters
from localsync.store import Replica

PAGE_SIZE = 1000
DEFAULT_FILTER = "dataset_id = :dataset AND hidden = 0 AND type = 'file'"

Rows = tuple[list[str], int]


@dataclass
class QueryCase:
    """One query: its Filters body and the equivalent hand-written SQL."""

    key: str
    title: str
    target_seconds: float | None
    body: dict[str, Any]
    where_sql: str
    params: dict[str, Any]
    count_only: bool = False


def query_cases(folders: list[str], task_id: str) -> list[QueryCase]:
    """Return the query cases for a dataset with these folders and this task."""
    folder = folders[len(folders) // 2]
    cases = []

    filters = Filters()
    filters.add(field="dir", values=folder)
    filters.add(field="annotated", values=True)
    cases.append(
        QueryCase(
            "query_dir_annotated",
            f"Folder and annotated, first page ({folder!r})",
            0.050,
            _body(filters),
            "dir = :folder AND annotated = 1",
            {"folder": folder},
        )
    )

    filters = Filters()
    filters.add(field="metadata.user.score", values=50, operator="gt")
    cases.append(
        QueryCase(
            "query_score_count",
            "Count of metadata.user.score > 50 (expression index)",
            1.0,
            _body(filters),
            "json_extract(items.json, '$.metadata.user.score') > 50",
            {},
            count_only=True,
        )
    )

    filters = Filters()
    filters.add(field="metadata.user.score", values=20, operator="gte")
    filters.add(field="metadata.user.score", values=29, operator="lte")
    cases.append(
        QueryCase(
            "query_score_range",
            "Range 20 <= metadata.user.score <= 29, first page",
            None,
            _body(filters),
            "json_extract(items.json, '$.metadata.user.score') BETWEEN 20 AND 29",
            {},
        )
    )

    filters = Filters()
    filters.add(
        field="metadata.system.refs",
        values={"id": task_id, "metadata": {"status": "discard"}},
        operator="match",
    )
    cases.append(
        QueryCase(
            "query_refs_match",
            "$match on refs: task and status discard, first page",
            None,
            _body(filters),
            "EXISTS (SELECT 1 FROM json_each(items.json, '$.metadata.system.refs')"
            " AS ref WHERE json_extract(ref.value, '$.id') = :task"
            " AND json_extract(ref.value, '$.metadata.status') = 'discard')",
            {"task": task_id},
        )
    )

    filters = Filters()
    filters.add_join(field="label", values="Poll Dorset")
    cases.append(
        QueryCase(
            "query_label_join",
            "Join on annotation label 'Poll Dorset', first page",
            None,
            _body(filters),
            "id IN (SELECT item_id FROM annotations"
            " WHERE dataset_id = :dataset AND label = 'Poll Dorset')",
            {},
        )
    )
    return cases


def _body(filters: Filters) -> dict[str, Any]:
    filters.page_size = PAGE_SIZE
    return filters.prepare()


def localsync_runner(replica: Replica, case: QueryCase) -> Callable[[], Rows]:
    if case.count_only:

        def count() -> Rows:
            compiled = replica.compile(case.body)
            row = replica.conn.execute(compiled.count_sql, compiled.count_params)
            return [], int(row.fetchone()[0])

        return count

    def page() -> Rows:
        items, total = replica.query(case.body)
        return [item["id"] for item in items], total

    return page


def hand_written_runner(
    conn: sqlite3.Connection, dataset: Dataset, case: QueryCase
) -> Callable[[], Rows]:
    where = f"{DEFAULT_FILTER} AND {case.where_sql}"
    params = {"dataset": dataset.dataset_id, **case.params}
    count_sql = f"SELECT count(*) FROM items WHERE {where}"
    page_sql = f"SELECT id, json FROM items WHERE {where} ORDER BY id LIMIT {PAGE_SIZE}"

    def run() -> Rows:
        total = conn.execute(count_sql, params).fetchone()[0]
        if case.count_only:
            return [], total
        rows = conn.execute(page_sql, params).fetchall()
        items = [json.loads(row[1]) for row in rows]
        return [item["id"] for item in items], total

    return run


def query_plans(
    replica: Replica, conn: sqlite3.Connection, dataset: Dataset, case: QueryCase
) -> dict[str, list[str]]:
    """Return SQLite's plan of each statement, to explain how a time grows."""
    compiled = replica.compile(case.body)
    where = f"{DEFAULT_FILTER} AND {case.where_sql}"
    params = {"dataset": dataset.dataset_id, **case.params}
    plans = {
        "localsync count": _plan(conn, compiled.count_sql, compiled.count_params),
        "hand-written count": _plan(
            conn, f"SELECT count(*) FROM items WHERE {where}", params
        ),
    }
    if not case.count_only:
        plans["localsync page"] = _plan(
            conn, compiled.select_sql, compiled.select_params
        )
        plans["hand-written page"] = _plan(
            conn,
            f"SELECT id, json FROM items WHERE {where} ORDER BY id LIMIT {PAGE_SIZE}",
            params,
        )
    return plans


def http_runner(
    client: httpx.Client, dataset_id: str, case: QueryCase
) -> Callable[[], Rows]:
    """Return a runner posting the query body to the server, as dtlpy does.

    The server has no count-only call, so the count case fetches a page too.
    """

    def run() -> Rows:
        response = client.post(f"/datasets/{dataset_id}/query", json=case.body)
        response.raise_for_status()
        page = response.json()
        total = int(page["totalItemsCount"])
        if case.count_only:
            return [], total
        return [item["id"] for item in page["items"]], total

    return run


def run_http_case(
    client: httpx.Client,
    dataset_id: str,
    case: QueryCase,
    runs: int,
    expected: Rows,
    *,
    within: Callable[[float], bool],
) -> dict[str, Any]:
    """Time the query over HTTP after one untimed warm-up; compare with ``expected``."""
    run = http_runner(client, dataset_id, case)
    actual = run()
    samples: list[float] = []
    for _ in range(runs):
        seconds, _result = timed(run)
        samples.append(seconds)
        if not within(seconds):
            break
    return {"samples": samples, "matches": actual == expected}


def _plan(conn: sqlite3.Connection, statement: str, params: Any) -> list[str]:
    rows = conn.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
    return [row[3] for row in rows]


def run_query_case(
    replica: Replica,
    conn: sqlite3.Connection,
    dataset: Dataset,
    case: QueryCase,
    runs: int,
    *,
    within: Callable[[float], bool],
) -> dict[str, Any]:
    """Time both sides of one query, alternating, after one untimed warm-up each.

    ``within(seconds)`` returns whether one more pair of that length fits the time cap.
    """
    ours = localsync_runner(replica, case)
    theirs = hand_written_runner(conn, dataset, case)
    expected, actual = theirs(), ours()

    localsync_seconds: list[float] = []
    reference_seconds: list[float] = []
    for _ in range(runs):
        seconds, _result = timed(ours)
        localsync_seconds.append(seconds)
        seconds, _result = timed(theirs)
        reference_seconds.append(seconds)
        if not within(localsync_seconds[-1] + reference_seconds[-1]):
            break
    return {
        "localsync": localsync_seconds,
        "reference": reference_seconds,
        "result": actual,
        "reference_matches": actual == expected,
        "matches": expected[1],
        "page": len(expected[0]),
        "plans": query_plans(replica, conn, dataset, case),
    }
