"""SQL fragments with bound parameters, JSON value nodes and the SQLite dialect.

The compiler decides the structure of a query (paths, arrays, negation); a
dialect writes each piece that touches JSON. A PostgreSQL dialect would subclass
:class:`Dialect` and write the same pieces with ``jsonb`` functions.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import ge, gt, le, lt
from typing import Any

from localsync.dql.paths import is_identifier
from localsync.dql.patterns import glob_pattern
from localsync.errors import InvalidQuery


@dataclass(frozen=True)
class Sql:
    """A piece of SQL text and the values of its placeholders, in order."""

    text: str
    params: tuple[Any, ...] = ()


# SQL's boolean literals (SQLite has them since 3.23): PostgreSQL rejects an
# integer where a condition belongs.
TRUE = Sql("TRUE")
FALSE = Sql("FALSE")


def sql(template: str, *parts: Sql | str) -> Sql:
    """Fill each ``{}`` of ``template`` with a part, keeping parameters in order.

    A ``str`` part is trusted SQL text (an alias or a keyword), never a value.
    """
    pieces = template.split("{}")
    if len(pieces) != len(parts) + 1:
        raise ValueError(f"template {template!r} takes {len(pieces) - 1} parts")
    text = [pieces[0]]
    params: list[Any] = []
    for part, piece in zip(parts, pieces[1:], strict=True):
        if isinstance(part, Sql):
            text.append(part.text)
            params.extend(part.params)
        else:
            text.append(part)
        text.append(piece)
    return Sql("".join(text), tuple(params))


def all_of(parts: Sequence[Sql]) -> Sql:
    return _grouped("AND", list(parts), TRUE)


def any_of(parts: Sequence[Sql]) -> Sql:
    return _grouped("OR", list(parts), FALSE)


# SQLite (3.40) parses with a fixed stack of 100 entries, and each open
# parenthesis takes about three. It also limits expression trees to a depth of
# 1000. A flat chain costs the parser nothing but deepens the tree by one per
# term, so long chains are split into parenthesized groups of this many terms.
_GROUP_SIZE = 16


def _grouped(keyword: str, parts: list[Sql], empty: Sql) -> Sql:
    if not parts:
        return empty
    if len(parts) == 1:
        return parts[0]
    if len(parts) > _GROUP_SIZE:
        size = -(-len(parts) // _GROUP_SIZE)
        chunks = [parts[start : start + size] for start in range(0, len(parts), size)]
        parts = [_grouped(keyword, chunk, empty) for chunk in chunks]
    template = "(" + f" {keyword} ".join("{}" for _ in parts) + ")"
    return sql(template, *parts)


@dataclass(frozen=True)
class PathNode:
    """The JSON value at ``steps`` (labels and array indexes) inside ``base``.

    ``base`` is SQL that evaluates to JSON text or NULL. Labels are always
    identifiers, so the path can be written into the SQL text.
    """

    base: Sql
    steps: tuple[str | int, ...] = ()


@dataclass(frozen=True)
class ValueNode:
    """A JSON value given by SQL for its value and its type, such as a json_each row."""

    value: Sql
    type: Sql


Node = PathNode | ValueNode
# A range operator ($gt, $gte, $lt or $lte) and its number bound.
Bound = tuple[str, int | float]


class Dialect:
    """The SQL for reading JSON values in one database.

    Conditions may be NULL where a value is missing; the compiler only negates
    through ``negate``. Row sources (``members``, ``elements``,
    ``traversal_elements``, ``candidates``) go into a FROM clause and give rows
    with the columns ``value`` and ``type``, plus ``key`` for ``members``.
    """

    name = "abstract"
    placeholder = "?"
    # Whether a join that requires certain labels is an IN list found by the
    # annotations index on (dataset_id, label), not an EXISTS run per item.
    label_index_join = False

    def param(self, value: Any) -> Sql:
        return Sql(self.placeholder, (value,))

    def row(self, alias: str) -> ValueNode:
        """Return the node of one row of ``members`` or ``elements`` named ``alias``."""
        raise NotImplementedError

    def value(self, node: Node) -> Sql:
        """Return SQL for the value at ``node``, NULL when it is missing."""
        raise NotImplementedError

    def has_kind(self, node: Node, kinds: Iterable[str]) -> Sql:
        """Return SQL for "the value is of one of ``kinds``".

        Kinds are null, true, false, number, string, array and object; a missing
        value has none of them.
        """
        raise NotImplementedError

    def child(self, node: Node, label: str | int) -> Node:
        """Return the node of an identifier label or array index below ``node``."""
        raise NotImplementedError

    def members(self, node: Node) -> Sql:
        """Return a source of the key/value members of an object (none otherwise)."""
        raise NotImplementedError

    def elements(self, node: Node) -> Sql:
        """Return a source of an array's elements; the caller tests the kind."""
        raise NotImplementedError

    def traversal_elements(self, node: Node) -> Sql:
        """Return a source of what a path continues into at ``node``."""
        raise NotImplementedError

    def any_element(self, node: Node, alias: str, condition: Sql) -> Sql:
        """Return SQL for "the value is an array with an element that passes".

        ``condition`` tests the element row named ``alias``.
        """
        elements = self.exists([(self.elements(node), alias)], condition)
        return all_of([self.has_kind(node, ["array"]), elements])

    def candidates(self, node: Node) -> Sql:
        """Return a source of an array's elements, or else of the value itself."""
        raise NotImplementedError

    def key_equals(self, alias: str, label: str) -> Sql:
        """Return SQL for "the member row ``alias`` has the key ``label``"."""
        raise NotImplementedError

    def array_length(self, node: Node) -> Sql:
        raise NotImplementedError

    def glob(self, text: Sql, parts: tuple[str, ...]) -> Sql:
        """Return SQL for "``text`` matches ``parts`` joined by wildcards"."""
        raise NotImplementedError

    def equals(self, node: Node, value: str | int | float | bool) -> Sql:
        raise NotImplementedError

    def in_list(self, node: Node, values: Sequence[str | int | float]) -> Sql:
        raise NotImplementedError

    def compare(
        self, node: Node, operator: str, value: str | int | float | bool
    ) -> Sql:
        raise NotImplementedError

    def number_range(self, node: Node, bounds: Sequence[Bound]) -> Sql:
        """Return SQL for "the value is a number within every one of ``bounds``".

        Each bound is an operator (``$gt``, ``$gte``, ``$lt``, ``$lte``) and a
        number, not a boolean. This implementation ANDs ``compare`` for each bound.
        A dialect may write the range as one test instead.
        """
        return all_of(
            [self.compare(node, operator, value) for operator, value in bounds]
        )

    def sort_terms(self, node: Node) -> tuple[Sql, Sql]:
        raise NotImplementedError

    def is_present(self, node: Node) -> Sql:
        raise NotImplementedError

    def is_null_or_missing(self, node: Node) -> Sql:
        return sql("{} IS NULL", self.value(node))

    def negate(self, condition: Sql) -> Sql:
        # Comparisons with missing values give NULL; NOT NULL would stay NULL.
        return sql("NOT coalesce({}, 0)", condition)

    def exists(self, sources: Sequence[tuple[Sql, str]], condition: Sql) -> Sql:
        """Return EXISTS over the rows of ``sources`` (each with its alias) joined."""
        listed = ", ".join(f"{{}} AS {alias}" for _, alias in sources)
        parts = [source for source, _ in sources]
        return sql(f"EXISTS (SELECT 1 FROM {listed} WHERE {{}})", *parts, condition)

    def check(self, statement: Sql) -> None:
        """Raise InvalidQuery if the database cannot prepare ``statement``.

        The base class checks nothing; statements run against the tables of
        ``schema/sqlite/items.sql`` and a table ``checked`` with the same columns.
        """


_SQLITE_TYPES = {
    "null": ("null",),
    "true": ("true",),
    "false": ("false",),
    "number": ("integer", "real"),
    "string": ("text",),
    "array": ("array",),
    "object": ("object",),
}
_OPERATORS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "$gt": gt,
    "$gte": ge,
    "$lt": lt,
    "$lte": le,
}


# Columns of the item tables, for preparing statements without the real schema.
_CHECK_COLUMNS = (
    "id, dataset_id, item_id, json, filename, dir, name, type, hidden, annotated,"
    " created_at, updated_at, label"
)
_CHECK_SCHEMA = "".join(
    f"CREATE TABLE {table} ({_CHECK_COLUMNS});"
    for table in ("items", "annotations", "checked")
)
# Messages of the SQLite limits a large or deeply nested query can reach.
_LIMIT_MESSAGES = (
    "parser stack overflow",
    "Expression tree is too large",
    "too many SQL variables",
    "too many FROM clause terms",
    "string or blob too big",
)


class SqliteDialect(Dialect):
    """SQLite's JSON1 functions (built in since SQLite 3.38)."""

    name = "sqlite"
    label_index_join = True

    def __init__(self) -> None:
        self._local = threading.local()

    def check(self, statement: Sql) -> None:
        """Prepare ``statement`` on a private in-memory database, to meet limits early.

        SQLite's parser stack (100 entries before 3.46) and its expression depth
        and variable limits reject some valid but deeply nested queries. This
        check raises InvalidQuery for them before the caller runs anything.
        """
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(":memory:")
            connection.executescript(_CHECK_SCHEMA)
            self._local.connection = connection
        try:
            connection.execute("EXPLAIN " + statement.text, statement.params)
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith(_LIMIT_MESSAGES):
                raise
            raise InvalidQuery(
                f"query is too complex for SQLite ({exc}); nest fewer $match, "
                "$and or $or levels, or split it into several queries"
            ) from exc

    def row(self, alias: str) -> ValueNode:
        return ValueNode(Sql(f"{alias}.value"), Sql(f"{alias}.type"))

    def path_text(self, steps: tuple[str | int, ...]) -> str:
        """Return the JSON path literal for ``steps``, such as ``'$.a.b[0]'``."""
        text = ["'$"]
        for step in steps:
            if isinstance(step, int):
                text.append(f"[{step}]")
            elif is_identifier(step):
                text.append(f".{step}")
            else:
                raise ValueError(f"path label {step!r} cannot be written into SQL")
        text.append("'")
        return "".join(text)

    def value(self, node: Node) -> Sql:
        if isinstance(node, ValueNode):
            return node.value
        return sql(f"json_extract({{}}, {self.path_text(node.steps)})", node.base)

    def type_of(self, node: Node) -> Sql:
        if isinstance(node, ValueNode):
            return node.type
        return sql(f"json_type({{}}, {self.path_text(node.steps)})", node.base)

    def has_kind(self, node: Node, kinds: Iterable[str]) -> Sql:
        names = [name for kind in kinds for name in _SQLITE_TYPES[kind]]
        if len(names) == 1:
            return sql(f"{{}} = '{names[0]}'", self.type_of(node))
        listed = ", ".join(f"'{name}'" for name in names)
        return sql(f"{{}} IN ({listed})", self.type_of(node))

    def is_present(self, node: Node) -> Sql:
        return sql("{} IS NOT NULL", self.type_of(node))

    def _text_if(self, node: ValueNode, kind: str) -> Sql:
        # A json_each value is plain text for a string element, so it may be
        # parsed as JSON only once its type shows a container.
        return sql(f"CASE WHEN {{}} = '{kind}' THEN {{}} END", node.type, node.value)

    def child(self, node: Node, label: str | int) -> Node:
        if isinstance(node, PathNode):
            return PathNode(node.base, (*node.steps, label))
        kind = "array" if isinstance(label, int) else "object"
        return PathNode(self._text_if(node, kind), (label,))

    def members(self, node: Node) -> Sql:
        if isinstance(node, PathNode):
            return sql(f"json_each({{}}, {self.path_text(node.steps)})", node.base)
        return sql("json_each({})", self._text_if(node, "object"))

    def elements(self, node: Node) -> Sql:
        # On an object json_each lists its members: callers test the kind first.
        if isinstance(node, PathNode):
            return self.members(node)
        return sql("json_each({})", self._text_if(node, "array"))

    def any_element(self, node: Node, alias: str, condition: Sql) -> Sql:
        """Return SQL for "the value is an array with an element that passes".

        On a path, json_each gives an array's elements integer keys, an object's
        members text keys and a scalar one row with a NULL key. Testing the key
        replaces a json_type test of the path, which in SQLite 3.40 parses the
        document a second time because json_each does not use json_type's cache.
        """
        if not isinstance(node, PathNode):
            return super().any_element(node, alias, condition)
        is_element = Sql(f"typeof({alias}.key) = 'integer'")
        return self.exists(
            [(self.members(node), alias)], all_of([is_element, condition])
        )

    def traversal_elements(self, node: Node) -> Sql:
        """Return a json_each source of what a path continues into at ``node``.

        That is the elements of an array, the value itself if it is an object, and
        one null (a dead end) for an empty array or anything else.
        """
        kind, value = self.type_of(node), self.value(node)
        return sql(
            "json_each(CASE {}"
            " WHEN 'array' THEN CASE WHEN {} > 0 THEN {} ELSE '[null]' END"
            " WHEN 'object' THEN '[' || {} || ']'"
            " ELSE '[null]' END)",
            kind,
            self.array_length(node),
            value,
            value,
        )

    def candidates(self, node: Node) -> Sql:
        """Return a json_each source of an array's elements, or else of the value.

        A missing value or a scalar gives one null row, as the value itself would
        have no fields either.
        """
        kind, value = self.type_of(node), self.value(node)
        return sql(
            "json_each(CASE {} WHEN 'array' THEN {}"
            " WHEN 'object' THEN '[' || {} || ']' ELSE '[null]' END)",
            kind,
            value,
            value,
        )

    def key_equals(self, alias: str, label: str) -> Sql:
        return sql(f"{alias}.key = {{}}", self.param(label))

    def array_length(self, node: Node) -> Sql:
        if isinstance(node, PathNode):
            return sql(
                f"json_array_length({{}}, {self.path_text(node.steps)})", node.base
            )
        return sql("json_array_length({})", self._text_if(node, "array"))

    def glob(self, text: Sql, parts: tuple[str, ...]) -> Sql:
        return sql("{} GLOB {}", text, self.param(glob_pattern(parts)))

    def equals(self, node: Node, value: str | int | float | bool) -> Sql:
        """Return SQL for "the value at ``node`` is ``value``", exactly typed.

        json_extract gives true and false as 1 and 0, and containers as text. A
        type test is added only where such a value could pass the comparison,
        because the bare comparison is what an expression index serves.
        """
        extracted = self.value(node)
        if isinstance(value, bool):
            kind = "true" if value else "false"
            return sql(
                f"({{}} = {int(value)} AND {{}})",
                extracted,
                self.has_kind(node, [kind]),
            )
        compared = sql("{} = {}", extracted, self.param(value))
        if isinstance(value, str) and not value.startswith(("[", "{")):
            return compared
        if not isinstance(value, str) and value not in (0, 1):
            return compared
        kind = "string" if isinstance(value, str) else "number"
        return sql("({} AND {})", compared, self.has_kind(node, [kind]))

    def in_list(self, node: Node, values: Sequence[str | int | float]) -> Sql:
        """Return SQL for "the value is one of ``values``"; values share one kind."""
        placeholders = sql(", ".join("{}" for _ in values), *map(self.param, values))
        listed = sql("{} IN ({})", self.value(node), placeholders)
        if all(isinstance(value, str) for value in values):
            if not any(value.startswith(("[", "{")) for value in values):  # type: ignore[union-attr]
                return listed
            return sql("({} AND {})", listed, self.has_kind(node, ["string"]))
        if not any(value in (0, 1) for value in values):
            return listed
        return sql("({} AND {})", listed, self.has_kind(node, ["number"]))

    def compare(
        self, node: Node, operator: str, value: str | int | float | bool
    ) -> Sql:
        """Return SQL for a range test that only values of ``value``'s kind can pass."""
        symbol = _OPERATORS[operator]
        extracted = self.value(node)
        if isinstance(value, bool):
            kinds = self.has_kind(node, ["true", "false"])
            return sql(f"({{}} AND {{}} {symbol} {int(value)})", kinds, extracted)
        if isinstance(value, str):
            compared = sql(f"{{}} {symbol} {{}}", extracted, self.param(value))
            return sql("({} AND {})", compared, self.has_kind(node, ["string"]))

        return self.number_range(node, [(operator, value)])

    def number_range(self, node: Node, bounds: Sequence[Bound]) -> Sql:
        """Return SQL for "the value is a number within every one of ``bounds``".

        The bounds are plain comparisons of one json_extract, so an expression
        index on it serves them as one range scan. A test of the kind is added only
        where a value of another kind could pass the bounds, because it reads the
        JSON of each row in the range.
        """
        extracted = self.value(node)
        parts = [
            sql(f"{{}} {_OPERATORS[operator]} {{}}", extracted, self.param(value))
            for operator, value in bounds
        ]
        if all(operator in ("$gt", "$gte") for operator, _ in bounds):
            # Every text value sorts after every number in SQLite, so this bound
            # keeps strings (and containers, which json_extract returns as text)
            # out. A number upper bound keeps them out already.
            parts.append(sql("{} < ''", extracted))
        if _range_admits(bounds, 0) or _range_admits(bounds, 1):
            # json_extract returns false and true as 0 and 1.
            parts.append(self.has_kind(node, ["number"]))
        return all_of(parts)

    def sort_terms(self, node: Node) -> tuple[Sql, Sql]:
        """Return the rank of the value's kind and the value, to order by both."""
        kind = self.type_of(node)
        rank = sql(
            "CASE {} WHEN 'integer' THEN 1 WHEN 'real' THEN 1 WHEN 'text' THEN 2"
            " WHEN 'object' THEN 3 WHEN 'array' THEN 4 WHEN 'true' THEN 5"
            " WHEN 'false' THEN 5 ELSE 0 END",
            kind,
        )
        value = sql(
            "CASE WHEN {} IN ('object', 'array') THEN NULL ELSE {} END",
            kind,
            self.value(node),
        )
        return rank, value


def _range_admits(bounds: Sequence[Bound], number: int) -> bool:
    """Return whether ``number`` passes every one of ``bounds``."""
    return all(_COMPARE[operator](number, value) for operator, value in bounds)


DIALECTS: dict[str, Dialect] = {"sqlite": SqliteDialect()}


def get_dialect(dialect: str | Dialect) -> Dialect:
    if isinstance(dialect, Dialect):
        return dialect
    if dialect == "postgresql" and dialect not in DIALECTS:
        # Imported late because localsync.dql.postgres_dialect imports this module.
        from localsync.dql.postgres_dialect import POSTGRES

        DIALECTS[dialect] = POSTGRES
    try:
        return DIALECTS[dialect]
    except KeyError:
        known = ", ".join(sorted({*DIALECTS, "postgresql"}))
        raise ValueError(
            f"unknown SQL dialect {dialect!r}; expected one of {known}"
        ) from None
