"""Whole SQL statements for a query body: the page, the count and the bare condition."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localsync.dql.compiler import TABLE_COLUMNS, FilterCompiler
from localsync.dql.dialect import (
    Dialect,
    Node,
    PathNode,
    Sql,
    ValueNode,
    all_of,
    get_dialect,
    sql,
)
from localsync.dql.parser import parse_filter, parse_query
from localsync.dql.paths import is_identifier, may_be_array
from localsync.dql.query import (
    AllOf,
    Condition,
    Equals,
    Filter,
    OneOf,
    Path,
    Query,
    SortKey,
)
from localsync.errors import InvalidQuery


@dataclass(frozen=True)
class CompiledQuery:
    """SQL for one query body on one dataset, with its bound parameters.

    ``select_sql`` returns ``(id, json)`` rows of the requested page in order;
    ``count_sql`` returns the number of all matches; ``where_sql`` is the bare
    condition (dataset included) on the table alias ``alias``, for callers that
    write their own statements.
    """

    select_sql: str
    select_params: tuple[Any, ...]
    count_sql: str
    count_params: tuple[Any, ...]
    where_sql: str
    where_params: tuple[Any, ...]
    table: str
    alias: str


def compile_query(
    body: Mapping[str, Any],
    *,
    dataset_id: str,
    array_paths: frozenset[str] | None = frozenset(),
    dialect: str | Dialect = "sqlite",
    annotation_array_paths: frozenset[str] | None = None,
) -> CompiledQuery:
    """Compile a query body to SQL on the ``items`` (or ``annotations``) table.

    ``array_paths`` and ``annotation_array_paths`` are the catalogs of dotted paths
    that contain arrays in the dataset's items and annotations (see
    :func:`load_array_paths`). ``None`` assumes that any path may contain one,
    which is always right but gives slower SQL. It is the default for annotations,
    which only the join reads. A join that requires certain labels uses the
    annotations' label index only when their catalog is given.
    """
    query = parse_query(body)
    table = _table_of(query)
    sql_dialect = get_dialect(dialect)
    where = _where(
        query, sql_dialect, table, dataset_id, array_paths, annotation_array_paths
    )

    order = _order_by(sql_dialect, table, query.sort)
    paging = sql(
        "LIMIT {} OFFSET {}",
        sql_dialect.param(query.page_size),
        sql_dialect.param(query.page * query.page_size),
    )
    select = sql(
        f"SELECT {table}.id, {table}.json FROM {table} AS {table}"
        " WHERE {} ORDER BY {} {}",
        where,
        order,
        paging,
    )
    count = sql(f"SELECT count(*) FROM {table} AS {table} WHERE {{}}", where)
    sql_dialect.check(select)
    sql_dialect.check(_with_margin(table, where))

    return CompiledQuery(
        select_sql=select.text,
        select_params=select.params,
        count_sql=count.text,
        count_params=count.params,
        where_sql=where.text,
        where_params=where.params,
        table=table,
        alias=table,
    )


def _table_of(query: Query) -> str:
    table = query.resource
    if table not in TABLE_COLUMNS:
        raise InvalidQuery(
            f"resource {table!r} cannot be queried in SQL; expected 'items' or "
            "'annotations'"
        )
    if query.join_filter is not None and table != "items":
        raise InvalidQuery(f"join is only supported on items, not on {table!r}")
    return table


def _where(
    query: Query,
    dialect: Dialect,
    table: str,
    dataset_id: str,
    array_paths: frozenset[str] | None,
    annotation_array_paths: frozenset[str] | None,
) -> Sql:
    """Return the condition of ``query`` on one dataset, join included."""
    aliases = itertools.count(1)
    compiler = FilterCompiler(
        dialect,
        table,
        array_paths=array_paths,
        columns=TABLE_COLUMNS[table],
        aliases=aliases,
    )
    parts = [
        sql(f"{table}.dataset_id = {{}}", dialect.param(dataset_id)),
        compiler.compile(query.filter),
    ]
    if query.join_filter is None:
        return all_of(parts)

    annotations = FilterCompiler(
        dialect,
        "annotations",
        array_paths=annotation_array_paths,
        columns=TABLE_COLUMNS["annotations"],
        aliases=aliases,
    )
    condition = annotations.compile(query.join_filter)
    if dialect.label_index_join and _tests_label(
        query.join_filter, annotation_array_paths
    ):
        return all_of([*parts, _label_index_join(dialect, dataset_id, condition)])
    joined = sql(
        "EXISTS (SELECT 1 FROM annotations AS annotations"
        " WHERE annotations.item_id = items.id AND {})",
        condition,
    )
    return all_of([*parts, joined])


def _tests_label(filter_: Filter, array_paths: frozenset[str] | None) -> bool:
    """Return whether ``filter_`` requires one of some labels, on the label column.

    Such a filter has a condition at the top, alone or ANDed, of ``label`` equal
    to a string or in a list of strings. The catalog must list no array at
    ``label``, because only then the compiler tests the column, not the JSON.
    """
    if isinstance(filter_, AllOf):
        return any(_tests_label(part, array_paths) for part in filter_.parts)
    if not isinstance(filter_, Condition) or filter_.negated:
        return False
    if filter_.path != ("label",) or may_be_array(array_paths, ("label",)):
        return False
    test = filter_.test
    options = test.tests if isinstance(test, OneOf) else (test,)
    return bool(options) and all(
        isinstance(option, Equals) and isinstance(option.value, str)
        for option in options
    )


def _label_index_join(dialect: Dialect, dataset_id: str, condition: Sql) -> Sql:
    """Return the join as an IN list of item ids that the label index finds.

    The index (dataset_id, label) finds the matching annotations of the query's
    dataset, and SQLite looks up their items by id. That takes a fraction of
    the time of an EXISTS run for every item. An annotation's dataset_id is its
    own ``datasetId``, so an annotation of another dataset can still belong to
    an item of this one. The list's second part adds those: while the table
    contains any annotation of another dataset, it looks up the annotations of
    every item of the dataset, as the EXISTS would. Otherwise it reads no row.
    """
    dataset = dialect.param(dataset_id)
    foreign = sql(
        "(EXISTS (SELECT 1 FROM annotations AS other WHERE other.dataset_id < {})"
        " OR EXISTS (SELECT 1 FROM annotations AS other WHERE other.dataset_id > {}))",
        dataset,
        dataset,
    )
    # SQLite 3.40 evaluates a constant condition in a compound SELECT's arm for
    # every row it scans, so ``foreign`` decides the key of the seek instead: the
    # key is NULL, and the seek finds no item, when no foreign annotation exists.
    # The test of dataset_id is "<>" so that SQLite does not scan by it.
    return sql(
        "items.id IN (SELECT annotations.item_id FROM annotations AS annotations"
        " WHERE annotations.dataset_id = {} AND {}"
        " UNION ALL SELECT annotations.item_id FROM annotations AS annotations"
        " WHERE annotations.item_id IN (SELECT own.id FROM items AS own"
        " WHERE own.dataset_id = CASE WHEN {} THEN {} END)"
        " AND annotations.dataset_id <> {} AND {})",
        dataset,
        condition,
        foreign,
        dataset,
        dataset,
        condition,
    )


def compile_filter(
    filter: Mapping[str, Any],
    *,
    alias: str,
    array_paths: frozenset[str] | None = frozenset(),
    dialect: str | Dialect = "sqlite",
    table: str | None = None,
) -> tuple[str, tuple[Any, ...]]:
    """Compile one filter to a condition on the ``json`` column of table ``alias``.

    ``table`` ("items" or "annotations") lets the condition use that table's
    generated columns; any other table only needs a ``json`` column.
    """
    compiler = FilterCompiler(
        get_dialect(dialect),
        alias,
        array_paths=array_paths,
        columns=TABLE_COLUMNS.get(table or "", {}),
    )
    condition = compiler.compile(parse_filter(filter))
    compiler.dialect.check(_with_margin(f"checked AS {alias}", condition))
    return condition.text, condition.params


def _with_margin(table: str, where: Sql) -> Sql:
    """Return a statement nesting ``where`` one subquery deep, as callers may."""
    return sql(
        f"SELECT 1 WHERE EXISTS (SELECT 1 FROM {table} WHERE EXISTS"
        f" (SELECT 1 FROM {table} WHERE {{}}))",
        where,
    )


def _order_by(dialect: Dialect, alias: str, keys: tuple[SortKey, ...]) -> Sql:
    # NOTE: only a sort by id can follow an index. Other fields sort by kind rank
    # first, so sorting a large match set by createdAt, say, sorts every match.
    terms = []
    for key in keys:
        direction = "DESC" if key.descending else "ASC"
        if key.path == ("id",):
            terms.append(Sql(f"{alias}.id {direction}"))
            continue
        rank, value = dialect.sort_terms(_sort_node(dialect, alias, key.path))
        terms.append(sql(f"{{}} {direction}", rank))
        terms.append(sql(f"{{}} {direction}", value))
    if all(key.path != ("id",) for key in keys):
        terms.append(Sql(f"{alias}.id ASC"))
    return sql(", ".join("{}" for _ in terms), *terms)


def _sort_node(dialect: Dialect, alias: str, path: Path) -> Node:
    """Return the node at ``path`` without entering arrays, as sorting reads it."""
    node: Node = PathNode(Sql(f"{alias}.json"))
    for label in path:
        if is_identifier(label):
            node = dialect.child(node, label)
            continue
        # A label that is not an identifier is read with scalar json_each lookups.
        members = dialect.members(node)
        key = dialect.key_equals("m", label)
        node = ValueNode(
            sql("(SELECT m.value FROM {} AS m WHERE {})", members, key),
            sql("(SELECT m.type FROM {} AS m WHERE {})", members, key),
        )
    return node
