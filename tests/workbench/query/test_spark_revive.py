"""The Spark engine lost mid-statement (its JVM killed): that statement fails with a clear
error, and the next one, in the same HiveServer2 session, runs on a Spark started again."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.workbench.query.hiveserver2.lake import HiveLake
from workbench.exceptions import QueryFailed
from workbench.query.spark import SparkEngine
from workbench.tenancy import Principal

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# minutes of work: every quadruple of one device's readings (a triple takes a second)
_HEAVY = (
    "SELECT count(*) AS n FROM telemetry a JOIN telemetry b ON a.device_id = b.device_id "
    "JOIN telemetry c ON b.device_id = c.device_id JOIN telemetry d ON c.device_id = d.device_id"
)
_COUNT = "SELECT count(*) AS n FROM telemetry"


def _jvm_pid() -> int:
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    assert gateway is not None
    return int(gateway.proc.pid)


def test_a_lost_spark_fails_the_statement_and_the_next_one_starts_it_again(
    lake: HiveLake, spark_engine: SparkEngine
):
    ann = Principal("ann", "analyst", "t-0001")
    with spark_engine.open(lake.config, ann) as session:
        before = session.execute(_COUNT).table.column("n")[0].as_py()
        assert before > 0
        seen = spark_engine.generation
        outcome: list[BaseException | object] = []

        def heavy() -> None:
            try:
                outcome.append(session.execute(_HEAVY))
            except BaseException as exc:  # what the client would be sent
                outcome.append(exc)

        runner = threading.Thread(target=heavy)
        runner.start()
        tracker = spark_engine.spark.sparkContext.statusTracker()
        deadline = time.monotonic() + 60
        while not tracker.getActiveJobsIds() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # its tasks are under way
        assert runner.is_alive(), f"the heavy statement ended first: {outcome}"
        os.kill(_jvm_pid(), signal.SIGKILL)
        runner.join(timeout=120)
        (failed,) = outcome
        assert isinstance(failed, QueryFailed), failed
        assert "the Spark engine was lost during the statement" in str(failed)
        assert not spark_engine.alive()
        # the same session's next statement starts Spark again, with the tenant's scope
        assert session.execute(_COUNT).table.column("n")[0].as_py() == before
        assert spark_engine.generation == seen + 1 and spark_engine.alive()
        scoped = session.execute("SELECT DISTINCT tenant_id FROM telemetry").table
        assert scoped.column("tenant_id").to_pylist() == ["t-0001"]
