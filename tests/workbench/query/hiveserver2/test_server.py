"""HiveServer2 over real sockets with real pyhive clients against a real Delta lake."""

from __future__ import annotations

import datetime as dt
import socket
import time

import polars as pl
import pytest
from pyhive import hive
from pyhive.exc import OperationalError
from TCLIService import ttypes as t
from thrift.transport.TTransport import TTransportException

from tests.workbench.query.hiveserver2 import wire
from tests.workbench.query.hiveserver2.lake import USERS, HiveLake, make_lake, running_server
from workbench.lake.tables import table_uri
from workbench.query.client import ADMIN_USER, ensure_admin_secret
from workbench.tenancy import access_log
from workbench.tenancy.principal import Principal

pytestmark = pytest.mark.integration


# One server per engine over the shared `lake` (tests/workbench/query/hiveserver2/
# fixtures.py) for the whole module: these tests leave no state in it that another would
# see. What the door does on its own (logins, audit, protocol versions) runs once, on
# DuckDB (DOOR_ONLY); what reaches the engine runs on each: DuckDB, Spark in the door's
# process, and a Spark Connect server (WORKBENCH_SPARK_MASTER=sc://…).
_ENGINES = {"duckdb": None, "spark": "spark_engine", "spark-connect": "spark_connect_engine"}


@pytest.fixture(
    scope="module",
    params=[
        "duckdb",
        pytest.param("spark", marks=pytest.mark.slow),
        pytest.param("spark-connect", marks=pytest.mark.slow),
    ],
)
def server(lake: HiveLake, request: pytest.FixtureRequest):
    engine = _ENGINES[request.param]
    spark = request.getfixturevalue(engine) if engine is not None else None
    with running_server(lake.config, spark) as srv:
        yield srv


DOOR_ONLY = pytest.mark.parametrize("server", ["duckdb"], indirect=True)
# HiveQL's translation and Spark SQL's answers: the same on Spark Connect, whose
# difference is where the sessions live (test_spark_connect.py); the tenant scope and the
# refusals below run on all three engines
SQL_ONLY = pytest.mark.parametrize(
    "server", ["duckdb", pytest.param("spark", marks=pytest.mark.slow)], indirect=True
)


def connect(server, user: str, password: str | None = None):
    password = password if password is not None else USERS[user][2]
    return hive.connect(
        host="127.0.0.1", port=server.port, username=user, password=password, auth="CUSTOM"
    )


def query(server, user: str, sql: str) -> list[tuple]:
    conn = connect(server, user)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchall()
    finally:
        conn.close()


def error_of(exc: OperationalError) -> str:
    return exc.args[0].status.errorMessage


def telemetry(lake: HiveLake) -> pl.DataFrame:
    return pl.read_delta(table_uri(lake.config, "telemetry"))


# --- results equal polars on the Delta tables ---------------------------------------------


@SQL_ONLY
def test_daily_average_per_building_equals_polars(server, lake):
    rows = query(
        server,
        "root",
        "SELECT building_id, to_date(ts) AS day, avg(temperature) AS t, count(*) AS n "
        "FROM telemetry GROUP BY building_id, to_date(ts) ORDER BY building_id, day",
    )
    expected = (
        telemetry(lake)
        .group_by("building_id", pl.col("ts").dt.date().alias("day"))
        .agg(pl.col("temperature").mean().alias("t"), pl.len().alias("n"))
        .sort("building_id", "day")
    )
    assert len(rows) == expected.height > 4
    for got, want in zip(rows, expected.iter_rows(), strict=True):
        assert got[0] == want[0]
        assert got[1] == want[1].isoformat()  # DATE travels as text, as in Hive
        assert got[2] == pytest.approx(want[2], rel=1e-12)
        assert got[3] == want[3]


def test_analyst_results_equal_polars_for_own_tenant_only(server, lake):
    rows = query(
        server,
        "ann",
        "SELECT device_type, count(*), sum(CASE WHEN smoke THEN 1 ELSE 0 END), max(ts) "
        "FROM telemetry GROUP BY device_type ORDER BY device_type",
    )
    frame = telemetry(lake).filter(pl.col("tenant_id") == "t-0001")
    expected = (
        frame.group_by("device_type")
        .agg(pl.len(), pl.col("smoke").fill_null(False).sum(), pl.col("ts").max())
        .sort("device_type")
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [(r[0], r[1], r[2]) for r in expected.iter_rows()]
    assert [r[3] for r in rows] == [r[3].replace(tzinfo=None) for r in expected.iter_rows()]


@SQL_ONLY
def test_hive_functions_over_the_wire(server, lake):
    rows = query(
        server,
        "root",
        "SELECT date_format(ts, 'yyyy-MM-dd HH') h, from_unixtime(unix_timestamp(ts)) s, "
        "unix_timestamp(ts) u, concat_ws('/', tenant_id, building_id) c, "
        "size(collect_list(seq)) n, "
        "percentile_approx(seq, 0.5) p FROM telemetry WHERE device_id = 'dev-000001' "
        "GROUP BY ts, tenant_id, building_id ORDER BY ts LIMIT 1",
    )
    first = (
        telemetry(lake).filter(pl.col("device_id") == "dev-000001").sort("ts").row(0, named=True)
    )
    ts: dt.datetime = first["ts"]
    assert rows[0][0] == ts.strftime("%Y-%m-%d %H")
    assert rows[0][1] == ts.strftime("%Y-%m-%d %H:%M:%S")
    assert rows[0][2] == int(ts.timestamp())
    assert rows[0][3] == f"{first['tenant_id']}/{first['building_id']}"
    assert rows[0][4] == 1


@SQL_ONLY
def test_lateral_view_explode(server):
    rows = query(
        server,
        "root",
        "SELECT b, kind FROM (SELECT building_id b, collect_set(device_type) kinds "
        "FROM telemetry GROUP BY building_id) x LATERAL VIEW explode(kinds) k AS kind "
        "ORDER BY b, kind",
    )
    assert ("b-0001", "environment") in rows
    assert len(rows) == len(set(rows)) >= 4


@SQL_ONLY
def test_fetches_in_batches(server, lake):
    conn = connect(server, "root")
    cur = conn.cursor()
    cur.arraysize = 333
    cur.execute("SELECT device_id, seq FROM telemetry ORDER BY device_id, seq LIMIT 2000")
    rows = cur.fetchall()
    conn.close()
    expected = telemetry(lake).sort("device_id", "seq").head(2000).select("device_id", "seq")
    assert rows == list(expected.iter_rows())


@SQL_ONLY
def test_result_metadata_has_hive_types(server):
    conn = connect(server, "root")
    cur = conn.cursor()
    cur.execute(
        "SELECT device_id, seq, floor, temperature, smoke, ts, event_date, "
        "CAST(1.5 AS DECIMAL(10,2)) AS d, collect_list(seq) OVER () AS l FROM telemetry LIMIT 1"
    )
    types = [d[1] for d in cur.description]
    conn.close()
    assert types == [
        "STRING_TYPE",
        "BIGINT_TYPE",
        "INT_TYPE",
        "DOUBLE_TYPE",
        "BOOLEAN_TYPE",
        "TIMESTAMP_TYPE",
        "DATE_TYPE",
        "DECIMAL_TYPE",
        "STRING_TYPE",  # pyhive maps ARRAY<...> (non-primitive) to STRING
    ]


@SQL_ONLY
def test_show_describe_and_partitions(server, lake):
    assert ("telemetry",) in query(server, "ann", "SHOW TABLES")
    assert ("telemetry_rejected",) not in query(server, "ann", "SHOW TABLES")
    assert ("telemetry_rejected",) in query(server, "root", "SHOW TABLES")
    assert query(server, "ann", "SHOW DATABASES") == [("default",)]
    described = query(server, "ann", "DESCRIBE telemetry")
    assert ("ts", "timestamp", "") in described
    assert ("event_date", "date", "") in described
    days = sorted({d.isoformat() for d in telemetry(lake)["event_date"].to_list()})
    assert query(server, "ann", "SHOW PARTITIONS telemetry") == [(f"event_date={d}",) for d in days]


# --- metadata calls -----------------------------------------------------------------------


def raw_client(server, user: str = "ann"):
    raw = wire.raw_client(server, user)
    return raw.client, raw.transport


def fetch_all(client, op_handle) -> list[tuple]:
    meta = client.GetResultSetMetadata(t.TGetResultSetMetadataReq(op_handle))
    assert meta.status.statusCode == t.TStatusCode.SUCCESS_STATUS
    resp = client.FetchResults(
        t.TFetchResultsReq(op_handle, t.TFetchOrientation.FETCH_NEXT, 100_000)
    )
    assert resp.status.statusCode == t.TStatusCode.SUCCESS_STATUS
    columns = []
    for col in resp.results.columns:
        values = next(v for v in col.__dict__.values() if v is not None).values
        columns.append(values)
    names = [c.columnName for c in meta.schema.columns]
    return [dict(zip(names, r, strict=True)) for r in zip(*columns, strict=True)]


@pytest.fixture
def raw(server):
    client, transport = raw_client(server)
    session = client.OpenSession(
        t.TOpenSessionReq(client_protocol=t.TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V8)
    )
    assert session.status.statusCode == t.TStatusCode.SUCCESS_STATUS
    yield client, session.sessionHandle
    client.CloseSession(t.TCloseSessionReq(session.sessionHandle))
    transport.close()


@SQL_ONLY
def test_raw_thrift_get_tables_columns_schemas_typeinfo(raw):
    client, handle = raw
    tables = fetch_all(
        client,
        client.GetTables(
            t.TGetTablesReq(handle, schemaName="default", tableName="%")
        ).operationHandle,
    )
    assert {r["TABLE_NAME"] for r in tables} >= {"telemetry", "building_metrics_1m", "devices"}
    assert "telemetry_rejected" not in {r["TABLE_NAME"] for r in tables}
    columns = fetch_all(
        client,
        client.GetColumns(
            t.TGetColumnsReq(handle, schemaName="default", tableName="telemetry", columnName="%")
        ).operationHandle,
    )
    by_name = {r["COLUMN_NAME"]: r for r in columns}
    assert by_name["ts"]["TYPE_NAME"] == "TIMESTAMP" and by_name["ts"]["DATA_TYPE"] == 93
    assert by_name["seq"]["TYPE_NAME"] == "BIGINT" and by_name["seq"]["DATA_TYPE"] == -5
    assert [r["ORDINAL_POSITION"] for r in columns] == list(range(1, len(columns) + 1))
    schemas = fetch_all(client, client.GetSchemas(t.TGetSchemasReq(handle)).operationHandle)
    assert [r["TABLE_SCHEM"] for r in schemas] == ["default"]
    types = fetch_all(client, client.GetTypeInfo(t.TGetTypeInfoReq(handle)).operationHandle)
    assert {"STRING", "BIGINT", "DOUBLE", "TIMESTAMP", "DECIMAL", "DATE"} <= {
        r["TYPE_NAME"] for r in types
    }
    info = client.GetInfo(t.TGetInfoReq(handle, t.TGetInfoType.CLI_DBMS_NAME))
    assert info.infoValue.stringValue == "Apache Hive"
    assert fetch_all(client, client.GetTableTypes(t.TGetTableTypesReq(handle)).operationHandle)
    assert fetch_all(
        client,
        client.GetFunctions(t.TGetFunctionsReq(handle, functionName="date%")).operationHandle,
    )


@SQL_ONLY
def test_pyhive_cursor_metadata(server):
    conn = connect(server, "ann")
    cur = conn.cursor()
    cur.execute("SELECT * FROM telemetry LIMIT 0")
    assert [d[0] for d in cur.description][:3] == ["device_id", "seq", "device_type"]
    assert cur.fetchall() == []
    conn.close()


@DOOR_ONLY
def test_row_based_results_for_old_protocol(server):
    client, transport = raw_client(server, "ann")
    try:
        session = client.OpenSession(
            t.TOpenSessionReq(client_protocol=t.TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V5)
        )
        assert session.serverProtocolVersion == t.TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V5
        op = client.ExecuteStatement(
            t.TExecuteStatementReq(session.sessionHandle, "SELECT count(*) AS n FROM telemetry")
        ).operationHandle
        resp = client.FetchResults(t.TFetchResultsReq(op, t.TFetchOrientation.FETCH_NEXT, 10))
        assert resp.results.columns is None
        assert resp.results.rows[0].colVals[0].i64Val.value == 10_000
    finally:
        transport.close()


@SQL_ONLY
def test_async_execute_poll_and_cancel(server):
    conn = connect(server, "ann")
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM telemetry", async_=True)
    state = cur.poll().operationState
    while state in (t.TOperationState.INITIALIZED_STATE, t.TOperationState.RUNNING_STATE):
        time.sleep(0.01)
        state = cur.poll().operationState
    assert state == t.TOperationState.FINISHED_STATE
    assert cur.fetchall() == [(10_000,)]
    cur.execute(
        "SELECT count(*) FROM telemetry a CROSS JOIN telemetry b CROSS JOIN telemetry c",
        async_=True,
    )
    cur.cancel()
    assert cur.poll().operationState == t.TOperationState.CANCELED_STATE
    # the cancel returns once the statement has stopped: the session runs the next one
    cur.execute("SELECT count(*) FROM telemetry")
    assert cur.fetchall() == [(10_000,)]
    cur.close()
    conn.close()


@DOOR_ONLY
def test_closing_a_session_stops_its_running_statement(server):
    """CloseSession while a statement runs (no cancel first) stops it and succeeds."""
    for _ in range(3):  # the race between start and close differs from run to run
        conn = connect(server, "ann")
        cur = conn.cursor()
        cur.execute(
            "SELECT count(*) FROM telemetry a CROSS JOIN telemetry b CROSS JOIN telemetry c",
            async_=True,
        )
        conn.close()
    assert query(server, "ann", "SELECT count(*) FROM telemetry") == [(10_000,)]


@SQL_ONLY
def test_unsupported_syntax_is_named(server):
    with pytest.raises(OperationalError) as info:
        query(server, "ann", "SELECT FROM WHERE")
    assert "syntax error" in error_of(info.value)


# --- authentication ------------------------------------------------------------------------


@DOOR_ONLY
def test_wrong_password_refused(server):
    with pytest.raises(TTransportException, match="invalid user name or password"):
        connect(server, "ann", "not-the-password")


@DOOR_ONLY
def test_unknown_user_refused(server):
    with pytest.raises(TTransportException, match="invalid user name or password"):
        connect(server, "mallory", "whatever-password")


@DOOR_ONLY
def test_nosasl_refused_by_default(server):
    with pytest.raises(TTransportException):
        hive.connect(host="127.0.0.1", port=server.port, username="ann", auth="NOSASL")


def test_nosasl_allowed_when_enabled(tmp_path):
    lake = make_lake(tmp_path / "home", WORKBENCH_HIVE_ALLOW_NOSASL="1")
    with running_server(lake.config) as srv:
        conn = hive.connect(host="127.0.0.1", port=srv.port, username="bob", auth="NOSASL")
        cur = conn.cursor()
        cur.execute("SELECT DISTINCT tenant_id FROM telemetry")
        assert cur.fetchall() == [("t-0002",)]
        conn.close()


@DOOR_ONLY
def test_viewer_may_not_run_hiveql(server):
    with pytest.raises(OperationalError) as info:
        connect(server, "rita")
    assert "may not query" in str(info.value)


@DOOR_ONLY
def test_local_admin_secret_login(server, lake):
    conn = hive.connect(
        host="127.0.0.1",
        port=server.port,
        username=ADMIN_USER,
        password=ensure_admin_secret(lake.config),
        auth="CUSTOM",
    )
    cur = conn.cursor()
    cur.execute("SELECT count(DISTINCT tenant_id) FROM telemetry")
    assert cur.fetchall() == [(2,)]
    conn.close()
    with pytest.raises(TTransportException):
        connect(server, ADMIN_USER, "not-the-secret")


@DOOR_ONLY
def test_queries_and_failed_logins_are_audited(server, lake):
    marker = "SELECT 'audit-marker-7' AS m"
    assert query(server, "ann", marker) == [("audit-marker-7",)]
    with pytest.raises(TTransportException):
        connect(server, "ann", "wrong-password-x")
    deadline = time.monotonic() + 20
    while True:
        log = access_log(lake.config, principal=Principal.system())
        hits = log.filter((pl.col("action") == "query") & (pl.col("target") == marker))
        failed = log.filter(pl.col("action") == "login:hive")
        if (hits.height and failed.height) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert hits.row(0, named=True)["user"] == "ann"
    assert hits.row(0, named=True)["outcome"] == "ok"
    assert failed.filter(pl.col("outcome") == "denied").height >= 1


# --- tenant isolation ----------------------------------------------------------------------

ESCAPES = [
    "SELECT DISTINCT tenant_id FROM telemetry WHERE tenant_id = 't-0002'",
    "SELECT DISTINCT tenant_id FROM telemetry WHERE tenant_id = 't-0002' OR 1=1",
    "SELECT DISTINCT tenant_id FROM telemetry "
    "UNION SELECT DISTINCT tenant_id FROM building_metrics_1m",
    "SELECT DISTINCT tenant_id FROM (SELECT * FROM telemetry) x "
    "WHERE x.tenant_id <> 't-0001' OR TRUE",
    "SELECT DISTINCT tenant_id FROM telemetry -- WHERE tenant_id = 't-0001'",
    "SELECT /* scope? */ DISTINCT tenant_id FROM default.telemetry",
    "WITH t AS (SELECT tenant_id FROM telemetry) SELECT DISTINCT tenant_id FROM t",
    "SELECT DISTINCT tenant_id FROM devices",
    "SELECT DISTINCT tenant_id FROM buildings",
    "SELECT DISTINCT tenant_id FROM tenants",
    "SELECT DISTINCT d.tenant_id FROM devices d JOIN telemetry e ON d.device_id = e.device_id",
]


@pytest.mark.parametrize("sql", ESCAPES)
def test_analyst_never_sees_other_tenants_rows(server, sql):
    explicit = "= 't-0002'" in sql and "OR" not in sql
    assert query(server, "ann", sql) == ([] if explicit else [("t-0001",)])
    assert query(server, "bob", sql) == [("t-0002",)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM duckdb_views()",
        "SELECT * FROM telemetry_rejected",
        "SELECT * FROM other_db.telemetry",
        "SELECT * FROM pg_catalog.pg_class",
        "SELECT * FROM query_table('telemetry')",
        # Spark's ways to a table the session was not given
        "SELECT * FROM spark_catalog.default.telemetry",
        "SELECT * FROM global_temp.telemetry",
        "SELECT * FROM delta.`/tmp`",
        "SELECT * FROM parquet.`/etc`",
    ],
)
def test_catalog_and_hidden_tables_unreachable(server, sql):
    with pytest.raises(OperationalError) as info:
        query(server, "ann", sql)
    message = error_of(info.value)
    assert "refused" in message or "not found" in message or "not accessible" in message


# --- forbidden statements ------------------------------------------------------------------

FORBIDDEN = {
    "SELECT * FROM read_csv('/etc/passwd')": "READ_CSV",
    "SELECT * FROM read_parquet('/tmp/*.parquet')": "READ_PARQUET",
    "SELECT read_text('/etc/passwd')": "READ_TEXT",
    "SELECT * FROM `/etc/passwd`": "not found",
    "SELECT getenv('HOME')": "GETENV",
    "SELECT current_setting('threads')": "CURRENT_SETTING",
    "SELECT * FROM glob('/etc/*')": "GLOB",
    "COPY telemetry TO '/tmp/stolen.csv'": "COPY",
    "ATTACH '/tmp/x.duckdb' AS x": "ATTACH",
    "INSTALL httpfs": "INSTALL",
    "LOAD httpfs": "LOAD",
    "PRAGMA database_list": "PRAGMA",
    "SET enable_external_access = true": "SET",
    "CREATE TABLE x AS SELECT * FROM telemetry": "CREATE",
    "INSERT INTO telemetry SELECT * FROM telemetry": "INSERT",
    "DROP VIEW telemetry": "DROP",
    "EXPORT DATABASE '/tmp/x'": "EXPORT",
    "CALL duckdb_settings()": "CALL",
    "SELECT 1; SELECT 2": "one statement",
    # Spark's: JVM reflection, file names, jars, variables
    "SELECT reflect('java.lang.System', 'getenv', 'HOME')": "REFLECT",
    "SELECT java_method('java.lang.System', 'getenv', 'HOME')": "JAVA_METHOD",
    "SELECT input_file_name() FROM telemetry": "INPUT_FILE_NAME",
    "ADD JAR /tmp/evil.jar": "ADD",
    "CACHE TABLE telemetry": "CACHE",
    "SELECT ${spark.sql.warehouse.dir}": "syntax error",
}


@pytest.mark.parametrize("sql", sorted(FORBIDDEN))
def test_forbidden_statement_refused(server, sql):
    with pytest.raises(OperationalError) as info:
        query(server, "ann", sql)
    assert FORBIDDEN[sql].lower() in error_of(info.value).lower()


def test_nothing_left_listening_after_stop(lake):
    from tests.workbench.query.hiveserver2.lake import running_server as rs

    with rs(lake.config) as srv:
        port = srv.port
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
