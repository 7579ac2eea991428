"""Validate a query body (the JSON of ``Filters.prepare()``) and parse it.

Every malformed part raises :class:`~localsync.errors.InvalidQuery` with a message
naming that part. Field names are data: any string is a valid path.
"""

from __future__ import annotations

import math
from typing import Any

from localsync.dql.paths import split_path
from localsync.dql.patterns import split_wildcards
from localsync.dql.query import (
    MAX_DEPTH,
    MAX_PAGE_SIZE,
    MAX_PATH_SEGMENTS,
    MAX_PATTERN_LENGTH,
    MAX_SORT_KEYS,
    MAX_VALUES,
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
    Query,
    SortKey,
    Test,
    Wildcard,
)
from localsync.errors import InvalidQuery

COMPARISONS = frozenset({"$gt", "$gte", "$lt", "$lte"})
FIELD_OPERATORS = COMPARISONS | {"$eq", "$ne", "$in", "$nin", "$exists", "$match"}
SORT_DIRECTIONS = {"ascending": False, "descending": True}
_INT64 = 2**63


def parse_query(body: object) -> Query:
    """Parse a whole query body: ``filter``, ``join``, ``sort``, ``page``, ``pageSize``.

    Other keys (``resource`` aside) belong to the caller, such as ``update`` or
    ``references``, and are ignored here. A missing ``filter`` matches everything.
    """
    if not isinstance(body, dict):
        raise InvalidQuery(f"query body must be a JSON object, got {_show(body)}")

    filter_ = parse_filter(body.get("filter", {}))
    join = body.get("join")
    join_filter = parse_join(join) if join is not None else None
    resource = body.get("resource", "items")
    if not isinstance(resource, str):
        raise InvalidQuery(f"resource must be a string, got {_show(resource)}")

    return Query(
        filter=filter_,
        join_filter=join_filter,
        sort=_parse_sort(body.get("sort", {})),
        page=_parse_page(body.get("page", 0)),
        page_size=_parse_page_size(body.get("pageSize", MAX_PAGE_SIZE)),
        resource=resource,
    )


def parse_filter(filter_: object) -> Filter:
    """Parse one filter object; ``{}`` matches everything."""
    _check_size(filter_)
    return _parse_filter(filter_)


def _parse_filter(filter_: object) -> Filter:
    if not isinstance(filter_, dict):
        raise InvalidQuery(f"filter must be a JSON object, got {_show(filter_)}")

    parts: list[Filter] = []
    for key, value in filter_.items():
        if not isinstance(key, str):
            raise InvalidQuery(f"field names must be strings, got {key!r}")
        if key in ("$and", "$or"):
            parts.append(_parse_logical(key, value))
        elif key.startswith("$"):
            raise InvalidQuery(
                f"unknown operator {key!r} in a filter; "
                "only '$and' and '$or' may stand in place of a field name"
            )
        else:
            parts.append(_parse_field(key, value))
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _parse_logical(key: str, value: object) -> Filter:
    if not isinstance(value, list):
        raise InvalidQuery(f"{key!r} must be a list of filters, got {_show(value)}")
    parts = tuple(_parse_filter(item) for item in value)
    return AllOf(parts) if key == "$and" else AnyOf(parts)


def _parse_field(field: str, value: object) -> Filter:
    path = split_path(field)
    if len(path) > MAX_PATH_SEGMENTS:
        raise InvalidQuery(
            f"field {_show(field)} has more than {MAX_PATH_SEGMENTS} segments"
        )
    if isinstance(value, dict):
        return _parse_object_value(path, field, value)
    return Condition(path, _parse_value(field, value))


def _parse_object_value(path: Path, field: str, value: dict[Any, Any]) -> Filter:
    operators = _operator_keys(field, value)
    if not operators:
        return Condition(path, Nested(_parse_filter(value)))
    if len(operators) != len(value):
        raise InvalidQuery(
            f"value of field {field!r} mixes operators and field names: "
            f"{_show(list(value))}"
        )
    parts = [_parse_operator(path, field, op, operand) for op, operand in value.items()]
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _operator_keys(field: str, value: dict[Any, Any]) -> list[str]:
    keys = []
    for key in value:
        if not isinstance(key, str):
            raise InvalidQuery(f"field names must be strings, got {key!r} in {field!r}")
        if key.startswith("$"):
            keys.append(key)
    return keys


def _parse_operator(path: Path, field: str, operator: str, operand: object) -> Filter:
    if operator in ("$eq", "$ne"):
        if isinstance(operand, dict):
            raise InvalidQuery(
                f"{operator} of field {field!r} takes a value, not an object; "
                "use $match or nested field names to test inside objects"
            )
        return Condition(path, _parse_value(field, operand), operator == "$ne")

    if operator in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise InvalidQuery(
                f"{operator} of field {field!r} must be a list, got {_show(operand)}"
            )
        tests = tuple(_parse_listed(field, operator, item) for item in operand)
        return Condition(path, OneOf(tests), operator == "$nin")

    if operator in COMPARISONS:
        return Condition(
            path, Compare(operator, _parse_bound(field, operator, operand))
        )

    if operator == "$exists":
        if not isinstance(operand, bool):
            raise InvalidQuery(
                f"$exists of field {field!r} must be true or false, "
                f"got {_show(operand)}"
            )
        return Condition(path, Exists(), negated=not operand)

    if operator == "$match":
        return Condition(path, _parse_match(field, operand))

    if operator in ("$and", "$or"):
        raise InvalidQuery(
            f"{operator} is not an operator of field {field!r}; use $in, or put "
            f"{operator} at the top of the filter with a list of filters"
        )
    raise InvalidQuery(
        f"unknown operator {operator!r} on field {field!r}; "
        f"expected one of {', '.join(sorted(FIELD_OPERATORS))}"
    )


def _parse_listed(field: str, operator: str, item: object) -> Test:
    if isinstance(item, dict):
        raise InvalidQuery(
            f"{operator} of field {field!r} lists an object {_show(item)}; "
            "list strings, numbers, booleans, null or arrays"
        )
    return _parse_value(field, item)


def _parse_bound(
    field: str, operator: str, operand: object
) -> str | int | float | bool:
    if isinstance(operand, str):
        return operand
    if isinstance(operand, bool | int | float):
        return _check_scalar(field, operand)
    raise InvalidQuery(
        f"{operator} of field {field!r} must be a number, string or boolean, "
        f"got {_show(operand)}"
    )


def _parse_match(field: str, operand: object) -> Test:
    if not isinstance(operand, dict):
        raise InvalidQuery(
            f"$match of field {field!r} needs an object, got {_show(operand)}"
        )

    operators = [
        key for key in _operator_keys(field, operand) if key not in ("$and", "$or")
    ]
    if not operators:
        return ElementMatch(_parse_filter(operand), objects_only=True)
    if len(operators) != len(operand):
        raise InvalidQuery(
            f"$match of field {field!r} mixes operators and field names: "
            f"{_show(list(operand))}"
        )
    parts = [
        _parse_operator((), f"{field}.$match", op, value)
        for op, value in operand.items()
    ]
    element_filter = parts[0] if len(parts) == 1 else AllOf(tuple(parts))
    return ElementMatch(element_filter, objects_only=False)


def _parse_value(field: str, value: object) -> Test:
    """Parse a plain value or the operand of ``$eq``, ``$ne`` or one ``$in`` item."""
    if value is None:
        return IsNull()
    if isinstance(value, str):
        return _parse_string(field, value)
    if isinstance(value, bool | int | float):
        return Equals(_check_scalar(field, value))
    if isinstance(value, list):
        return ArrayEquals(_check_json(field, value))
    raise InvalidQuery(f"value of field {field!r} is not JSON: {_show(value)}")


def _parse_string(field: str, value: str) -> Test:
    parts = split_wildcards(value)
    if len(parts) == 1:
        return Equals(parts[0])
    if len(value) > MAX_PATTERN_LENGTH:
        raise InvalidQuery(
            f"wildcard value of field {field!r} is longer than "
            f"{MAX_PATTERN_LENGTH} characters"
        )
    return Wildcard(parts)


def _check_scalar(field: str, value: int | float | bool) -> int | float | bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        raise InvalidQuery(
            f"integer {value} of field {field!r} does not fit in 64 bits"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidQuery(f"number {value} of field {field!r} is not finite")
    return value


def _check_json(field: str, value: Any) -> Any:
    """Check that ``value`` (an array operand) contains JSON values only."""
    if isinstance(value, list):
        for item in value:
            _check_json(field, item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidQuery(
                    f"object keys must be strings, got {key!r} in {field!r}"
                )
            _check_json(field, item)
    elif isinstance(value, bool | int | float):
        _check_scalar(field, value)
    elif value is not None and not isinstance(value, str):
        raise InvalidQuery(f"value of field {field!r} is not JSON: {_show(value)}")
    return value


def _check_size(filter_: object) -> None:
    """Reject a filter nested deeper than MAX_DEPTH or holding over MAX_VALUES values.

    The walk is iterative, so a hostile body cannot exhaust the Python stack
    before it is rejected.
    """
    pending: list[tuple[object, int]] = [(filter_, 1)]
    count = 0
    while pending:
        value, depth = pending.pop()
        count += 1
        if count > MAX_VALUES:
            raise InvalidQuery(
                f"filter has more than {MAX_VALUES} values; "
                "split it into several queries"
            )
        if isinstance(value, str):
            _check_text(value)
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise InvalidQuery(f"filter is nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key in value:
                    if isinstance(key, str):
                        _check_text(key)
            items = value.values() if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)


def _check_text(text: str) -> None:
    """Reject a string that has no UTF-8 form: it holds an unpaired surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidQuery(
            f"filter string {_show(text)} is not valid Unicode: it contains an "
            f"unpaired surrogate at position {exc.start}"
        ) from exc


def parse_join(join: object) -> Filter:
    """Parse a body's ``join`` object and return its annotation filter."""
    if not isinstance(join, dict):
        raise InvalidQuery(f"join must be a JSON object, got {_show(join)}")

    on = join.get("on", {})
    if not isinstance(on, dict):
        raise InvalidQuery(f"join 'on' must be a JSON object, got {_show(on)}")
    resource = on.get("resource", "annotations")
    if resource != "annotations":
        raise InvalidQuery(
            f"join resource must be 'annotations', got {_show(resource)}"
        )
    local = on.get("local", "itemId")
    # dtlpy spells the key "forigen"; the correct spelling is accepted too.
    foreign = on.get("forigen", on.get("foreign", "id"))
    if local != "itemId" or foreign != "id":
        raise InvalidQuery(
            "join must link annotation 'itemId' to item 'id', got "
            f"local={_show(local)}, forigen={_show(foreign)}"
        )

    return parse_filter(join.get("filter", {}))


def _parse_sort(sort: object) -> tuple[SortKey, ...]:
    if not isinstance(sort, dict):
        raise InvalidQuery(
            f"sort must be an object of field: direction, got {_show(sort)}"
        )
    if len(sort) > MAX_SORT_KEYS:
        raise InvalidQuery(f"sort has more than {MAX_SORT_KEYS} fields")
    keys = []
    for field, direction in sort.items():
        if not isinstance(field, str):
            raise InvalidQuery(f"sort field names must be strings, got {field!r}")
        _check_text(field)
        if direction not in SORT_DIRECTIONS:
            raise InvalidQuery(
                f"sort direction of {field!r} must be 'ascending' or 'descending', "
                f"got {_show(direction)}"
            )
        path = split_path(field)
        if len(path) > MAX_PATH_SEGMENTS:
            raise InvalidQuery(
                f"sort field {_show(field)} has more than {MAX_PATH_SEGMENTS} segments"
            )
        keys.append(SortKey(path, SORT_DIRECTIONS[direction]))
    return tuple(keys)


def _parse_page(page: object) -> int:
    if isinstance(page, bool) or not isinstance(page, int) or page < 0:
        raise InvalidQuery(f"page must be an integer of 0 or more, got {_show(page)}")
    return page


def _parse_page_size(page_size: object) -> int:
    """Return pageSize, clipped to MAX_PAGE_SIZE as ``Filters.prepare()`` does."""
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise InvalidQuery(
            f"pageSize must be an integer from 1 to {MAX_PAGE_SIZE}, "
            f"got {_show(page_size)}"
        )
    return min(page_size, MAX_PAGE_SIZE)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
