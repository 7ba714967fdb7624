"""What only Spark Connect (``WORKBENCH_SPARK_MASTER=sc://…``) does at the HiveServer2
door: each door session its own Connect session, the timeout through the server, and the
start-up errors. The results, the tenant scope and the refusals run on Connect as on the
other engines, in hiveserver2/test_server.py."""

from __future__ import annotations

import dataclasses

import pytest
from pyhive import hive
from pyhive.exc import OperationalError

from tests.conftest import free_port
from tests.workbench.query.hiveserver2.lake import USERS, HiveLake, running_server
from workbench.exceptions import SparkUnavailable
from workbench.query.spark import SparkEngine
from workbench.query.spark_connect import SparkConnectEngine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# minutes of work on two cores, in short tasks that stop when interrupted (a join's tasks
# run on after a cancel until they check: they would hold the executors for minutes)
_HEAVY = "SELECT max(id % 7) AS m FROM range(0, 400000000000, 1, 400)"
_SMALL = "SELECT DISTINCT tenant_id FROM tenants"


@pytest.fixture(scope="module")
def server(lake: HiveLake, spark_connect_engine: SparkEngine):
    with running_server(lake.config, spark_connect_engine) as srv:
        yield srv


def connect(server, user: str):
    return hive.connect(
        host="127.0.0.1", port=server.port, username=user, password=USERS[user][2], auth="CUSTOM"
    )


def test_two_tenants_sessions_open_at_once_keep_their_own_views(server):
    # the views of each door session live in its own Connect session on the one server
    ann, bob = connect(server, "ann"), connect(server, "bob")
    try:
        a, b = ann.cursor(), bob.cursor()
        for _ in range(2):
            a.execute("SELECT DISTINCT tenant_id FROM telemetry")
            b.execute("SELECT DISTINCT tenant_id FROM telemetry")
            assert (a.fetchall(), b.fetchall()) == ([("t-0001",)], [("t-0002",)])
    finally:
        ann.close()
        bob.close()


def test_a_statement_past_the_timeout_is_interrupted_on_the_server(lake, spark_connect_engine):
    # long enough for the small statement after it on a loaded machine
    config = dataclasses.replace(lake.config, hive_statement_timeout=20.0)
    with running_server(config, spark_connect_engine) as srv:
        conn = connect(srv, "ann")
        try:
            cur = conn.cursor()
            cur.execute(_SMALL)  # its view made and its code generated before the clock runs
            assert cur.fetchall() == [("t-0001",)]
            with pytest.raises(OperationalError) as info:
                cur.execute(_HEAVY)
            assert "ran longer than 20 s and was stopped" in info.value.args[0].status.errorMessage
            # the same session answers the next statement
            cur.execute(_SMALL)
            assert cur.fetchall() == [("t-0001",)]
        finally:
            conn.close()


def _engine_on(lake: HiveLake, master: str) -> SparkConnectEngine:
    return SparkConnectEngine(dataclasses.replace(lake.config, spark_master=master))


def test_an_unreachable_server_is_said_at_start(lake):
    port = free_port()
    with pytest.raises(SparkUnavailable) as info:
        _engine_on(lake, f"sc://localhost:{port}/;token=secret-value")
    message = str(info.value)
    assert f"the Spark Connect server sc://localhost:{port}/;token=… is not reachable" in message
    assert "secret-value" not in message


def test_a_wrong_token_is_said_at_start(lake, spark_connect_engine):
    assert isinstance(spark_connect_engine, SparkConnectEngine)
    url = spark_connect_engine.url.rsplit(";token=", 1)[0] + ";token=wrong"
    with pytest.raises(SparkUnavailable) as info:
        _engine_on(lake, url)
    assert "refused the endpoint" in str(info.value)
    assert "token" in str(info.value)
