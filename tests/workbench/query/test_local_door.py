"""The Flight door's same-host path over a real Unix socket and real shared memory,
against a real Delta lake: the result the gRPC path gives, in the same scope, with the
same refusals and access log, read where the door wrote it."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import free_port
from tests.workbench.query.hiveserver2.lake import USERS, HiveLake, running_server
from tests.workbench.query.test_flight import logged
from workbench.exceptions import QueryFailed, QueryRefused
from workbench.lake.tables import table_uri
from workbench.query.flight import flight_read
from workbench.query.hiveserver2 import HiveServer2
from workbench.query.local_door import LocalDoorUnavailable, bulk_read, local_read, socket_name

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(lake: HiveLake):
    with running_server(lake.config) as srv:
        yield srv


def local(server: HiveServer2, user: str, sql: str, password: str | None = None):
    password = USERS[user][2] if password is None else password
    return local_read(sql, port=server.flight_port, user=user, password=password)


def grpc(server: HiveServer2, user: str, sql: str, password: str | None = None):
    password = USERS[user][2] if password is None else password
    return flight_read(sql, host="127.0.0.1", port=server.flight_port, user=user, password=password)


def mapped_results() -> int:
    """How many result files this process has mapped now."""
    return Path("/proc/self/maps").read_text().count("memfd:workbench-result")


def test_an_analyst_reads_their_tenants_rows_from_shared_memory(server, lake: HiveLake) -> None:
    sql = "SELECT device_id, ts, temperature FROM telemetry ORDER BY device_id, ts"
    before = mapped_results()
    table = local(server, "ann", sql)
    # the columns are read where the door wrote them: the result file is mapped here
    assert mapped_results() == before + 1
    got = pl.from_arrow(table)
    truth = pl.read_delta(table_uri(lake.config, "telemetry")).filter(
        pl.col("tenant_id") == "t-0001"
    )
    assert got.height == truth.height > 0
    assert got.equals(pl.from_arrow(grpc(server, "ann", sql)))
    other = local(server, "ann", "SELECT count(*) AS n FROM telemetry WHERE tenant_id = 't-0002'")
    assert other.to_pylist() == [{"n": 0}]
    del table, got, other
    assert mapped_results() == before  # and let go with the frame


@pytest.mark.parametrize("path", [local, grpc], ids=["shared memory", "grpc"])
def test_refusals_and_failures_say_the_same_on_both_paths(server, path) -> None:
    with pytest.raises(
        QueryRefused, match="the Flight door refused: invalid user name or password"
    ):
        path(server, "bob", "SELECT 1", password="not-bobs")
    with pytest.raises(QueryRefused, match=r"rita \(viewer\) may not query"):
        path(server, "rita", "SELECT 1")
    with pytest.raises(QueryRefused, match="table function READ_PARQUET is refused"):
        path(server, "ann", "SELECT * FROM read_parquet('/etc/passwd')")
    with pytest.raises(QueryFailed, match="table 'users' not found"):
        path(server, "ann", "SELECT * FROM users")
    with pytest.raises(QueryFailed, match="ticket is empty"):
        path(server, "ann", "   ")


def test_reads_are_in_the_access_log(server, lake: HiveLake) -> None:
    marker = "SELECT 'local-door-marker-7' AS m"
    assert local(server, "ann", marker).to_pylist() == [{"m": "local-door-marker-7"}]
    hits = logged(lake, (pl.col("action") == "query") & (pl.col("target") == marker))
    entry = hits.row(0, named=True)
    assert (entry["user"], entry["outcome"], entry["detail"][:8]) == ("ann", "ok", "flight: ")


def test_a_bad_request_is_dropped_and_the_door_keeps_serving(server) -> None:
    for garbage in (b"\xff\xff\xff\xff", struct.pack(">I", 5) + b"[1,2]", b"\x00"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(socket_name(server.flight_port))
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(30)
            sock.recv(4096)  # answered or closed, never hung
    assert local(server, "ann", "SELECT 1 AS one").to_pylist() == [{"one": 1}]


def test_bulk_read_takes_the_same_host_path_and_falls_back_to_grpc(server) -> None:
    password = USERS["ann"][2]
    before = mapped_results()
    table = bulk_read(
        "SELECT 1 AS one", host="127.0.0.1", port=server.flight_port, user="ann", password=password
    )
    assert mapped_results() == before + 1 and table.to_pylist() == [{"one": 1}]
    nowhere = free_port()
    with pytest.raises(LocalDoorUnavailable):
        local_read("SELECT 1", port=nowhere, user="ann", password=password)
    # no door on this machine for that port: Flight is tried, and says there is none
    with pytest.raises(QueryFailed, match=rf"no Flight door at 127\.0\.0\.1:{nowhere}"):
        bulk_read("SELECT 1", host="127.0.0.1", port=nowhere, user="ann", password=password)
