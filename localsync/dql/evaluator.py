"""Evaluate queries on Python dicts: the reference reading of the query language.

The server runs it for small collections (tasks, datasets) and the tests compare
the SQL compiler against it. Rules, following MongoDB:

- A path is followed through objects; an array on the way is entered, so each of
  its object elements continues the path. A branch that ends early (a missing key,
  a scalar, a non-object element, an empty array) reaches "missing".
- A condition holds when some reached value passes its test; a negated condition
  (``$ne``, ``$nin``, ``$exists: false``) holds when none does.
- Tests of one value also pass when the value is an array with a passing element
  (scalar equality means "contains"), except ``$exists``, ``$match`` and nested
  object values, which treat arrays on their own terms.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from localsync.dql.parser import parse_filter, parse_join, parse_query
from localsync.dql.patterns import matches_wildcards
from localsync.dql.query import (
    AllOf,
    AnyOf,
    ArrayEquals,
    Compare,
    Condition,
    ElementMatch,
    Equals,
    Exists,
    Filter,
    IsNull,
    Nested,
    OneOf,
    Path,
    SortKey,
    Test,
    Wildcard,
)


class _Missing:
    """Marker for a path that reaches no value."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

Predicate = Callable[[Any], bool]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def kind(value: Any) -> str:
    """Return the JSON kind of ``value``: null, bool, number, string, array, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "missing" if value is MISSING else "other"


def json_equal(left: Any, right: Any) -> bool:
    """Compare two JSON values strictly: ``true``, ``1`` and ``"true"`` differ.

    Numbers compare by value (``1 == 1.0``); objects compare by keys and values,
    ignoring key order.
    """
    left_kind = kind(left)
    if left_kind != kind(right):
        return False
    if left_kind == "array":
        return len(left) == len(right) and all(map(json_equal, left, right))
    if left_kind == "object":
        return left.keys() == right.keys() and all(
            json_equal(value, right[key]) for key, value in left.items()
        )
    return bool(left == right)


def reached_values(root: Any, path: Path) -> Iterator[Any]:
    """Yield each value ``path`` reaches from ``root``, and MISSING per dead end."""
    value = root
    for index, label in enumerate(path):
        if isinstance(value, dict):
            value = value.get(label, MISSING)
            if value is MISSING:
                yield MISSING
                return
        elif isinstance(value, list) and value:
            for element in value:
                if isinstance(element, dict):
                    yield from reached_values(element, path[index:])
                else:
                    yield MISSING
            return
        else:
            yield MISSING
            return
    yield value


def compile_predicate(filter_: Filter) -> Predicate:
    """Return a function telling whether one document satisfies ``filter_``."""
    if isinstance(filter_, AllOf):
        return _all_of([compile_predicate(part) for part in filter_.parts])
    if isinstance(filter_, AnyOf):
        return _any_of([compile_predicate(part) for part in filter_.parts])
    return _compile_condition(filter_)


def _all_of(parts: list[Predicate]) -> Predicate:
    def check(doc: Any) -> bool:
        for part in parts:
            if not part(doc):
                return False
        return True

    return check


def _any_of(parts: list[Predicate]) -> Predicate:
    def check(doc: Any) -> bool:
        for part in parts:
            if part(doc):
                return True
        return False

    return check


def _compile_condition(condition: Condition) -> Predicate:
    # An empty path is the operator form of $match, testing an element as a whole.
    path = condition.path
    test = compile_test(condition.test, search_elements=bool(path))
    negated = condition.negated

    missing = test(MISSING) != negated

    def check(doc: Any) -> bool:
        # Objects are walked inline; only an array on the way needs the generator.
        value = doc
        for index, label in enumerate(path):
            if isinstance(value, dict):
                value = value.get(label, MISSING)
                if value is MISSING:
                    return missing
            elif isinstance(value, list) and value:
                reached = reached_values(value, path[index:])
                return any(test(each) for each in reached) != negated
            else:
                return missing
        return test(value) != negated

    return check


def compile_test(test: Test, *, search_elements: bool = True) -> Predicate:
    """Return a function of one reached value (or MISSING) for ``test``.

    With ``search_elements`` a value test also passes on an array with a passing
    element.
    """
    if isinstance(test, Exists):
        return lambda value: value is not MISSING
    if isinstance(test, ElementMatch):
        return _element_match(test)
    if isinstance(test, Nested):
        return _nested(test)
    if not search_elements:
        return _scalar_test(test)
    return _or_an_element(_scalar_test(test))


def _scalar_test(test: Test) -> Predicate:
    if isinstance(test, Equals):
        return _equals(test.value)
    if isinstance(test, Wildcard):
        parts = test.parts
        return lambda value: isinstance(value, str) and matches_wildcards(parts, value)
    if isinstance(test, ArrayEquals):
        array = test.value
        return lambda value: json_equal(value, array)
    if isinstance(test, Compare):
        compare, bound, bound_kind = (
            _COMPARE[test.operator],
            test.value,
            kind(test.value),
        )
        return lambda value: kind(value) == bound_kind and compare(value, bound)
    if isinstance(test, IsNull):
        return lambda value: value is None or value is MISSING
    if isinstance(test, OneOf):
        options = [_scalar_test(option) for option in test.tests]
        return lambda value: any(option(value) for option in options)
    raise TypeError(f"not a value test: {test!r}")


def _equals(expected: Any) -> Predicate:
    if isinstance(expected, bool):
        return lambda value: value is expected
    if isinstance(expected, str):
        return lambda value: isinstance(value, str) and value == expected
    return lambda value: kind(value) == "number" and value == expected


def _or_an_element(check: Predicate) -> Predicate:
    # Null elements pass IsNull this way too: {"tags": null} matches [null].
    def test(value: Any) -> bool:
        if check(value):
            return True
        return isinstance(value, list) and any(check(element) for element in value)

    return test


def _element_match(test: ElementMatch) -> Predicate:
    element_matches = compile_predicate(test.filter)
    objects_only = test.objects_only

    def check(value: Any) -> bool:
        if not isinstance(value, list):
            return False
        return any(
            element_matches(element)
            for element in value
            if isinstance(element, dict) or not objects_only
        )

    return check


def _nested(test: Nested) -> Predicate:
    below = compile_predicate(test.filter)

    def check(value: Any) -> bool:
        if isinstance(value, list):
            return any(
                isinstance(element, dict) and below(element) for element in value
            )
        return below(value)

    return check


_PREDICATES: dict[str, Predicate] = {}
_MAX_CACHED = 256


def _cached_predicate(part: str, value: object) -> Predicate:
    """Parse and compile a filter or a join once per distinct value (recent ones)."""
    # repr() keeps 1, 1.0, True and "1" apart, which a JSON dump does not for keys.
    key = f"{part}:{value!r}"
    predicate = _PREDICATES.get(key)
    if predicate is None:
        parsed = parse_filter(value) if part == "filter" else parse_join(value)
        predicate = compile_predicate(parsed)
        if len(_PREDICATES) >= _MAX_CACHED:
            _PREDICATES.clear()
        _PREDICATES[key] = predicate
    return predicate


def matches(
    filter: Mapping[str, Any],
    doc: Mapping[str, Any],
    annotations: Sequence[Mapping[str, Any]] | None = None,
    join: Mapping[str, Any] | None = None,
) -> bool:
    """Return whether ``doc`` satisfies ``filter`` and, given ``join``, has a match.

    ``join`` is the body's ``join`` object; the item then needs one of
    ``annotations`` (its own) to satisfy the join filter.
    """
    if not _cached_predicate("filter", filter)(doc):
        return False
    if join is None:
        return True
    join_matches = _cached_predicate("join", join)
    return any(join_matches(annotation) for annotation in annotations or ())


def run_query(
    body: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    annotations_by_item: Mapping[str, Sequence[Mapping[str, Any]]],
) -> tuple[list[Mapping[str, Any]], int]:
    """Run a query body on ``items``; return the requested page and the match count.

    ``annotations_by_item`` maps item ids to their annotations, for ``join``.
    """
    query = parse_query(body)
    item_matches = compile_predicate(query.filter)
    join_matches = None
    if query.join_filter is not None:
        join_matches = compile_predicate(query.join_filter)

    selected = []
    for item in items:
        if not item_matches(item):
            continue
        if join_matches is not None:
            annotations = annotations_by_item.get(item.get("id"), ())  # type: ignore[arg-type]
            if not any(join_matches(annotation) for annotation in annotations):
                continue
        selected.append(item)

    ordered = sort_documents(selected, query.sort)
    start = query.page * query.page_size
    return ordered[start : start + query.page_size], len(selected)


def sort_documents(
    docs: Sequence[Mapping[str, Any]], keys: Sequence[SortKey]
) -> list[Mapping[str, Any]]:
    """Sort by ``keys`` in order, breaking ties by ascending id.

    Values of different kinds order as null and missing, numbers, strings,
    objects, arrays, booleans (MongoDB's order); objects and arrays tie among
    themselves.
    """
    ordered = sorted(docs, key=lambda doc: sort_value(doc, ("id",)))
    for key in reversed(keys):
        # Python's sort is stable, also with reverse=True, so earlier passes break ties.
        ordered.sort(key=lambda doc: sort_value(doc, key.path), reverse=key.descending)
    return ordered


_SORT_RANK = {
    "null": 0,
    "missing": 0,
    "number": 1,
    "string": 2,
    "object": 3,
    "array": 4,
}


def sort_value(doc: Any, path: Path) -> tuple[int, Any]:
    """Return the sort key of the value at ``path``, which arrays do not extend."""
    value = doc
    for label in path:
        value = value.get(label, MISSING) if isinstance(value, dict) else MISSING
    value_kind = kind(value)
    if value_kind == "bool":
        return (5, int(value))
    if value_kind in ("number", "string"):
        return (_SORT_RANK[value_kind], value)
    return (_SORT_RANK.get(value_kind, 0), 0)
