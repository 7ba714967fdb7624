"""HiveQL classification, refusal and translation (pure logic, no engine)."""

from __future__ import annotations

import pytest

from workbench.exceptions import QueryFailed, QueryRefused
from workbench.query.hiveql import parse_statement

TABLES = {"telemetry", "devices"}


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("COPY telemetry TO '/tmp/x'", "COPY"),
        ("ATTACH '/tmp/x.db' AS x", "ATTACH"),
        ("INSTALL httpfs", "INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("PRAGMA version", "PRAGMA"),
        ("SET threads = 1", "SET"),
        ("CREATE VIEW v AS SELECT 1", "CREATE"),
        ("INSERT INTO telemetry VALUES (1)", "INSERT"),
        ("  -- a comment\n/* another */ DELETE FROM telemetry", "DELETE"),
        ("SELECT * FROM read_csv('/etc/passwd')", "READ_CSV"),
        ("SELECT * FROM read_json_auto('/etc/x.json')", "READ_JSON"),
        ("SELECT getenv('HOME')", "GETENV"),
        (
            "SELECT * FROM telemetry WHERE device_id IN (SELECT * FROM duckdb_tables())",
            "DUCKDB_TABLES",
        ),
        ("SELECT * FROM information_schema.tables", "information_schema"),
        ("SELECT * FROM system.main.telemetry", "catalog"),
        ("SELECT 1; SELECT 2", "one statement"),
        ("USE other", "other"),
        ("SHOW CREATE TABLE telemetry", "SHOW CREATE"),
        ("EXPLAIN COPY telemetry TO 'x'", "COPY"),
    ],
)
def test_refused_and_named(sql, named):
    with pytest.raises(QueryRefused) as info:
        parse_statement(sql, tables=TABLES)
    assert named.lower() in str(info.value).lower()


def test_unknown_table_and_syntax_error_are_failures_not_crashes():
    with pytest.raises(QueryFailed, match="table 'users' not found"):
        parse_statement("SELECT * FROM users", tables=TABLES)
    with pytest.raises(QueryFailed, match="syntax error"):
        parse_statement("SELECT FROM WHERE", tables=TABLES)


@pytest.mark.parametrize(
    ("sql", "where"),
    [("SELEC 1", "line 1, column 1"), ("-- a note\n  SELCT *", "line 2, column 3")],
)
def test_a_misspelt_first_word_is_a_syntax_error_not_a_refusal(sql, where):
    with pytest.raises(QueryFailed) as info:
        parse_statement(sql, tables=TABLES)
    assert str(info.value).startswith(f"HiveQL syntax error: unknown statement '{sql.split()[-2]}'")
    assert f"({where})" in str(info.value) and "did you mean SELECT?" in str(info.value)


@pytest.mark.parametrize("sql", ["INSERT INTO t VALUES (1)", "ATTACH 'x.db'", "SET a=1"])
def test_real_statements_that_do_not_run_here_are_still_refused(sql):
    with pytest.raises(QueryRefused, match="statements are refused"):
        parse_statement(sql, tables=TABLES)


def test_translation_of_hive_functions():
    st = parse_statement(
        "SELECT unix_timestamp(ts), unix_timestamp(), collect_list(seq), "
        "percentile_approx(temperature, 0.5) FROM default.telemetry",
        tables=TABLES,
    )
    assert st.kind == "query" and st.tables == ("telemetry",)
    assert "_HIVE_UNIX_TIMESTAMP(TS)" in st.sql.upper()
    assert "_HIVE_UNIX_TIMESTAMP(CURRENT_TIMESTAMP)" in st.sql.upper()
    assert "APPROX_QUANTILE" in st.sql
    assert "default" not in st.sql
    assert "AS _c0" in st.sql


def test_ctes_and_lateral_view_are_allowed():
    st = parse_statement(
        "WITH x AS (SELECT collect_set(device_id) ids FROM telemetry) "
        "SELECT id FROM x LATERAL VIEW explode(ids) e AS id",
        tables=TABLES,
    )
    assert "UNNEST" in st.sql and st.tables == ("telemetry",)


@pytest.mark.parametrize(
    ("sql", "kind", "target"),
    [
        ("SHOW TABLES", "show_tables", ""),
        ("show tables like 'tele*'", "show_tables", ""),
        ("SHOW DATABASES", "show_databases", ""),
        ("SHOW SCHEMAS", "show_databases", ""),
        ("SHOW PARTITIONS telemetry", "show_partitions", "telemetry"),
        ("DESCRIBE default.telemetry", "describe", "telemetry"),
        ("SHOW COLUMNS IN devices", "describe", "devices"),
        ("USE default", "use", ""),
        ("EXPLAIN SELECT count(*) FROM telemetry", "explain", ""),
    ],
)
def test_commands(sql, kind, target):
    st = parse_statement(sql, tables=TABLES)
    assert (st.kind, st.target) == (kind, target)


def test_a_kept_statement_is_kept_for_the_same_tables_and_dialect_only() -> None:
    sql = "SELECT seq FROM telemetry WHERE temperature > 20"
    assert parse_statement(sql, tables={"telemetry"}).tables == ("telemetry",)
    # the same text for a session that may not read the table: refused, not the kept one
    with pytest.raises(QueryFailed, match="table 'telemetry' not found"):
        parse_statement(sql, tables={"building_state"})
    quoted = "SELECT `seq` FROM telemetry"
    assert parse_statement(quoted, tables={"telemetry"}, dialect="spark").sql == quoted
    assert parse_statement(quoted, tables={"telemetry"}).sql == 'SELECT "seq" FROM telemetry'
    assert parse_statement(sql, tables=["telemetry"]) is parse_statement(sql, tables={"telemetry"})
