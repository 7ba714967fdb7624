"""The Arrow Flight door over real gRPC sockets, against a real Delta lake: the same
logins, scope, caps and access log as the HiveServer2 door it runs beside."""

from __future__ import annotations

import base64
import time

import polars as pl
import pyarrow as pa
import pyarrow.flight as fl
import pytest

from tests.workbench.query.hiveserver2.lake import USERS, HiveLake, running_server
from workbench.exceptions import QueryFailed, QueryRefused
from workbench.lake.tables import table_uri
from workbench.query.flight import flight_read
from workbench.query.hiveserver2 import HiveServer2
from workbench.tenancy import access_log
from workbench.tenancy.principal import Principal

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(lake: HiveLake):
    with running_server(lake.config) as srv:
        yield srv


def read(server: HiveServer2, user: str, sql: str, password: str | None = None):
    password = USERS[user][2] if password is None else password
    return flight_read(sql, host="127.0.0.1", port=server.flight_port, user=user, password=password)


def test_an_analyst_reads_exactly_their_tenants_rows_as_arrow(server, lake: HiveLake) -> None:
    got = pl.from_arrow(read(server, "ann", "SELECT device_id, ts, temperature FROM telemetry"))
    truth = pl.read_delta(table_uri(lake.config, "telemetry")).filter(
        pl.col("tenant_id") == "t-0001"
    )
    assert got.height == truth.height > 0
    assert sorted(got["device_id"].unique()) == sorted(truth["device_id"].unique())
    # even a statement that asks for the other tenant gets nothing of it
    other = read(server, "ann", "SELECT count(*) AS n FROM telemetry WHERE tenant_id = 't-0002'")
    assert other.to_pylist() == [{"n": 0}]


def test_a_viewer_may_not_query_here_as_at_hiveserver2(server) -> None:
    with pytest.raises(QueryRefused, match=r"rita \(viewer\) may not query"):
        read(server, "rita", "SELECT 1")


def test_the_result_equals_the_hiveserver2_doors(server) -> None:
    import pyhive.hive as hive

    sql = "SELECT building_id, count(*) AS n FROM telemetry GROUP BY building_id ORDER BY 1"
    conn = hive.connect(
        host="127.0.0.1", port=server.port, username="bob", password=USERS["bob"][2], auth="CUSTOM"
    )
    try:
        cur = conn.cursor()
        cur.execute(sql)
        via_hive = cur.fetchall()
    finally:
        conn.close()
    via_flight = [tuple(r.values()) for r in read(server, "bob", sql).to_pylist()]
    assert via_flight == via_hive and via_hive


def logged(lake: HiveLake, where: pl.Expr) -> pl.DataFrame:
    """The access-log entries matching ``where`` (written off the request path: waited for)."""
    deadline = time.monotonic() + 20
    while True:
        hits = access_log(lake.config, principal=Principal.system()).filter(where)
        if hits.height or time.monotonic() > deadline:
            return hits
        time.sleep(0.2)


def test_a_wrong_password_is_refused_and_logged(server, lake: HiveLake) -> None:
    with pytest.raises(QueryRefused, match="invalid user name or password"):
        read(server, "bob", "SELECT 1", password="not-bobs")
    hits = logged(lake, (pl.col("action") == "login:flight") & (pl.col("user") == "bob"))
    assert hits.row(0, named=True)["outcome"] == "denied"


def test_calls_without_or_with_malformed_credentials_are_refused(server) -> None:
    client = fl.FlightClient(f"grpc+tcp://127.0.0.1:{server.flight_port}")
    try:
        with pytest.raises(fl.FlightUnauthenticatedError, match="no credentials"):
            client.do_get(fl.Ticket(b"SELECT 1")).read_all()
        bad = fl.FlightCallOptions(headers=[(b"authorization", b"Basic !!!")])
        with pytest.raises(fl.FlightUnauthenticatedError, match="malformed Basic credentials"):
            client.do_get(fl.Ticket(b"SELECT 1"), bad).read_all()
        good = base64.b64encode(f"ann:{USERS['ann'][2]}".encode())
        options = fl.FlightCallOptions(headers=[(b"authorization", b"Basic " + good)])
        with pytest.raises(fl.FlightServerError, match="not UTF-8"):
            client.do_get(fl.Ticket(b"\xff\xfe"), options).read_all()
        with pytest.raises(fl.FlightServerError, match="ticket is empty"):
            client.do_get(fl.Ticket(b"  "), options).read_all()
        # only do_get is served
        with pytest.raises(pa.ArrowNotImplementedError):
            list(client.list_flights(options=options))
    finally:
        client.close()


def test_refused_statements_and_failures_say_why(server, lake: HiveLake) -> None:
    with pytest.raises(QueryFailed, match="table 'users' not found"):
        read(server, "ann", "SELECT * FROM users")
    with pytest.raises(QueryRefused, match="table function READ_PARQUET is refused"):
        read(server, "ann", "SELECT * FROM read_parquet('/etc/passwd')")
    with pytest.raises(QueryRefused, match="DROP statements are refused"):
        read(server, "ann", "DROP TABLE telemetry")
    with pytest.raises(QueryFailed, match="nosuch"):
        read(server, "ann", "SELECT nosuch FROM telemetry")
    marker = "SELECT 'flight-marker-3' AS m"
    assert read(server, "ann", marker).to_pylist() == [{"m": "flight-marker-3"}]
    hits = logged(lake, (pl.col("action") == "query") & (pl.col("target") == marker))
    entry = hits.row(0, named=True)
    assert (entry["user"], entry["outcome"], entry["detail"][:8]) == ("ann", "ok", "flight: ")


def test_the_row_cap_holds(lake: HiveLake) -> None:
    import dataclasses

    capped = dataclasses.replace(lake.config, hive_max_rows=10)
    with running_server(capped) as srv, pytest.raises(QueryFailed, match="more than 10 rows"):
        read(srv, "ann", "SELECT * FROM telemetry")


def test_no_door_there_is_a_clear_error() -> None:
    from tests.conftest import free_port

    with pytest.raises(QueryFailed, match=r"no Flight door at 127\.0\.0\.1"):
        flight_read("SELECT 1", host="127.0.0.1", port=free_port(), user="ann", password="x")
