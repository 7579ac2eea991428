"""Compile parsed filters to SQL conditions on a table's ``json`` column.

The SQL returns the same matches as :mod:`localsync.dql.evaluator`, provided the
array catalog lists every path that contains an array. Field names never become SQL
text unless they are plain identifiers; other labels are bound parameters
compared with ``json_each`` keys.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from localsync.dql.dialect import (
    FALSE,
    Bound,
    Dialect,
    Node,
    PathNode,
    Sql,
    all_of,
    any_of,
    sql,
)
from localsync.dql.evaluator import MISSING, compile_test
from localsync.dql.paths import is_identifier, may_be_array
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
    Test,
    Wildcard,
)


@dataclass(frozen=True)
class Column:
    """A table column holding a top-level JSON field, NULL when of another kind."""

    name: str
    kind: str  # "string" or "bool"


ITEM_COLUMNS = {
    "id": Column("id", "string"),
    "filename": Column("filename", "string"),
    "dir": Column("dir", "string"),
    "name": Column("name", "string"),
    "type": Column("type", "string"),
    "hidden": Column("hidden", "bool"),
    "annotated": Column("annotated", "bool"),
    "createdAt": Column("created_at", "string"),
    "updatedAt": Column("updated_at", "string"),
}
ANNOTATION_COLUMNS = {
    "id": Column("id", "string"),
    "itemId": Column("item_id", "string"),
    "label": Column("label", "string"),
    "type": Column("type", "string"),
}
TABLE_COLUMNS: dict[str, Mapping[str, Column]] = {
    "items": ITEM_COLUMNS,
    "annotations": ANNOTATION_COLUMNS,
}


class Scope:
    """The json_each sources and key tests that a path has entered so far."""

    def __init__(self) -> None:
        self.sources: list[tuple[Sql, str]] = []
        self.conditions: list[Sql] = []

    def add(self, alias: str, source: Sql, condition: Sql | None = None) -> None:
        self.sources.append((source, alias))
        if condition is not None:
            self.conditions.append(condition)

    def wrap(self, dialect: Dialect, condition: Sql) -> Sql:
        if not self.sources:
            return condition
        return dialect.exists(self.sources, all_of([*self.conditions, condition]))


class FilterCompiler:
    """Writes the SQL condition of filters on rows of one table alias."""

    def __init__(
        self,
        dialect: Dialect,
        alias: str,
        *,
        array_paths: frozenset[str] | None,
        columns: Mapping[str, Column],
        aliases: Iterator[int] | None = None,
    ) -> None:
        if not is_identifier(alias):
            raise ValueError(f"table alias {alias!r} is not an SQL identifier")
        self.dialect = dialect
        self.alias = alias
        self.array_paths = array_paths
        self.columns = columns
        self._aliases = aliases if aliases is not None else itertools.count(1)

    def compile(self, filter_: Filter) -> Sql:
        root = PathNode(Sql(f"{self.alias}.json"))
        return self._filter(filter_, root, (), at_table=True)

    def _new_alias(self) -> str:
        return f"j{next(self._aliases)}"

    def _filter(self, filter_: Filter, node: Node, prefix: Path, at_table: bool) -> Sql:
        if isinstance(filter_, AllOf):
            return self._all_of(filter_.parts, node, prefix, at_table)
        if isinstance(filter_, AnyOf):
            return any_of(
                [self._filter(p, node, prefix, at_table) for p in filter_.parts]
            )
        return self._condition(filter_, node, prefix, at_table)

    def _all_of(
        self, parts: tuple[Filter, ...], node: Node, prefix: Path, at_table: bool
    ) -> Sql:
        """Return SQL for all ``parts``, with number bounds on one value merged.

        The bounds of a range such as ``20 <= score <= 29`` come as two conditions.
        Written as one, they need no test of the kind when the range excludes 0
        and 1, and no bound below the strings when an upper bound keeps them out.
        An expression index then serves both bounds, and only them.
        """
        bounds = [self._number_bound(part, prefix) for part in parts]
        ranges: dict[Path, list[Bound]] = {}
        for found in bounds:
            if found is not None:
                ranges.setdefault(found[0], []).append(found[1])

        compiled = []
        for part, found in zip(parts, bounds, strict=True):
            if found is None:
                compiled.append(self._filter(part, node, prefix, at_table))
            elif found[0] in ranges:
                target = self._child(node, found[0])
                compiled.append(self.dialect.number_range(target, ranges.pop(found[0])))
        return all_of(compiled)

    def _number_bound(self, part: Filter, prefix: Path) -> tuple[Path, Bound] | None:
        """Return the path and bound of a number bound on one value, else None.

        The path reaches one value, because no array can be on the way or at the
        end. So the condition is true exactly when that value is a number within
        the bound.
        """
        if not isinstance(part, Condition) or part.negated:
            return None
        test = part.test
        if not isinstance(test, Compare) or isinstance(test.value, bool | str):
            return None
        if not all(is_identifier(label) for label in part.path):
            return None
        steps = range(1, len(part.path) + 1)
        if any(self._may_be_array((*prefix, *part.path[:n])) for n in steps):
            return None
        return part.path, (test.operator, test.value)

    def _child(self, node: Node, path: Path) -> Node:
        for label in path:
            node = self.dialect.child(node, label)
        return node

    def _condition(
        self, condition: Condition, node: Node, prefix: Path, at_table: bool
    ) -> Sql:
        path = condition.path
        expression = None
        if at_table and len(path) == 1:
            expression = self._column_test(path[0], condition.test)
        if expression is None and not path:
            expression = self._leaf(node, prefix, condition.test, itself=True)
        if expression is None:
            expression = self._walk(node, prefix, path, condition.test)
        if condition.negated:
            return self.dialect.negate(expression)
        return expression

    def _may_be_array(self, path: Path) -> bool:
        return may_be_array(self.array_paths, path)

    def _walk(self, node: Node, prefix: Path, steps: Path, test: Test) -> Sql:
        """Follow ``steps`` from ``node`` and test every value they reach.

        Arrays on the way, and labels that are not identifiers, become json_each
        sources of one EXISTS, so a long path adds one subquery level, not one
        per step: SQLite's parser stack allows only about ten nested ones.
        """
        dialect = self.dialect
        scope = Scope()
        while steps:
            label, steps = steps[0], steps[1:]
            prefix = (*prefix, label)
            if not is_identifier(label):
                if compile_test(test)(MISSING):
                    # A missing key passes the test, which takes its own subquery.
                    inner = self._missing_key_step(node, prefix, label, steps, test)
                    return scope.wrap(dialect, inner)
                alias = self._new_alias()
                key = dialect.key_equals(alias, label)
                scope.add(alias, dialect.members(node), key)
                node = dialect.row(alias)
            else:
                node = dialect.child(node, label)
            if steps and self._may_be_array(prefix):
                alias = self._new_alias()
                scope.add(alias, dialect.traversal_elements(node))
                node = dialect.row(alias)
        return scope.wrap(dialect, self._leaf(node, prefix, test))

    def _missing_key_step(
        self, node: Node, prefix: Path, label: str, rest: Path, test: Test
    ) -> Sql:
        # The key's value is tested if present; its absence passes on its own.
        dialect = self.dialect
        alias = self._new_alias()
        member: Node = dialect.row(alias)
        scope = Scope()
        scope.add(alias, dialect.members(node), dialect.key_equals(alias, label))
        if rest and self._may_be_array(prefix):
            element_alias = self._new_alias()
            scope.add(element_alias, dialect.traversal_elements(member))
            member = dialect.row(element_alias)
        present = scope.wrap(dialect, self._walk(member, prefix, rest, test))

        absent_alias = self._new_alias()
        key = dialect.key_equals(absent_alias, label)
        found = dialect.exists([(dialect.members(node), absent_alias)], key)
        return any_of([present, dialect.negate(found)])

    def _leaf(self, node: Node, prefix: Path, test: Test, itself: bool = False) -> Sql:
        """Return SQL testing the value at ``node``, which the path ``prefix`` reached.

        ``itself`` marks the operator form of $match, which tests each array
        element as a whole: arrays nested in the element are not searched for a
        passing value, though a nested $match still enters them.
        """
        dialect = self.dialect
        array_possible = itself or self._may_be_array(prefix)
        if isinstance(test, Exists):
            return dialect.is_present(node)
        if isinstance(test, ElementMatch):
            return self._element_match(node, prefix, test, array_possible)
        if isinstance(test, Nested):
            return self._nested(node, prefix, test, array_possible)

        direct = self._value_test(node, test)
        if itself or not array_possible:
            return direct
        alias = self._new_alias()
        in_element = self._value_test(dialect.row(alias), test)
        any_element = dialect.exists([(dialect.elements(node), alias)], in_element)
        return any_of(
            [direct, all_of([dialect.has_kind(node, ["array"]), any_element])]
        )

    def _element_match(
        self, node: Node, prefix: Path, test: ElementMatch, array_possible: bool
    ) -> Sql:
        if not array_possible:
            return FALSE
        dialect = self.dialect
        alias = self._new_alias()
        element = dialect.row(alias)
        condition = self._filter(test.filter, element, prefix, at_table=False)
        if test.objects_only:
            condition = all_of([dialect.has_kind(element, ["object"]), condition])
        return dialect.any_element(node, alias, condition)

    def _nested(
        self, node: Node, prefix: Path, test: Nested, array_possible: bool
    ) -> Sql:
        if not array_possible:
            return self._filter(test.filter, node, prefix, at_table=False)

        # One source holds the object elements of an array, or else the value
        # itself, so the nested filter is written once for both cases.
        dialect = self.dialect
        alias = self._new_alias()
        candidate = dialect.row(alias)
        allowed = any_of(
            [
                dialect.has_kind(candidate, ["object"]),
                dialect.negate(dialect.has_kind(node, ["array"])),
            ]
        )
        below = self._filter(test.filter, candidate, prefix, at_table=False)
        source = dialect.candidates(node)
        return dialect.exists([(source, alias)], all_of([allowed, below]))

    def _value_test(self, node: Node, test: Test) -> Sql:
        """Return SQL for a test of the value at ``node`` itself, not its elements."""
        dialect = self.dialect
        if isinstance(test, Equals):
            return dialect.equals(node, test.value)
        if isinstance(test, Wildcard):
            text = dialect.value(node)
            matched = dialect.glob(text, test.parts)
            return all_of([dialect.has_kind(node, ["string"]), matched])
        if isinstance(test, IsNull):
            return dialect.is_null_or_missing(node)
        if isinstance(test, ArrayEquals):
            return self._json_equals(node, test.value)
        if isinstance(test, Compare):
            return dialect.compare(node, test.operator, test.value)
        if isinstance(test, OneOf):
            return self._one_of(node, test)
        raise TypeError(f"not a value test: {test!r}")

    def _one_of(self, node: Node, test: OneOf) -> Sql:
        # Plain strings and numbers go into one IN list each, so that a long $in
        # of ids stays one comparison.
        strings = []
        numbers = []
        others = []
        for option in test.tests:
            if isinstance(option, Equals) and isinstance(option.value, str):
                strings.append(option.value)
            elif isinstance(option, Equals) and not isinstance(option.value, bool):
                numbers.append(option.value)
            else:
                others.append(self._value_test(node, option))
        if strings:
            others.append(self.dialect.in_list(node, strings))
        if numbers:
            others.append(self.dialect.in_list(node, numbers))
        return any_of(others)

    def _json_equals(self, node: Node, expected: object) -> Sql:
        """Return SQL for "the value at ``node`` equals ``expected``", strictly."""
        dialect = self.dialect
        if expected is None:
            return dialect.has_kind(node, ["null"])
        if isinstance(expected, bool):
            return dialect.has_kind(node, ["true" if expected else "false"])
        if isinstance(expected, str | int | float):
            kind = "string" if isinstance(expected, str) else "number"
            return all_of(
                [dialect.has_kind(node, [kind]), dialect.equals(node, expected)]
            )
        if isinstance(expected, list):
            length = sql(
                "{} = {}", dialect.array_length(node), dialect.param(len(expected))
            )
            parts = [dialect.has_kind(node, ["array"]), length]
            for index, item in enumerate(expected):
                parts.append(self._json_equals(dialect.child(node, index), item))
            return all_of(parts)
        assert isinstance(expected, dict)
        return self._object_equals(node, expected)

    def _object_equals(self, node: Node, expected: dict[str, object]) -> Sql:
        dialect = self.dialect
        count_alias = self._new_alias()
        count = sql(
            f"(SELECT count(*) FROM {{}} AS {count_alias}) = {{}}",
            dialect.members(node),
            dialect.param(len(expected)),
        )
        parts = [dialect.has_kind(node, ["object"]), count]
        for label, item in expected.items():
            if is_identifier(label):
                parts.append(self._json_equals(dialect.child(node, label), item))
                continue
            alias = self._new_alias()
            found = all_of(
                [
                    dialect.key_equals(alias, label),
                    self._json_equals(dialect.row(alias), item),
                ]
            )
            parts.append(dialect.exists([(dialect.members(node), alias)], found))
        return all_of(parts)

    def _column_test(self, field: str, test: Test) -> Sql | None:
        """Return SQL on the field's generated column, or None to use the JSON."""
        column = self.columns.get(field)
        if column is None or self._may_be_array((field,)):
            return None
        if isinstance(test, OneOf):
            return self._column_one_of(column, test)
        dialect = self.dialect
        target = Sql(f"{self.alias}.{column.name}")
        if isinstance(test, Wildcard) and column.kind == "string":
            return dialect.glob(target, test.parts)
        if (
            isinstance(test, Equals | Compare)
            and _column_kind(test.value) == column.kind
        ):
            symbol = "=" if isinstance(test, Equals) else _SYMBOLS[test.operator]
            value = test.value
            bound = dialect.param(int(value) if isinstance(value, bool) else value)
            return sql(f"{{}} {symbol} {{}}", target, bound)
        return None

    def _column_one_of(self, column: Column, test: OneOf) -> Sql | None:
        listed = []
        patterns = []
        for option in test.tests:
            if isinstance(option, Equals) and _column_kind(option.value) == column.kind:
                value = option.value
                listed.append(
                    self.dialect.param(int(value) if isinstance(value, bool) else value)
                )
            elif isinstance(option, Wildcard) and column.kind == "string":
                patterns.append(option)
            else:
                return None

        target = Sql(f"{self.alias}.{column.name}")
        parts = [self.dialect.glob(target, pattern.parts) for pattern in patterns]
        if listed:
            placeholders = sql(", ".join("{}" for _ in listed), *listed)
            parts.append(sql("{} IN ({})", target, placeholders))
        return any_of(parts)


_SYMBOLS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _column_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    return "string" if isinstance(value, str) else "number"
