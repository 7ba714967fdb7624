"""The HiveServer2 door's resource and session-handle attacks, replayed over real sockets.

* Unbounded statements (finding 4): a ``range`` scan that would run for hours is
  stopped by the statement timeout; a client killed in the middle of a statement,
  synchronous or not, leaves nothing running; one user cannot take more than their
  share of statement slots while another user still runs.
* Handle hijacking (finding 6): a session or operation handle is good only on the
  connection it was issued to, with the secret it was issued with; anything else
  gets the answer an unknown handle gets, and the attempt is audited.
"""

from __future__ import annotations

import concurrent.futures
import uuid

import polars as pl
import pytest
from pyhive.exc import OperationalError
from TCLIService import ttypes as t

from tests.workbench.query.hiveserver2.fixtures import limits
from tests.workbench.query.hiveserver2.wire import (
    ENDLESS,
    SUCCESS,
    audited,
    connect,
    raw_client,
    running_statement,
    server_op,
    wait_for,
)

pytestmark = pytest.mark.integration

# `lake` and `server` (one per test): the fixtures of tests/workbench/query/hiveserver2/fixtures.py


# --- finding 4: unbounded statements --------------------------------------------------------


@limits(hive_statement_timeout=2.0)
@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_runaway_range_scan_is_stopped_by_the_statement_timeout(server, lake, run_async):
    conn = connect(server, "ann")
    cur = conn.cursor()
    if run_async:
        cur.execute(ENDLESS, async_=True)
        done = {t.TOperationState.ERROR_STATE, t.TOperationState.FINISHED_STATE}
        status = wait_for(
            lambda: (s := cur.poll()).operationState in done and s, "the statement to end", 120
        )
        assert status.operationState == t.TOperationState.ERROR_STATE
        message = status.errorMessage
    else:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(cur.execute, ENDLESS)
            with pytest.raises(OperationalError) as info:
                future.result(timeout=120)
        message = info.value.args[0].status.errorMessage
    conn.close()
    assert "the statement ran longer than 2 s and was stopped" in message
    assert "WORKBENCH_HIVE_STATEMENT_TIMEOUT" in message
    entry = audited(
        lake.config,
        lambda log: log.filter(
            (pl.col("action") == "query")
            & (pl.col("target") == ENDLESS)
            & pl.col("detail").str.contains("ran longer than 2 s")
        ),
    )
    assert entry.row(-1, named=True)["outcome"] == "error"
    assert entry.row(-1, named=True)["user"] == "ann"


@limits(hive_statement_timeout=600.0)
@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_killed_client_leaves_no_statement_running(server, run_async):
    raw = raw_client(server, "ann")
    session = raw.open_session()
    request = t.TExecuteStatementReq(session, ENDLESS, runAsync=run_async)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # a synchronous ExecuteStatement answers only when the statement ends
        pool.submit(raw.client.ExecuteStatement, request)
        op = wait_for(lambda: running_statement(server, session), "the statement to start")
        assert server.backend.running == {"ann": 1}
        raw.cut()
        wait_for(op.done.is_set, "the killed client's statement to stop")
    assert op.state == t.TOperationState.CANCELED_STATE
    wait_for(lambda: not server.backend.sessions, "the killed client's session to close")
    assert server.backend.running == {}
    assert not server.backend.operations


@limits(hive_max_concurrent_per_user=2, hive_statement_timeout=600.0)
def test_one_user_cannot_take_every_statement_slot(server, lake):
    held = [connect(server, "ann") for _ in range(2)]
    cursors = [c.cursor() for c in held]
    for cur in cursors:
        cur.execute(ENDLESS, async_=True)
    assert server.backend.running == {"ann": 2}
    extra = connect(server, "ann")
    with pytest.raises(OperationalError) as info:
        extra.cursor().execute("SELECT 'third' AS x")
    message = info.value.args[0].status.errorMessage
    assert "ann already runs 2 HiveQL statements" in message
    assert "WORKBENCH_HIVE_MAX_CONCURRENT_PER_USER=2" in message
    bob = connect(server, "bob")
    cur = bob.cursor()
    cur.execute("SELECT 'bob still runs' AS x")
    assert cur.fetchall() == [("bob still runs",)]
    bob.close()
    cursors[0].cancel()  # a slot frees: ann runs again
    wait_for(lambda: server.backend.running == {"ann": 1}, "the cancelled slot to free")
    cur = extra.cursor()
    cur.execute("SELECT 'third' AS x")
    assert cur.fetchall() == [("third",)]
    for conn in [extra, *held]:
        conn.close()
    entry = audited(
        lake.config,
        lambda log: log.filter(
            (pl.col("target") == "SELECT 'third' AS x") & (pl.col("outcome") == "denied")
        ),
    )
    assert "concurrency cap" in entry.row(0, named=True)["detail"]


# --- finding 6: session and operation handles -----------------------------------------------


def _zeroed(ident: t.THandleIdentifier) -> t.THandleIdentifier:
    return t.THandleIdentifier(guid=ident.guid, secret=b"\x00" * len(ident.secret))


HIJACKS = {
    "other user, right secret": ("bob", False),
    "other user, zeroed secret": ("bob", True),
    "same user, other connection": ("ann", False),
}


@pytest.mark.parametrize("hijack", sorted(HIJACKS))
def test_session_handle_of_another_connection_is_refused(server, lake, hijack):
    intruder_user, zero = HIJACKS[hijack]
    victim, intruder = raw_client(server, "ann"), raw_client(server, intruder_user)
    handle = victim.open_session()
    stolen = t.TSessionHandle(sessionId=_zeroed(handle.sessionId) if zero else handle.sessionId)
    marker = f"SELECT DISTINCT tenant_id FROM telemetry -- {uuid.uuid4().hex}"
    resp = intruder.client.ExecuteStatement(t.TExecuteStatementReq(stolen, marker))
    assert resp.status.statusCode != SUCCESS
    assert resp.operationHandle is None
    # the answer is the one a guid that was never issued gets
    unknown = t.TSessionHandle(
        sessionId=t.THandleIdentifier(guid=uuid.uuid4().bytes, secret=uuid.uuid4().bytes)
    )
    never = intruder.client.ExecuteStatement(t.TExecuteStatementReq(unknown, marker))
    assert resp.status.errorMessage == never.status.errorMessage == "invalid session handle"
    for call in (
        lambda: intruder.client.GetTables(t.TGetTablesReq(stolen)),
        lambda: intruder.client.GetInfo(t.TGetInfoReq(stolen, t.TGetInfoType.CLI_DBMS_NAME)),
        lambda: intruder.client.CloseSession(t.TCloseSessionReq(stolen)),
    ):
        assert call().status.errorMessage == "invalid session handle"
    # the victim's session is untouched and still works on the victim's connection
    own = victim.client.ExecuteStatement(t.TExecuteStatementReq(handle, "SELECT 1 AS x"))
    assert own.status.statusCode == SUCCESS
    assert not server.backend.running
    entry = audited(
        lake.config,
        lambda log: log.filter(
            (pl.col("action") == "session:hive")
            & (pl.col("target") == f"session {handle.sessionId.guid.hex()}")
        ),
    )
    row = entry.row(0, named=True)
    assert (row["user"], row["outcome"]) == (intruder_user, "denied")
    assert "session handle opened by ann on another connection" in row["detail"]
    victim.cut()
    intruder.cut()


def test_own_session_handle_with_a_zeroed_secret_is_refused(server, lake):
    raw = raw_client(server, "ann")
    handle = raw.open_session()
    forged = t.TSessionHandle(sessionId=_zeroed(handle.sessionId))
    resp = raw.client.ExecuteStatement(t.TExecuteStatementReq(forged, "SELECT 1 AS x"))
    assert resp.status.errorMessage == "invalid session handle"
    entry = audited(
        lake.config,
        lambda log: log.filter(
            (pl.col("action") == "session:hive")
            & (pl.col("target") == f"session {handle.sessionId.guid.hex()}")
        ),
    )
    assert "secret other than the one issued" in entry.row(0, named=True)["detail"]
    raw.cut()


def test_operation_handle_of_another_connection_is_refused(server, lake):
    victim, intruder = raw_client(server, "ann"), raw_client(server, "bob")
    session = victim.open_session()
    op = victim.client.ExecuteStatement(
        t.TExecuteStatementReq(session, "SELECT DISTINCT tenant_id AS x FROM telemetry")
    ).operationHandle
    zeroed = t.TOperationHandle(
        operationId=_zeroed(op.operationId),
        operationType=op.operationType,
        hasResultSet=op.hasResultSet,
    )
    for stolen in (op, zeroed):
        fetched = intruder.client.FetchResults(
            t.TFetchResultsReq(stolen, t.TFetchOrientation.FETCH_NEXT, 100)
        )
        assert fetched.status.errorMessage == "invalid operation handle"
        assert fetched.results is None
        for resp in (
            intruder.client.GetOperationStatus(t.TGetOperationStatusReq(stolen)),
            intruder.client.GetResultSetMetadata(t.TGetResultSetMetadataReq(stolen)),
            intruder.client.CancelOperation(t.TCancelOperationReq(stolen)),
            intruder.client.CloseOperation(t.TCloseOperationReq(stolen)),
        ):
            assert resp.status.errorMessage == "invalid operation handle"
    # the victim's own zeroed secret is refused too; the issued handle still works
    own_zeroed = victim.client.FetchResults(
        t.TFetchResultsReq(zeroed, t.TFetchOrientation.FETCH_NEXT, 100)
    )
    assert own_zeroed.status.errorMessage == "invalid operation handle"
    own = victim.client.FetchResults(t.TFetchResultsReq(op, t.TFetchOrientation.FETCH_NEXT, 100))
    assert own.status.statusCode == SUCCESS
    assert own.results.columns[0].stringVal.values == ["t-0001"]
    assert server_op(server, op).state == t.TOperationState.FINISHED_STATE
    entry = audited(
        lake.config,
        lambda log: log.filter(
            (pl.col("action") == "session:hive")
            & (pl.col("target") == f"operation {op.operationId.guid.hex()}")
            & (pl.col("user") == "bob")
        ),
    )
    assert set(entry["outcome"]) == {"denied"}
    victim.cut()
    intruder.cut()
