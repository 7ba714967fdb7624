"""HiveQL in, a checked DuckDB statement out: classification, refusal, translation.

Every statement is parsed with sqlglot's Hive dialect and checked *before* it
reaches DuckDB: only queries, ``SHOW``, ``DESCRIBE``, ``EXPLAIN`` and
``USE default`` run; tables must be the session's own views (or CTEs visible where
they are named, decided by sqlglot's scope analysis); names of DuckDB's own catalog,
table functions and functions that reach files, settings or the catalog are refused
by name. This vetting is not what keeps tenants apart: the session holds only data
already filtered to its principal (see :mod:`workbench.query.engine`), and DuckDB's
own lock-down (no external access, locked configuration) is the last wall.

>>> plan = parse_statement("SELECT to_date(ts) d, count(*) FROM default.telemetry GROUP BY 1",
...                        tables={"telemetry"})
>>> plan.kind, plan.tables
('query', ('telemetry',))
>>> plan.sql
'SELECT TRY_CAST(ts AS DATE) AS d, COUNT(*) AS _c1 FROM telemetry GROUP BY 1'
>>> parse_statement("COPY telemetry TO '/tmp/x'", tables={"telemetry"})
Traceback (most recent call last):
...
workbench.exceptions.QueryRefused: COPY statements are refused; only SELECT/WITH queries, ...
>>> parse_statement("SELEC 1", tables={"telemetry"})
Traceback (most recent call last):
...
workbench.exceptions.QueryFailed: HiveQL syntax error: unknown statement 'SELEC' (line 1, ...
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Collection
from typing import Any, Literal

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, OptimizeError, ParseError, UnsupportedError
from sqlglot.optimizer.scope import Scope, traverse_scope

from workbench.exceptions import QueryFailed, QueryRefused

__all__ = ["DATABASE", "MACROS", "Dialect", "Statement", "StatementKind", "parse_statement"]

logger = logging.getLogger(__name__)

DATABASE = "default"

Dialect = Literal["duckdb", "spark"]
"""The SQL a checked query is written out in: the engine's."""

StatementKind = Literal[
    "query", "explain", "show_tables", "show_databases", "show_partitions", "describe", "use"
]

# DuckDB macros that give Hive semantics where sqlglot's translation does not.
MACROS: tuple[str, ...] = (
    # unix_timestamp(x) on a TIMESTAMP or a 'yyyy-MM-dd HH:mm:ss' string: seconds, BIGINT
    "CREATE MACRO _hive_unix_timestamp(x) AS CAST(floor(epoch(CAST(x AS TIMESTAMPTZ))) AS BIGINT)",
)

_ALLOWED_FIRST_WORDS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "USE", "("}
# statements of Hive or DuckDB that exist but are refused here; any other first word is
# a typo, reported as a syntax error (with the sqlglot tokenizer's keywords, below)
_KNOWN_STATEMENT_WORDS = {
    "ADD", "ATTACH", "CHECKPOINT", "DETACH", "EXPORT", "IMPORT", "INSTALL", "MSCK",
    "RESET", "SUMMARIZE", "UNLOAD", "ABORT", "DFS", "RELOAD", "LOCK", "UNLOCK",
}  # fmt: skip
_REFUSE_HINT = "only SELECT/WITH queries, SHOW, DESCRIBE, EXPLAIN and USE default run here"

# Functions (scalar or table) that reach files, the network, settings or the catalog.
_FORBIDDEN_PREFIXES = (
    "read_",
    "duckdb_",
    "pragma_",
    "parquet_",
    "iceberg_",
    "delta_",
    "sqlite_",
    "postgres_",
    "mysql_",
    "json_execute",
    "sniff_",
    "pg_",
    "has_",
    "inet_",
)
_FORBIDDEN_FUNCTIONS = {
    "getenv",
    "glob",
    "query",
    "query_table",
    "current_setting",
    "getvariable",
    "set_variable",
    "parquet_scan",
    "csv_scan",
    "which_secret",
    "load_extension",
    "enable_profiling",
    "checkpoint",
    "force_checkpoint",
    "test_all_types",
    "test_vector_types",
    "summary",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_query",
    "col_description",
    "obj_description",
    "shobj_description",
    "format_pg_type",
    "format_type",
    "map_to_pg_oid",
    "map_type_id_to_pg_oid",
    "python_map_function",
    "arrow_scan",
    "seq_scan",
    # Spark's: JVM reflection, file names and descriptor files, the catalog
    "reflect",
    "java_method",
    "try_reflect",
    "input_file_name",
    "input_file_block_start",
    "input_file_block_length",
    "from_protobuf",
    "to_protobuf",
    "current_catalog",
}
# Table names no statement may use: the session's raw (already scoped) sources and
# DuckDB's catalog families; the catalog's exact names come from _system_names().
_INTERNAL_TABLE_PREFIXES = ("_src_", "duckdb_", "sqlite_", "pragma_", "pg_", "information_schema")
_TABLE_FUNCTIONS_ALLOWED = {"unnest", "explode", "range", "generate_series"}

_COMMENTS = re.compile(r"^\s*(?:--[^\n]*(?:\n|$)|/\*.*?\*/)", re.DOTALL)
_SHOW = re.compile(
    r"^SHOW\s+(?P<what>TABLES|DATABASES|SCHEMAS|PARTITIONS|COLUMNS)\b\s*(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)


@dataclasses.dataclass(frozen=True)
class Statement:
    """A checked statement: its kind, the DuckDB SQL to run (queries, EXPLAIN), the lake
    tables it reads, and for SHOW/DESCRIBE the table it names and a LIKE pattern."""

    kind: StatementKind
    sql: str = ""
    tables: tuple[str, ...] = ()
    target: str = ""
    pattern: str = ""


def _strip(text: str) -> str:
    text = text.strip()
    while True:
        m = _COMMENTS.match(text)
        if not m:
            break
        text = text[m.end() :].lstrip()
    return text.rstrip().rstrip(";").rstrip()


def _first_word(text: str) -> str:
    if text.startswith("("):
        return "("
    m = re.match(r"[A-Za-z_]+", text)
    return m.group(0).upper() if m else text[:10]


def _is_statement_word(word: str) -> bool:
    from sqlglot.dialects.hive import Hive

    return word in _KNOWN_STATEMENT_WORDS or word in Hive.Tokenizer.KEYWORDS


def _position(original: str, text: str) -> str:
    """``line L, column C`` of where ``text`` (``original`` without its leading
    comments) starts in ``original``."""
    offset = max(original.find(text), 0)
    line = original.count("\n", 0, offset) + 1
    column = offset - original.rfind("\n", 0, offset)
    return f"line {line}, column {column}"


def _did_you_mean(word: str) -> str:
    import difflib

    words = sorted(w for w in _ALLOWED_FIRST_WORDS if w.isalpha())
    close = difflib.get_close_matches(word, words, n=1)
    return (f"did you mean {close[0]}? " if close else "") + (
        "a statement starts with " + ", ".join(words)
    )


def _table_name(raw: str, tables: Collection[str]) -> str:
    name = raw.strip().strip("`").strip('"')
    if "." in name:
        db, _, name = name.partition(".")
        _check_db(db.strip("`"))
    name = name.strip("`").lower()
    if name not in tables:
        raise QueryFailed(
            f"table {name!r} not found",
            hint=f"tables you can query: {', '.join(sorted(tables)) or 'none'}",
        )
    return name


def _check_db(db: str) -> None:
    if db and db.lower() != DATABASE:
        raise QueryRefused(
            f"database {db!r} is not accessible",
            hint=f"there is one database, {DATABASE!r} (SHOW TABLES lists its tables)",
        )


def parse_statement(
    hiveql: str, *, tables: Collection[str], dialect: Dialect = "duckdb"
) -> Statement:
    """Classify, check and translate one HiveQL statement.

    ``tables`` are the names the caller's session may read; ``dialect`` is the engine's
    SQL the query is written out in. Raises
    :class:`QueryRefused` for anything outside the allowed statements, tables and
    functions and :class:`QueryFailed` for syntax errors and unsupported syntax.

    The answer depends on nothing else, so the last statements' are kept: a notebook
    cell run again is not parsed again (3 ms of a 20 ms read). Refusals are not kept.
    """
    return _parse_kept(hiveql, frozenset(tables), dialect)


@functools.lru_cache(maxsize=256)
def _parse_kept(hiveql: str, tables: frozenset[str], dialect: Dialect) -> Statement:
    return _parse(hiveql, tables=tables, dialect=dialect)


def _parse(hiveql: str, *, tables: Collection[str], dialect: Dialect) -> Statement:
    text = _strip(hiveql)
    if not text:
        raise QueryFailed("empty statement", hint="write a HiveQL query, e.g. SHOW TABLES")
    first = _first_word(text)
    if first not in _ALLOWED_FIRST_WORDS:
        if not _is_statement_word(first):
            raise QueryFailed(
                f"HiveQL syntax error: unknown statement {first!r} ({_position(hiveql, text)})",
                hint=_did_you_mean(first),
            )
        raise QueryRefused(f"{first} statements are refused", hint=_REFUSE_HINT)
    if first == "SHOW":
        return _show(text, tables)
    if first == "EXPLAIN":
        rest = re.sub(r"^EXPLAIN(\s+(EXTENDED|FORMATTED|ANALYZE))?\s+", "", text, flags=re.I)
        inner = parse_statement(rest, tables=tables, dialect=dialect)
        if inner.kind != "query":
            raise QueryRefused("EXPLAIN takes a query", hint="EXPLAIN SELECT ...")
        return Statement("explain", f"EXPLAIN {inner.sql}", inner.tables)
    try:
        parsed = sqlglot.parse(text, read="hive", error_level=ErrorLevel.RAISE)
    except ParseError as exc:
        raise QueryFailed(f"HiveQL syntax error: {_parse_message(exc)}") from None
    statements = [p for p in parsed if p is not None]
    if len(statements) != 1:
        raise QueryRefused(
            f"{len(statements)} statements given", hint="send one statement at a time"
        )
    tree = statements[0]
    if isinstance(tree, exp.Use):
        target = tree.this
        _check_db(target.name if isinstance(target, exp.Expression) else str(target or ""))
        return Statement("use")
    if isinstance(tree, exp.Describe):
        table = tree.this
        if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
            raise QueryFailed("DESCRIBE takes a table name", hint="DESCRIBE telemetry")
        _check_db(table.db)
        return Statement("describe", target=_table_name(table.name, tables))
    if not isinstance(tree, exp.Query):
        raise QueryRefused(
            f"{type(tree).__name__.upper()} statements are refused", hint=_REFUSE_HINT
        )
    used = _check_query(tree, tables)
    # Spark SQL has Hive's semantics already
    rewrite = _hive_semantics if dialect == "duckdb" else _unchanged
    checked = _hive_column_names(tree.transform(rewrite))
    try:
        sql = checked.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as exc:
        raise QueryFailed(f"unsupported HiveQL: {exc}") from None
    return Statement("query", sql, tuple(sorted(used)))


def _parse_message(exc: ParseError) -> str:
    if exc.errors:
        first = exc.errors[0]
        return (
            f"{first.get('description')} near {first.get('highlight')!r} "
            f"(line {first.get('line')}, column {first.get('col')})"
        )
    return str(exc).splitlines()[0]


def _show(text: str, tables: Collection[str]) -> Statement:
    m = _SHOW.match(text)
    if not m:
        what = text.split()[1].upper() if len(text.split()) > 1 else ""
        raise QueryRefused(
            f"SHOW {what} is not supported",
            hint="SHOW TABLES, SHOW DATABASES, SHOW PARTITIONS t and SHOW COLUMNS IN t are",
        )
    what, rest = m.group("what").upper(), m.group("rest").strip()
    if what == "TABLES":
        db = re.match(r"^(IN|FROM)\s+(\S+)\s*", rest, flags=re.I)
        if db:
            _check_db(db.group(2).strip("`"))
            rest = rest[db.end() :]
        like = re.match(r"^(LIKE\s+)?'([^']*)'$", rest, flags=re.I)
        if rest and not like:
            raise QueryFailed(f"cannot read SHOW TABLES {rest!r}", hint="SHOW TABLES [LIKE 'p*']")
        return Statement("show_tables", pattern=like.group(2) if like else "")
    if what in ("DATABASES", "SCHEMAS"):
        like = re.match(r"^(LIKE\s+)?'([^']*)'$", rest, flags=re.I)
        return Statement("show_databases", pattern=like.group(2) if like else "")
    if what == "PARTITIONS":
        return Statement("show_partitions", target=_table_name(rest, tables))
    rest = re.sub(r"^(IN|FROM)\s+", "", rest, flags=re.I)
    return Statement("describe", target=_table_name(rest.split()[0] if rest else "", tables))


def _function_name(node: Any) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return type(node).__name__.lower()


def _forbidden(name: str) -> bool:
    return name in _FORBIDDEN_FUNCTIONS or name.startswith(_FORBIDDEN_PREFIXES)


def _check_query(tree: Any, tables: Collection[str]) -> set[str]:
    """Refuse what a query may not touch; return the lake tables it reads."""
    cte_refs = _cte_references(tree)
    used: set[str] = set()
    for node in tree.walk():
        if isinstance(node, exp.CTE):
            _check_not_system(node.alias_or_name.lower())
        elif isinstance(node, exp.Table):
            inner = node.this
            if not isinstance(inner, exp.Identifier):
                name = _function_name(inner) if isinstance(inner, exp.Expression) else "?"
                if name not in _TABLE_FUNCTIONS_ALLOWED:
                    raise QueryRefused(
                        f"table function {name.upper()} is refused",
                        hint="query the lake's tables (SHOW TABLES lists them)",
                    )
                continue
            if node.catalog:
                raise QueryRefused(f"catalog {node.catalog!r} is not accessible")
            _check_db(node.db)
            name = node.name.lower()
            _check_not_system(name)
            if id(node) in cte_refs:
                continue
            if name not in tables:
                raise QueryFailed(
                    f"table {name!r} not found",
                    hint=f"tables you can query: {', '.join(sorted(tables)) or 'none'}",
                )
            used.add(name)
            node.set("db", None)
            node.set("this", exp.to_identifier(name))
        elif isinstance(node, exp.Func):
            name = _function_name(node)
            if _forbidden(name):
                raise QueryRefused(
                    f"function {name.upper()} is refused",
                    hint="functions that reach files, settings or the catalog are not available",
                )
            if name.startswith("_hive_"):
                raise QueryRefused(f"function {name.upper()} is internal")
        elif isinstance(node, exp.Placeholder | exp.Parameter):
            raise QueryRefused("parameters and variables are refused")
    return used


def _cte_references(tree: exp.Expression) -> set[int]:
    """The ``Table`` nodes (by id) that name a CTE visible where they stand.

    A CTE's name counts only inside its own scope: outside it, the same name would
    resolve against the engine's catalog. sqlglot's scope analysis decides; a table it
    cannot place is not a CTE reference, so it must be one of the session's tables.
    """
    try:
        scopes = traverse_scope(tree)
    except (OptimizeError, ValueError, KeyError) as exc:
        raise QueryFailed(f"cannot resolve the statement's table references: {exc}") from None
    refs: set[int] = set()
    for scope in scopes:
        for table in scope.tables:
            source = scope.sources.get(table.alias_or_name)
            if isinstance(source, Scope) and source.is_cte and not table.db:
                refs.add(id(table))
    return refs


@functools.cache
def _system_names() -> frozenset[str]:
    """Names in DuckDB's own catalogs (``sqlite_master``, ``pg_class``, ``tables``, ...),
    asked of DuckDB itself so that a new release's additions are covered too."""
    con = duckdb.connect(":memory:")
    try:
        views = con.execute("SELECT view_name FROM duckdb_views() WHERE internal").fetchall()
        tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE internal").fetchall()
        schemas = con.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()
        dbs = con.execute("SELECT database_name FROM duckdb_databases()").fetchall()
    finally:
        con.close()
    return frozenset(str(r[0]).lower() for r in [*views, *tables, *schemas, *dbs])


def _check_not_system(name: str) -> None:
    """Refuse a table or CTE name that is, or could shadow, an engine catalog object."""
    if name.startswith(_INTERNAL_TABLE_PREFIXES) or name in _system_names():
        raise QueryRefused(
            f"{name!r} is a name of the engine's own catalog and is refused",
            hint="query the lake's tables (SHOW TABLES lists them); name CTEs otherwise",
        )


def _hive_semantics(node: exp.Expression) -> exp.Expression:
    """Rewrite where sqlglot's DuckDB output differs from what Hive returns."""
    if isinstance(node, exp.StrToUnix):
        fmt = node.args.get("format")
        # sqlglot marks Hive's formats with "strict"; the default is yyyy-MM-dd HH:mm:ss
        spelled = str(fmt.this).replace("strict", "") if isinstance(fmt, exp.Literal) else None
        if fmt is None or spelled == "%Y-%m-%d %H:%M:%S":
            return exp.Anonymous(this="_hive_unix_timestamp", expressions=[node.this])
        return exp.cast(node, exp.DataType.build("BIGINT"))
    return node


def _unchanged(node: exp.Expression) -> exp.Expression:
    return node


def _hive_column_names(tree: exp.Expression) -> exp.Expression:
    """Unnamed result columns are ``_c0``, ``_c1``, ... as in Hive (not DuckDB's
    ``count_star()``)."""
    select = tree
    while isinstance(select, exp.SetOperation):
        select = select.this
    if isinstance(select, exp.Subquery):
        return tree
    if isinstance(select, exp.Select):
        named = []
        for i, e in enumerate(select.expressions):
            if isinstance(e, exp.Alias | exp.Column | exp.Star) or e.find(exp.Star) is e:
                named.append(e)
            else:
                named.append(exp.alias_(e, f"_c{i}", quoted=False))
        select.set("expressions", named)
    return tree
