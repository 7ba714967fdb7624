"""The metadata calls' results: what ``GetCatalogs``, ``GetSchemas``, ``GetTables``,
``GetTableTypes``, ``GetColumns``, ``GetTypeInfo`` and ``GetFunctions`` answer.

Each builder returns a :class:`~workbench.query.engine.QueryResult` with the columns
JDBC's ``DatabaseMetaData`` defines, so BI tools browse the lake like any Hive
database: one schema, ``default``, holding the tables the session's principal may
query. Name arguments are JDBC search patterns (``%`` any run, ``_`` one character).
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from workbench.query.engine import HiveSession, QueryResult
from workbench.query.types import Column

__all__ = [
    "catalogs",
    "columns",
    "functions",
    "schemas",
    "table_types",
    "tables",
    "type_info",
]

# java.sql.Types codes, for GetColumns/GetTypeInfo
_JDBC = {
    "BOOLEAN": 16,
    "TINYINT": -6,
    "SMALLINT": 5,
    "INT": 4,
    "BIGINT": -5,
    "FLOAT": 6,
    "DOUBLE": 8,
    "STRING": 12,
    "TIMESTAMP": 93,
    "BINARY": -2,
    "DECIMAL": 3,
    "DATE": 91,
    "ARRAY": 2003,
    "MAP": 2000,
    "STRUCT": 2002,
}
_FUNCTIONS = [
    "avg",
    "count",
    "sum",
    "min",
    "max",
    "collect_list",
    "collect_set",
    "percentile_approx",
    "concat_ws",
    "date_format",
    "from_unixtime",
    "unix_timestamp",
    "to_date",
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "datediff",
    "date_add",
    "date_sub",
    "size",
    "explode",
    "nvl",
    "coalesce",
    "get_json_object",
    "regexp_extract",
    "split",
    "round",
    "floor",
    "ceil",
    "abs",
    "lower",
    "upper",
    "length",
    "substr",
    "trim",
    "cast",
]


def _like(pattern: str | None) -> re.Pattern[str]:
    """A JDBC search pattern (``%`` any, ``_`` one character) as a regex; None, '' or '*'
    match all."""
    if not pattern or pattern in ("*", "%"):
        return re.compile(".*", re.S)
    out = ""
    for ch in pattern:
        out += ".*" if ch in "%*" else "." if ch == "_" else re.escape(ch)
    return re.compile(out, re.I | re.S)


def catalogs() -> QueryResult:
    """No catalogs: Hive has none."""
    return QueryResult.of(pa.table({"TABLE_CAT": pa.array([], pa.string())}))


def schemas(schema_pattern: str | None) -> QueryResult:
    """``default`` if ``schema_pattern`` matches it."""
    names = ["default"] if _like(schema_pattern).fullmatch("default") else []
    table = pa.table(
        {
            "TABLE_SCHEM": pa.array(names, pa.string()),
            "TABLE_CATALOG": pa.array([""] * len(names), pa.string()),
        }
    )
    return QueryResult.of(table)


def table_types() -> QueryResult:
    """Every table is a ``TABLE``."""
    return QueryResult.of(pa.table({"TABLE_TYPE": pa.array(["TABLE"], pa.string())}))


def tables(
    query: HiveSession,
    schema_pattern: str | None,
    table_pattern: str | None,
    types: list[str] | None,
) -> QueryResult:
    """The tables of ``query``'s principal that match, with their comments as remarks."""
    wanted = {x.upper() for x in (types or [])}
    in_schema = _like(schema_pattern).fullmatch("default") is not None
    match = _like(table_pattern)
    names = [
        n
        for n in query.tables()
        if in_schema and match.fullmatch(n) and (not wanted or "TABLE" in wanted)
    ]
    remarks = [query.source(n).comment for n in names]
    return QueryResult.of(
        pa.table(
            {
                "TABLE_CAT": pa.array([""] * len(names), pa.string()),
                "TABLE_SCHEM": pa.array(["default"] * len(names), pa.string()),
                "TABLE_NAME": pa.array(names, pa.string()),
                "TABLE_TYPE": pa.array(["TABLE"] * len(names), pa.string()),
                "REMARKS": pa.array(remarks, pa.string()),
            }
        )
    )


_COLUMNS_SCHEMA = pa.schema(
    [
        ("TABLE_CAT", pa.string()),
        ("TABLE_SCHEM", pa.string()),
        ("TABLE_NAME", pa.string()),
        ("COLUMN_NAME", pa.string()),
        ("DATA_TYPE", pa.int32()),
        ("TYPE_NAME", pa.string()),
        ("COLUMN_SIZE", pa.int32()),
        ("BUFFER_LENGTH", pa.int8()),
        ("DECIMAL_DIGITS", pa.int32()),
        ("NUM_PREC_RADIX", pa.int32()),
        ("NULLABLE", pa.int32()),
        ("REMARKS", pa.string()),
        ("COLUMN_DEF", pa.string()),
        ("SQL_DATA_TYPE", pa.int32()),
        ("SQL_DATETIME_SUB", pa.int32()),
        ("CHAR_OCTET_LENGTH", pa.int32()),
        ("ORDINAL_POSITION", pa.int32()),
        ("IS_NULLABLE", pa.string()),
        ("SCOPE_CATALOG", pa.string()),
        ("SCOPE_SCHEMA", pa.string()),
        ("SCOPE_TABLE", pa.string()),
        ("SOURCE_DATA_TYPE", pa.int16()),
        ("IS_AUTO_INCREMENT", pa.string()),
    ]
)

_SIZES = {"TINYINT": 3, "SMALLINT": 5, "INT": 10, "BIGINT": 19, "FLOAT": 7, "DOUBLE": 15}


def _column_row(table: str, position: int, col: Column) -> dict[str, Any]:
    prim = col.primitive
    size = col.precision if prim == "DECIMAL" else _SIZES.get(prim)
    return {
        "TABLE_CAT": None,
        "TABLE_SCHEM": "default",
        "TABLE_NAME": table,
        "COLUMN_NAME": col.name,
        "DATA_TYPE": _JDBC.get(prim, 12),
        "TYPE_NAME": col.hive_type,
        "COLUMN_SIZE": size,
        "BUFFER_LENGTH": None,
        "DECIMAL_DIGITS": col.scale if prim == "DECIMAL" else None,
        "NUM_PREC_RADIX": 10 if size is not None else None,
        "NULLABLE": 1,
        "REMARKS": "",
        "COLUMN_DEF": None,
        "SQL_DATA_TYPE": None,
        "SQL_DATETIME_SUB": None,
        "CHAR_OCTET_LENGTH": None,
        "ORDINAL_POSITION": position,
        "IS_NULLABLE": "YES",
        "SCOPE_CATALOG": None,
        "SCOPE_SCHEMA": None,
        "SCOPE_TABLE": None,
        "SOURCE_DATA_TYPE": None,
        "IS_AUTO_INCREMENT": "NO",
    }


def columns(
    query: HiveSession,
    schema_pattern: str | None,
    table_pattern: str | None,
    column_pattern: str | None,
) -> QueryResult:
    """The matching columns of the matching tables of ``query``'s principal."""
    rows: list[dict[str, Any]] = []
    if _like(schema_pattern).fullmatch("default"):
        tmatch, cmatch = _like(table_pattern), _like(column_pattern)
        for name in query.tables():
            if not tmatch.fullmatch(name):
                continue
            for pos, col in enumerate(query.describe(name), start=1):
                if cmatch.fullmatch(col.name):
                    rows.append(_column_row(name, pos, col))
    return QueryResult.of(pa.Table.from_pylist(rows, schema=_COLUMNS_SCHEMA))


def functions(function_pattern: str | None) -> QueryResult:
    """The Hive functions advertised to clients whose names match."""
    match = _like(function_pattern)
    names = [f for f in _FUNCTIONS if match.fullmatch(f)]
    table = pa.table(
        {
            "FUNCTION_CAT": pa.array([None] * len(names), pa.string()),
            "FUNCTION_SCHEM": pa.array([None] * len(names), pa.string()),
            "FUNCTION_NAME": pa.array(names, pa.string()),
            "REMARKS": pa.array([""] * len(names), pa.string()),
            "FUNCTION_TYPE": pa.array([1] * len(names), pa.int32()),
            "SPECIFIC_NAME": pa.array(names, pa.string()),
        }
    )
    return QueryResult.of(table)


def type_info() -> QueryResult:
    """The Hive types, described the way JDBC's ``getTypeInfo`` does."""
    names = [n for n in _JDBC if n not in ("MAP", "STRUCT")]
    rows = [
        {
            "TYPE_NAME": n,
            "DATA_TYPE": _JDBC[n],
            "PRECISION": 38 if n == "DECIMAL" else _SIZES.get(n),
            "LITERAL_PREFIX": "'" if n in ("STRING", "DATE", "TIMESTAMP") else None,
            "LITERAL_SUFFIX": "'" if n in ("STRING", "DATE", "TIMESTAMP") else None,
            "CREATE_PARAMS": "precision,scale" if n == "DECIMAL" else None,
            "NULLABLE": 1,
            "CASE_SENSITIVE": n == "STRING",
            "SEARCHABLE": 3,
            "UNSIGNED_ATTRIBUTE": False,
            "FIXED_PREC_SCALE": False,
            "AUTO_INCREMENT": False,
            "LOCAL_TYPE_NAME": None,
            "MINIMUM_SCALE": 0,
            "MAXIMUM_SCALE": 38 if n == "DECIMAL" else 0,
            "SQL_DATA_TYPE": None,
            "SQL_DATETIME_SUB": None,
            "NUM_PREC_RADIX": 10 if n in _SIZES or n == "DECIMAL" else None,
        }
        for n in names
    ]
    schema = pa.schema(
        [
            ("TYPE_NAME", pa.string()),
            ("DATA_TYPE", pa.int32()),
            ("PRECISION", pa.int32()),
            ("LITERAL_PREFIX", pa.string()),
            ("LITERAL_SUFFIX", pa.string()),
            ("CREATE_PARAMS", pa.string()),
            ("NULLABLE", pa.int16()),
            ("CASE_SENSITIVE", pa.bool_()),
            ("SEARCHABLE", pa.int16()),
            ("UNSIGNED_ATTRIBUTE", pa.bool_()),
            ("FIXED_PREC_SCALE", pa.bool_()),
            ("AUTO_INCREMENT", pa.bool_()),
            ("LOCAL_TYPE_NAME", pa.string()),
            ("MINIMUM_SCALE", pa.int16()),
            ("MAXIMUM_SCALE", pa.int16()),
            ("SQL_DATA_TYPE", pa.int32()),
            ("SQL_DATETIME_SUB", pa.int32()),
            ("NUM_PREC_RADIX", pa.int32()),
        ]
    )
    return QueryResult.of(pa.Table.from_pylist(rows, schema=schema))
