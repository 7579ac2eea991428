"""The query language: dtlpy ``Filters`` JSON evaluated in SQL and in Python.

``compile_query`` turns a query body into SQL on the item tables of
``schema/sqlite/items.sql``; ``matches`` and ``run_query`` evaluate the same rules on
Python dicts. Both raise :class:`localsync.errors.InvalidQuery` for a malformed
body.
"""

from localsync.dql.catalog import (
    create_path_index,
    load_array_paths,
    register_array_paths,
)
from localsync.dql.dialect import Dialect, SqliteDialect, get_dialect
from localsync.dql.evaluator import matches, run_query
from localsync.dql.parser import parse_filter, parse_query
from localsync.dql.paths import array_paths_of
from localsync.dql.query import MAX_DEPTH, MAX_PAGE_SIZE, MAX_VALUES, Query
from localsync.dql.statements import CompiledQuery, compile_filter, compile_query

__all__ = [
    "MAX_DEPTH",
    "MAX_PAGE_SIZE",
    "MAX_VALUES",
    "CompiledQuery",
    "Dialect",
    "Query",
    "SqliteDialect",
    "array_paths_of",
    "compile_filter",
    "compile_query",
    "create_path_index",
    "get_dialect",
    "load_array_paths",
    "matches",
    "parse_filter",
    "parse_query",
    "register_array_paths",
    "run_query",
]
