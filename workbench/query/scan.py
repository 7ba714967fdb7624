"""Plain scans of one table, recognised so that the engine can hand them to polars.

Most rows an analyst pulls into a dataframe come from statements like
``SELECT device_id, ts, temperature FROM telemetry WHERE building_id = 'b-0001' AND
event_date = '2026-12-05' LIMIT 1000000``: columns as they are, one table, a few
comparisons of a column with a literal, a limit. DuckDB answers them by scanning the
table's Arrow dataset, five times slower than polars reading the Parquet files itself
(which also stops once it has the rows a LIMIT asks for). :func:`plain_scan` recognises
exactly that shape, and only where polars and DuckDB cannot disagree on the answer:

* each selected item is a column of the table (or ``*``), without an alias;
* the WHERE is comparisons joined by AND, each a column against a literal of the
  column's own kind: text with a quoted string, a whole number with a whole number, a
  date with a ``'YYYY-MM-DD'`` string; never a timestamp, whose comparison with text
  depends on the engine's casting rules, nor a float, whose NaN the two engines order
  differently;
* nothing else: no DISTINCT, ORDER BY, GROUP BY, join, function, or subquery.

Anything else, or anything this module is unsure of, is ``None``: the engine runs it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
import re
from collections.abc import Callable
from typing import Any

import polars as pl
import pyarrow as pa
import sqlglot
from sqlglot import exp

__all__ = ["Comparison", "Scan", "plain_scan"]

_OPS: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
}
_MIRROR = {operator.gt: operator.lt, operator.ge: operator.le}
_MIRROR |= {v: k for k, v in _MIRROR.items()} | {operator.eq: operator.eq, operator.ne: operator.ne}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# a statement longer than this is not a plain scan worth parsing twice
_MAX_SQL = 4000


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``column <op> value``, the value already of the column's kind."""

    column: str
    op: Callable[[Any, Any], Any]
    value: object

    def expr(self) -> pl.Expr:
        return self.op(pl.col(self.column), pl.lit(self.value))  # type: ignore[no-any-return]


@dataclasses.dataclass(frozen=True)
class Scan:
    """A plain scan: which columns (in order), which rows, how many at most."""

    table: str
    columns: tuple[str, ...]
    where: tuple[Comparison, ...] = ()
    limit: int | None = None


def plain_scan(sql: str, schemas: dict[str, pa.Schema]) -> Scan | None:
    """``sql`` (DuckDB's dialect, already vetted) as a :class:`Scan` of one of ``schemas``'
    tables, or None when it is anything more.

    >>> schema = pa.schema([("device_id", pa.string()), ("seq", pa.int64()),
    ...                     ("ts", pa.timestamp("us", "UTC")), ("event_date", pa.date32())])
    >>> scan = plain_scan("SELECT device_id, seq FROM telemetry WHERE event_date = "
    ...                   "'2026-12-05' AND 3 < seq LIMIT 10", {"telemetry": schema})
    >>> scan.columns, scan.limit, [(c.column, c.op.__name__, c.value) for c in scan.where]
    (('device_id', 'seq'), 10, [('event_date', 'eq', datetime.date(2026, 12, 5)), ('seq', 'gt', 3)])
    >>> plain_scan("SELECT * FROM telemetry WHERE ts > '2026-12-05'", {"telemetry": schema})
    >>> plain_scan("SELECT seq + 1 FROM telemetry", {"telemetry": schema})
    """
    if len(sql) > _MAX_SQL:
        return None
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return None
    if not isinstance(tree, exp.Select) or _given(tree) - _PLAIN_ARGS:
        return None
    if any(tree.args.get(k) for k in ("distinct", "hint", "exclude", "operation_modifiers")):
        return None
    source = tree.args.get("from_")
    table = source.this if isinstance(source, exp.From) else None
    if not isinstance(table, exp.Table) or table.args.get("db") or table.args.get("catalog"):
        return None
    if _given(table) - {"this"} or table.name not in schemas:
        return None
    schema = schemas[table.name]
    columns = _columns(tree.expressions, schema, table.name)
    where = _where(tree.args.get("where"), schema, table.name)
    limit = _limit(tree.args.get("limit"))
    if columns is None or where is None or limit is False:
        return None
    return Scan(table.name, columns, where, None if limit is True else limit)


_PLAIN_ARGS = {
    "kind",
    "hint",
    "distinct",
    "expressions",
    "limit",
    "exclude",
    "operation_modifiers",
    "from_",
    "where",
}


def _given(node: exp.Expression) -> set[str]:
    """The arguments ``node`` has (sqlglot keeps absent ones as None or empty)."""
    return {key for key, value in node.args.items() if value}


def _column(node: exp.Expression, schema: pa.Schema, table: str) -> str | None:
    if not isinstance(node, exp.Column) or node.args.get("db") or node.args.get("catalog"):
        return None
    if node.table and node.table != table:
        return None
    return node.name if node.name in schema.names else None


def _columns(items: list[exp.Expression], schema: pa.Schema, table: str) -> tuple[str, ...] | None:
    if len(items) == 1 and isinstance(items[0], exp.Star):
        return tuple(schema.names)
    names = [_column(item, schema, table) for item in items]
    # a column twice would need two output names: DuckDB's rules, not ours
    if not names or None in names or len(set(names)) != len(names):
        return None
    return tuple(n for n in names if n is not None)


def _where(
    node: exp.Expression | None, schema: pa.Schema, table: str
) -> tuple[Comparison, ...] | None:
    if node is None:
        return ()
    found: list[Comparison] = []
    pending = [node.this if isinstance(node, exp.Where) else node]
    while pending:
        part = pending.pop()
        if isinstance(part, exp.Paren):
            pending.append(part.this)
        elif isinstance(part, exp.And):
            pending += [part.this, part.expression]
        elif type(part) in _OPS and (comparison := _comparison(part, schema, table)):
            found.append(comparison)
        else:
            return None
    return tuple(sorted(found, key=lambda c: c.column))


def _comparison(node: exp.Expression, schema: pa.Schema, table: str) -> Comparison | None:
    op = _OPS[type(node)]
    left, right = node.this, node.expression
    if isinstance(left, exp.Literal):  # 3 < seq is seq > 3
        left, right, op = right, left, _MIRROR[op]
    column = _column(left, schema, table)
    if column is None or not isinstance(right, exp.Literal):
        return None
    value = _value(schema.field(column).type, right)
    return None if value is None else Comparison(column, op, value)


def _value(kind: pa.DataType, literal: exp.Literal) -> object | None:
    text = str(literal.this)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return text if literal.is_string else None
    if literal.is_string:
        if pa.types.is_date32(kind) and _DATE.fullmatch(text):
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                return None
        return None
    if pa.types.is_integer(kind) and re.fullmatch(r"\d{1,18}", text):
        return int(text)
    return None


def _limit(node: exp.Expression | None) -> int | bool:
    """The LIMIT's row count; True when there is none; False when it is not a plain one."""
    if node is None:
        return True
    if not isinstance(node, exp.Limit) or _given(node) - {"expression"}:
        return False
    value = node.expression
    if isinstance(value, exp.Literal) and not value.is_string and str(value.this).isdigit():
        return int(value.this)
    return False
