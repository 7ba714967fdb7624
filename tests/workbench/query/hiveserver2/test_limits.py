"""HiveServer2's limits over real sockets: cancelling, the result byte cap, statement
timeouts, the per-user statement cap and the connection caps."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pyhive.exc import OperationalError
from TCLIService import ttypes as t
from thrift.transport.TTransport import TTransportException

from tests.workbench.query.hiveserver2.fixtures import limits
from tests.workbench.query.hiveserver2.wire import ENDLESS, connect, server_op, wait_for
from workbench.query.hiveserver2 import server as server_module

pytestmark = pytest.mark.integration

# `lake` and `server` (one per test): the fixtures of tests/workbench/query/hiveserver2/fixtures.py


def error_of(exc: OperationalError) -> str:
    return str(exc.args[0].status.errorMessage)


def test_cancel_operation_stops_a_running_async_statement(server):
    conn = connect(server, "ann")
    cur = conn.cursor()
    cur.execute(ENDLESS, async_=True)
    op = server_op(server, cur._operationHandle)
    wait_for(lambda: op.state == t.TOperationState.RUNNING_STATE, "the statement to run")
    cur.cancel()  # answers once the statement has stopped
    assert op.done.is_set()
    assert op.state == t.TOperationState.CANCELED_STATE
    assert cur.poll().operationState == t.TOperationState.CANCELED_STATE
    assert server.backend.running == {}
    cur.execute("SELECT 'next' AS x")
    assert cur.fetchall() == [("next",)]
    conn.close()


@limits(hive_max_result_bytes=1 << 20)
def test_result_over_the_byte_cap_is_refused_with_its_hint(server):
    conn = connect(server, "ann")
    cur = conn.cursor()
    cur.execute("SELECT repeat('x', 1000) AS s FROM range(500)")
    assert len(cur.fetchall()) == 500
    with pytest.raises(OperationalError) as info:
        cur.execute("SELECT repeat('x', 1000) AS s FROM range(5000)")
    conn.close()
    message = error_of(info.value)
    assert message.startswith("the result is larger than 1048576 bytes;")
    assert "raise WORKBENCH_HIVE_MAX_RESULT_BYTES" in message


@limits(hive_statement_timeout=1.0)
def test_the_session_runs_on_after_a_timeout(server):
    conn = connect(server, "ann")
    cur = conn.cursor()
    for _ in range(2):
        with pytest.raises(OperationalError) as info:
            cur.execute(ENDLESS)
        assert "ran longer than 1 s" in error_of(info.value)
        cur.execute("SELECT count(*) FROM telemetry")
        assert cur.fetchall() == [(10_000,)]
    conn.close()
    assert server.backend.running == {}


@limits(hive_max_concurrent_per_user=1, hive_statement_timeout=600.0)
def test_the_statement_cap_counts_statements_not_connections(server):
    """`USE default`, which pyhive sends as it connects, is not counted: a user at the cap
    can still connect, and the slot is theirs again once the statement ends."""
    busy = connect(server, "ann")
    cur = busy.cursor()
    cur.execute(ENDLESS, async_=True)
    other = connect(server, "ann")
    with pytest.raises(OperationalError) as info:
        other.cursor().execute("SELECT 1 AS x")
    assert "WORKBENCH_HIVE_MAX_CONCURRENT_PER_USER=1" in error_of(info.value)
    busy.close()  # closing the connection cancels the statement and frees the slot
    wait_for(lambda: server.backend.running == {}, "the closed connection's slot to free")
    again = other.cursor()
    again.execute("SELECT 1 AS x")
    assert again.fetchall() == [(1,)]
    other.close()


def _refused(server: Any, user: str) -> str:
    """Why the server refused ``user``'s new connection (a refusal is expected)."""
    with pytest.raises(TTransportException) as info:
        connect(server, user)
    return str(info.value)


@limits(hive_max_connections_per_user=2)
def test_connections_beyond_the_per_user_cap_are_refused(server):
    held = [connect(server, "ann"), connect(server, "ann")]
    refusal = _refused(server, "ann")
    assert "ann already holds 2 HiveServer2 connections" in refusal
    assert "WORKBENCH_HIVE_MAX_CONNECTIONS_PER_USER=2" in refusal
    connect(server, "bob").close()  # other users are not affected
    held.pop().close()

    def reconnect() -> Any:
        try:
            return connect(server, "ann")
        except TTransportException:
            return None  # the server has not seen the close yet

    held.append(wait_for(reconnect, "ann's freed connection slot"))
    for conn in held:
        conn.close()


@limits(hive_max_connections=2)
def test_connections_beyond_the_total_cap_are_refused(server):
    held = [connect(server, "ann"), connect(server, "bob")]
    assert "WORKBENCH_HIVE_MAX_CONNECTIONS" in _refused(server, "root")
    for conn in held:
        conn.close()
    wait_for(lambda: not server._conns, "the closed connections to be let go")
    connect(server, "root").close()


def test_a_client_that_never_logs_in_is_dropped(server, monkeypatch):
    monkeypatch.setattr(server_module, "HANDSHAKE_TIMEOUT", 0.5)
    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        idle.settimeout(60)  # a bound on the test, far above the handshake timeout
        assert idle.recv(1) == b""  # the server closed it
    wait_for(lambda: not server._conns, "the idle connection to be let go")
