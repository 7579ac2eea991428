"""Parsed form of a query body: filters, tests on one value, sort keys and paging.

The parser builds these from the JSON that ``Filters.prepare()`` sends; the SQL
compiler and the Python evaluator both consume them, so the two share one reading
of every query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

# Limits on one query body. Past them the parser raises InvalidQuery.
MAX_DEPTH = 32  # nesting of objects and lists inside a filter
MAX_VALUES = 10_000  # JSON values in one filter (the join filter counts apart)
MAX_PATH_SEGMENTS = 32  # dotted segments in one field name
MAX_PATTERN_LENGTH = 10_000  # characters in one wildcard value
MAX_SORT_KEYS = 16
MAX_PAGE_SIZE = 1000  # larger pageSize values are clipped, as dtlpy does

Scalar: TypeAlias = str | int | float | bool
Path: TypeAlias = tuple[str, ...]


@dataclass(frozen=True)
class Equals:
    """The value equals ``value`` (a string, number or boolean), exactly typed."""

    value: Scalar


@dataclass(frozen=True)
class Wildcard:
    """A string matching ``parts`` joined by ``*`` wildcards (any run of characters).

    ``parts`` contains the literal text between the wildcards, so it has at least two
    entries; ``"/a/*.jpg"`` is ``("/a/", ".jpg")``.
    """

    parts: tuple[str, ...]


@dataclass(frozen=True)
class IsNull:
    """The value is null or missing."""


@dataclass(frozen=True)
class ArrayEquals:
    """The value is an array equal to ``value``, element by element."""

    value: list[Any]


@dataclass(frozen=True)
class OneOf:
    """At least one of ``tests`` passes (the parsed form of ``$in``)."""

    tests: tuple[Test, ...]


@dataclass(frozen=True)
class Compare:
    """The value compares to ``value`` by ``operator`` (``$gt``, ``$gte``, ...).

    Only values of the same kind compare: numbers with numbers, strings with strings,
    booleans with booleans.
    """

    operator: str
    value: Scalar


@dataclass(frozen=True)
class Exists:
    """The value is present (null counts as present)."""


@dataclass(frozen=True)
class ElementMatch:
    """The value is an array with one element that satisfies ``filter`` (``$match``).

    With ``objects_only`` (the document form, whose keys are field names) only
    object elements are tried. Otherwise (the operator form) ``filter`` contains
    conditions with an empty path that test the element itself.
    """

    filter: Filter
    objects_only: bool


@dataclass(frozen=True)
class Nested:
    """An object value without operator keys, such as ``{"status": {"$in": [...]}}``.

    On an array one object element must satisfy all of ``filter``; on anything else
    ``filter`` applies below the value, as if its field names were appended to the
    path.
    """

    filter: Filter


Test: TypeAlias = (
    Equals
    | Wildcard
    | IsNull
    | ArrayEquals
    | OneOf
    | Compare
    | Exists
    | ElementMatch
    | Nested
)


@dataclass(frozen=True)
class Condition:
    """``test`` holds for some value reached by ``path``; ``negated`` inverts that.

    A path that crosses an array reaches every element, so ``negated`` means that
    no reached value passes the test (the reading of ``$ne``, ``$nin`` and
    ``$exists: false``).
    """

    path: Path
    test: Test
    negated: bool = False


@dataclass(frozen=True)
class AllOf:
    """Every part holds; no parts means true."""

    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class AnyOf:
    """At least one part holds; no parts means false."""

    parts: tuple[Filter, ...]


Filter: TypeAlias = Condition | AllOf | AnyOf

MATCH_ALL = AllOf(())


@dataclass(frozen=True)
class SortKey:
    path: Path
    descending: bool


@dataclass(frozen=True)
class Query:
    """A whole query body: filter, optional annotation join, sort and one page."""

    filter: Filter
    join_filter: Filter | None
    sort: tuple[SortKey, ...]
    page: int
    page_size: int
    resource: str
