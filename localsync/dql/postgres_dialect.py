"""The PostgreSQL dialect of the query compiler: ``jsonb`` operators, ``%s`` params.

Every JSON value is handled as ``jsonb``, whose equality already distinguishes
``true``, ``1`` and ``"true"`` and compares numbers by value. Strings are compared and
sorted with the "C" collation (code-point order, as the Python evaluator sorts),
whatever the database's locale is. The sources that enter arrays and objects are
subqueries with the columns ``key`` (members only), ``value`` and ``type``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from localsync.dql.dialect import Dialect, Node, PathNode, Sql, ValueNode, sql
from localsync.dql.paths import is_identifier

_TYPE_NAMES = {
    "null": "null",
    "number": "number",
    "string": "string",
    "array": "array",
    "object": "object",
}
_OPERATORS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}

# A table's own document column, such as ``items.json``: the only base that a
# GIN index on the column can serve.
_DOCUMENT_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.json")


@dataclass(frozen=True)
class JsonSql(Sql):
    """SQL that evaluates to ``jsonb``, or to NULL for a missing value."""


def like_pattern(parts: tuple[str, ...]) -> str:
    """Return the LIKE pattern for ``parts`` joined by wildcards.

    LIKE gives ``%``, ``_`` and the escape character ``\\`` a meaning, so each is
    escaped in the literal runs.
    """
    escaped = []
    for run in parts:
        run = run.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        escaped.append(run)
    return "%".join(escaped)


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _string_text(value: Sql) -> Sql:
    # Written without sql(), whose templates read "{}" as a placeholder.
    return Sql("(" + value.text + " #>> '{}')", value.params)


class PostgresDialect(Dialect):
    """PostgreSQL's ``jsonb`` operators and functions (PostgreSQL 12 or later)."""

    name = "postgresql"
    placeholder = "%s"

    def json_param(self, value: Any) -> Sql:
        return Sql("%s::jsonb", (_json_text(value),))

    def row(self, alias: str) -> ValueNode:
        return ValueNode(Sql(f"{alias}.value"), Sql(f"{alias}.type"))

    def value(self, node: Node) -> JsonSql:
        if isinstance(node, ValueNode):
            return JsonSql(node.value.text, node.value.params)
        if not node.steps:
            return JsonSql(node.base.text, node.base.params)
        # An integer step on a scalar returns the scalar itself in jsonb; the
        # compiler takes integer steps only below a test that the value is an
        # array.
        steps = []
        for step in node.steps:
            if isinstance(step, int):
                steps.append(f" -> {int(step)}")
            elif is_identifier(step):
                steps.append(f" -> '{step}'")
            else:
                raise ValueError(f"path label {step!r} cannot be written into SQL")
        return JsonSql("(" + node.base.text + "".join(steps) + ")", node.base.params)

    def type_of(self, node: Node) -> Sql:
        if isinstance(node, ValueNode):
            return node.type
        return sql("jsonb_typeof({})", self.value(node))

    def has_kind(self, node: Node, kinds: Iterable[str]) -> Sql:
        wanted = set(kinds)
        names = [_TYPE_NAMES[kind] for kind in sorted(wanted - {"true", "false"})]
        tests = []
        if {"true", "false"} <= wanted:
            names.append("boolean")
        elif wanted & {"true", "false"}:
            literal = "true" if "true" in wanted else "false"
            tests.append(sql(f"{{}} = '{literal}'::jsonb", self.value(node)))
        if len(names) == 1:
            tests.append(sql(f"{{}} = '{names[0]}'", self.type_of(node)))
        elif names:
            listed = ", ".join(f"'{name}'" for name in names)
            tests.append(sql(f"{{}} IN ({listed})", self.type_of(node)))
        if len(tests) == 1:
            return tests[0]
        return sql("({} OR {})", *tests)

    def is_present(self, node: Node) -> Sql:
        # A JSON null is a jsonb value, not an SQL NULL, so it counts as present.
        return sql("{} IS NOT NULL", self.value(node))

    def is_null_or_missing(self, node: Node) -> Sql:
        return sql("coalesce({}, 'null') = 'null'", self.type_of(node))

    def negate(self, condition: Sql) -> Sql:
        # Comparisons with missing values give NULL; NOT NULL would stay NULL.
        return sql("NOT coalesce({}, false)", condition)

    def child(self, node: Node, label: str | int) -> Node:
        if isinstance(node, PathNode):
            return PathNode(node.base, (*node.steps, label))
        return PathNode(self.value(node), (label,))

    def _if_kind(self, node: Node, type_name: str) -> Sql:
        return sql(
            f"CASE WHEN {{}} = '{type_name}' THEN {{}} END",
            self.type_of(node),
            self.value(node),
        )

    def _element_rows(self, array: Sql) -> Sql:
        """Return a source of the elements of the jsonb array ``array`` (or NULL)."""
        return sql(
            "(SELECT e.value, jsonb_typeof(e.value) AS type"
            " FROM jsonb_array_elements({}) AS e (value))",
            array,
        )

    def members(self, node: Node) -> Sql:
        return sql(
            "(SELECT e.key, e.value, jsonb_typeof(e.value) AS type"
            " FROM jsonb_each({}) AS e)",
            self._if_kind(node, "object"),
        )

    def elements(self, node: Node) -> Sql:
        return self._element_rows(self._if_kind(node, "array"))

    def traversal_elements(self, node: Node) -> Sql:
        """Return a source of what a path continues into at ``node``.

        That is the elements of an array, the value itself if it is an object, and
        one null (a dead end) for an empty array or anything else.
        """
        value = self.value(node)
        return self._element_rows(
            sql(
                "CASE jsonb_typeof({})"
                " WHEN 'array' THEN CASE WHEN {} <> '[]'::jsonb THEN {}"
                " ELSE '[null]'::jsonb END"
                " WHEN 'object' THEN jsonb_build_array({})"
                " ELSE '[null]'::jsonb END",
                value,
                value,
                value,
                value,
            )
        )

    def candidates(self, node: Node) -> Sql:
        """Return a source of an array's elements, or else of the value itself.

        A missing value or a scalar gives one null row, as the value itself would
        have no fields either.
        """
        value = self.value(node)
        return self._element_rows(
            sql(
                "CASE jsonb_typeof({}) WHEN 'array' THEN {}"
                " WHEN 'object' THEN jsonb_build_array({})"
                " ELSE '[null]'::jsonb END",
                value,
                value,
                value,
            )
        )

    def exists(self, sources: Sequence[tuple[Sql, str]], condition: Sql) -> Sql:
        """Return EXISTS over the rows of ``sources`` (each with its alias) joined.

        A later source reads the row of an earlier one, which PostgreSQL allows
        for a subquery only when it is marked LATERAL.
        """
        listed = ", ".join(
            f"{'LATERAL ' if index else ''}{{}} AS {alias}"
            for index, (_, alias) in enumerate(sources)
        )
        parts = [source for source, _ in sources]
        return sql(f"EXISTS (SELECT 1 FROM {listed} WHERE {{}})", *parts, condition)

    def key_equals(self, alias: str, label: str) -> Sql:
        return sql(f"{alias}.key = {{}}", self.param(label))

    def array_length(self, node: Node) -> Sql:
        return sql("jsonb_array_length({})", self._if_kind(node, "array"))

    def glob(self, text: Sql, parts: tuple[str, ...]) -> Sql:
        """Return SQL for a wildcard match of ``text``, a jsonb string or a column."""
        subject = _string_text(text) if isinstance(text, JsonSql) else text
        return sql("{} LIKE {}", subject, self.param(like_pattern(parts)))

    def equals(self, node: Node, value: str | int | float | bool) -> Sql:
        """Return SQL for "the value at ``node`` is ``value``", exactly typed.

        On a path of the table's document that crosses no array the test is
        written as containment (``json @> '{"a": {"b": value}}'``), which the
        GIN index serves. For such a path containment and equality agree,
        because jsonb containment enters arrays only at matching positions.
        """
        if (
            isinstance(node, PathNode)
            and node.steps
            and not node.base.params
            and _DOCUMENT_COLUMN.fullmatch(node.base.text)
            and all(isinstance(step, str) for step in node.steps)
        ):
            document: Any = value
            for step in reversed(node.steps):
                document = {step: document}
            return sql("{} @> {}", node.base, self.json_param(document))
        return sql("{} = {}", self.value(node), self.json_param(value))

    def in_list(self, node: Node, values: Sequence[str | int | float]) -> Sql:
        """Return SQL for "the value is one of ``values``"."""
        texts = [_json_text(value) for value in values]
        return sql("{} = ANY({}::jsonb[])", self.value(node), self.param(texts))

    def compare(
        self, node: Node, operator: str, value: str | int | float | bool
    ) -> Sql:
        """Return SQL for a range test that only values of ``value``'s kind can pass."""
        symbol = _OPERATORS[operator]
        extracted = self.value(node)
        if isinstance(value, str):
            text = _string_text(extracted)
            compared = sql(f'{{}} COLLATE "C" {symbol} {{}}', text, self.param(value))
            kinds = ["string"]
        else:
            # jsonb orders numbers by value and false before true.
            compared = sql(f"{{}} {symbol} {{}}", extracted, self.json_param(value))
            kinds = ["true", "false"] if isinstance(value, bool) else ["number"]
        return sql("({} AND {})", self.has_kind(node, kinds), compared)

    def sort_terms(self, node: Node) -> tuple[Sql, Sql]:
        """Return the rank of the value's kind and the value, to order by both.

        The value is a row with one field per kind, so numbers sort by value,
        strings by their UTF-8 bytes (code-point order) and false before true;
        objects, arrays and nulls tie within their rank.
        """
        kind, value = self.type_of(node), self.value(node)
        rank = sql(
            "CASE {} WHEN 'number' THEN 1 WHEN 'string' THEN 2 WHEN 'object' THEN 3"
            " WHEN 'array' THEN 4 WHEN 'boolean' THEN 5 ELSE 0 END",
            kind,
        )
        text = _string_text(value)
        ordered = sql(
            "ROW(CASE WHEN {} = 'number' THEN ({})::numeric END,"
            " CASE WHEN {} = 'string' THEN convert_to({}, 'UTF8') END,"
            " CASE WHEN {} = 'boolean' THEN ({})::boolean END)",
            kind,
            value,
            kind,
            text,
            kind,
            value,
        )
        return rank, ordered


POSTGRES = PostgresDialect()
