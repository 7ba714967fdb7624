"""HiveQL scope escapes, replayed as a hostile tenant would try them.

Two walls are probed separately:

* the statement vetting refuses every name outside the session's tables, wherever a
  CTE of the same name stands (in-process and through a real pyhive connection);
* with the vetting bypassed altogether (raw SQL on the session's DuckDB connection),
  nothing the session's catalog holds carries another tenant's rows: isolation by
  construction.
"""

from __future__ import annotations

import time
import uuid

import polars as pl
import pytest
from pyhive import hive
from pyhive.exc import OperationalError

from tests.workbench.query.hiveserver2.lake import USERS, HiveLake, running_server
from workbench.exceptions import QueryFailed, QueryRefused
from workbench.lake.tables import table_uri
from workbench.query.engine import QuerySession
from workbench.tenancy import UserStore, access_log
from workbench.tenancy.principal import Principal

pytestmark = pytest.mark.integration

# Names of DuckDB's own catalog that list views (whose SQL names the raw sources),
# databases or settings.
SYSTEM_NAMES = [
    "sqlite_master",
    "sqlite_schema",
    "duckdb_views",
    "duckdb_tables",
    "duckdb_databases",
    "pragma_database_list",
    "pg_class",
    "pg_views",
    "information_schema.tables",
    "temp.main.sqlite_master",
    "system.main.duckdb_views",
]

# Each statement must be refused, whatever it would have returned.
ESCAPES = [
    # the reviewer's: a CTE name, used outside its scope, reaches the catalog
    "SELECT * FROM (WITH sqlite_master AS (SELECT 1 AS a) SELECT * FROM sqlite_master) t1 "
    "CROSS JOIN sqlite_master",
    # the same through a scalar subquery, an IN subquery and a UNION branch
    "SELECT (WITH sqlite_master AS (SELECT 1 a) SELECT a FROM sqlite_master), sql "
    "FROM sqlite_master",
    "SELECT 1 FROM telemetry WHERE device_id IN "
    "(WITH duckdb_views AS (SELECT 'x' v) SELECT v FROM duckdb_views) "
    "AND device_id IN (SELECT sql FROM duckdb_views)",
    "SELECT * FROM (WITH pg_views AS (SELECT 1 a) SELECT 1 a) t UNION ALL SELECT 1 FROM pg_views",
    # a forward reference: DuckDB binds it to the catalog, not to the later CTE
    "WITH b AS (SELECT * FROM sqlite_master), sqlite_master AS (SELECT 1 x) SELECT * FROM b",
    # catalog views and table functions by name
    *[f"SELECT * FROM {name}" for name in SYSTEM_NAMES],
    "SELECT * FROM duckdb_views()",
    "SELECT * FROM pragma_database_list()",
    "SELECT * FROM query('SELECT 1')",
    "SELECT * FROM query_table('telemetry')",
    "SELECT * FROM json_execute_serialized_sql('x')",
    "SELECT * FROM read_parquet('/etc/passwd')",
    "SELECT * FROM glob('*')",
    "SELECT * FROM arrow_scan(1, 2, 3)",
    "SELECT * FROM seq_scan()",
    # catalog functions
    "SELECT pg_get_viewdef(1)",
    "SELECT current_query()",
    "SELECT has_table_privilege('telemetry', 'select')",
    "SELECT pg_sleep(1)",
    "SELECT current_setting('threads')",
    # a CTE that shadows a catalog name, even used in scope
    "WITH sqlite_master AS (SELECT 1 a) SELECT * FROM sqlite_master",
]


# One server over the shared `lake` (tests/workbench/query/hiveserver2/fixtures.py) for
# the whole module: these tests leave no state in it that another would see.
@pytest.fixture(scope="module")
def server(lake: HiveLake):
    with running_server(lake.config) as srv:
        yield srv


def principal(lake: HiveLake, user: str):
    return UserStore(lake.config).get(user).principal()


def raw_sources(session: QuerySession) -> list[str]:
    return [t.raw_name for t in session._tables.values()]


@pytest.mark.parametrize("user", ["ann", "ops"])
@pytest.mark.parametrize("sql", ESCAPES)
def test_escape_is_refused(lake, user, sql):
    seen: list[tuple] = []
    with (
        QuerySession(
            lake.config, principal(lake, user), audit=lambda *a: seen.append(a)
        ) as session,
        pytest.raises((QueryRefused, QueryFailed)),
    ):
        session.execute(sql)
    assert [a[2] for a in seen] in (["denied"], ["error"])


@pytest.mark.parametrize("user", ["ann", "ops"])
def test_raw_source_names_cannot_be_named(lake, user):
    with QuerySession(lake.config, principal(lake, user)) as session:
        for raw in raw_sources(session):
            for sql in (
                f"SELECT count(*) FROM {raw}",
                f"SELECT * FROM (WITH {raw} AS (SELECT 1 AS a) SELECT * FROM {raw}) t1 "
                f"CROSS JOIN {raw}",
                f'SELECT count(*) FROM "{raw}"',
            ):
                with pytest.raises(QueryRefused):
                    session.execute(sql)


def test_ctes_in_their_own_scope_still_work(lake):
    frame = pl.read_delta(table_uri(lake.config, "telemetry"))
    own = frame.filter(pl.col("tenant_id") == "t-0001").height
    with QuerySession(lake.config, principal(lake, "ann")) as session:
        # a CTE that shadows a lake table reads the scoped view inside it
        got = session.execute(
            "WITH telemetry AS (SELECT * FROM telemetry) SELECT count(*) FROM telemetry"
        )
        assert got.rows == [(own,)]
        got = session.execute(
            "WITH a AS (SELECT device_id FROM telemetry), b AS (SELECT * FROM a) "
            "SELECT count(*) FROM b JOIN (SELECT count(*) c FROM a) x ON TRUE"
        )
        assert got.rows == [(own,)]
        got = session.execute("SELECT (WITH s AS (SELECT 41 AS a) SELECT a + 1 FROM s) AS answer")
        assert got.rows == [(42,)]


@pytest.mark.parametrize("user", ["ann", "ops", "bob"])
def test_nothing_in_the_session_catalog_holds_foreign_rows(lake, user):
    """With the vetting bypassed: every view and every raw source, found through
    DuckDB's own catalog as an attacker would, holds only the principal's rows."""
    who = principal(lake, user)
    with QuerySession(lake.config, who) as session:
        con = session._con
        names = [
            r[0]
            for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal "
                "UNION ALL SELECT table_name FROM duckdb_tables() WHERE NOT internal"
            ).fetchall()
        ]
        views_sql = " ".join(r[0] for r in con.execute("SELECT sql FROM duckdb_views()").fetchall())
        # what the view SQL reveals is reachable too
        assert all(raw in views_sql for raw in raw_sources(session))
        arrow_names = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
        reached = set(names) | set(arrow_names) | set(raw_sources(session))
        assert reached >= set(raw_sources(session))
        for name in reached:
            columns = {r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()}
            if "tenant_id" not in columns:
                continue
            bcol = "building_id" if "building_id" in columns else "NULL"
            pairs = con.execute(f'SELECT DISTINCT tenant_id, {bcol} FROM "{name}"').fetchall()
            for tenant, building in pairs:
                assert who.can_read(tenant, building), (name, tenant, building)


def test_the_reviewers_escape_through_pyhive_is_refused_and_audited(lake, server):
    marker = f"/* probe {uuid.uuid4().hex} */"
    conn = hive.connect(
        host="127.0.0.1",
        port=server.port,
        username="ann",
        password=USERS["ann"][2],
        auth="CUSTOM",
    )
    try:
        cur = conn.cursor()
        with pytest.raises(OperationalError) as caught:
            cur.execute(f"{marker} {ESCAPES[0]}")
        assert "sqlite_master" in caught.value.args[0].status.errorMessage
        # the session is still usable and still scoped
        cur.execute("SELECT DISTINCT tenant_id FROM telemetry")
        assert cur.fetchall() == [("t-0001",)]
    finally:
        conn.close()
    deadline = time.monotonic() + 20
    while True:  # the server writes its access log off the request path
        log = access_log(lake.config, principal=Principal.system())
        entries = log.filter(pl.col("target").str.contains(marker, literal=True))
        if entries.height or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert entries["user"].to_list() == ["ann"]
    assert entries["outcome"].to_list() == ["denied"]


def test_a_memory_hungry_statement_is_stopped_by_the_session_memory_limit(lake):
    import dataclasses

    config = dataclasses.replace(lake.config, hive_memory_limit="64MB")
    hungry = (
        "SELECT count(DISTINCT concat(CAST(id AS STRING), 'padding-padding-padding-padding')) "
        "FROM range(20000000) t(id)"
    )
    with QuerySession(config, principal(lake, "ann")) as session:
        with pytest.raises(QueryFailed, match="more than this session's 64MB of memory") as caught:
            session.execute(hungry)
        assert "WORKBENCH_HIVE_MEMORY_LIMIT" in str(caught.value)
        # the session survives its statement
        assert session.execute("SELECT count(*) FROM telemetry WHERE 1 = 0").rows == [(0,)]
