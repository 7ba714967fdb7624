"""The real beeline (Hive JDBC 2.3, shipped with pyspark) against the door on the Spark
engine: two tenants' analysts each get only their tenant's rows, and a forbidden statement
is refused with the door's message."""

from __future__ import annotations

import subprocess
from pathlib import Path

import polars as pl
import pytest

from tests.workbench.query.hiveserver2.lake import USERS, HiveLake, running_server
from workbench.lake.tables import table_uri
from workbench.query.spark import SparkEngine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# one beeline run per analyst (a JVM start each): two queries, then a statement the door
# refuses (beeline -e stops at the first failed statement, so it comes last)
QUERIES = (
    "SELECT tenant_id, count(*) AS n FROM telemetry GROUP BY tenant_id; "
    "SELECT DISTINCT d.tenant_id FROM devices d JOIN telemetry e ON d.device_id = e.device_id;"
)


def beeline() -> Path:
    import pyspark

    path = Path(pyspark.__file__).parent / "bin" / "beeline"
    assert path.is_file(), f"pyspark ships no beeline at {path}"
    return path


def run_beeline(port: int, user: str, statements: str) -> subprocess.CompletedProcess[str]:
    argv = [str(beeline()), "-u", f"jdbc:hive2://127.0.0.1:{port}/default"]
    argv += ["-n", user, "-p", USERS[user][2], "--outputformat=csv2", "--showHeader=false"]
    # -e, not -f: beeline 2.3 prints its prompt ("null") into the output of a file's rows
    argv += ["--silent=true", "-e", statements]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def server(lake: HiveLake, spark_engine: SparkEngine):
    with running_server(lake.config, spark_engine) as srv:
        yield srv


@pytest.mark.parametrize(
    ("user", "tenant", "forbidden", "refusal"),
    [
        (
            "ann",
            "t-0001",
            "SELECT reflect('java.lang.System', 'getenv', 'HOME')",
            "function REFLECT is refused",
        ),
        (
            "bob",
            "t-0002",
            "SELECT * FROM spark_catalog.default.telemetry",
            "catalog 'spark_catalog' is not accessible",
        ),
    ],
    ids=["ann", "bob"],
)
def test_beeline_analyst_sees_only_own_tenant_and_forbidden_is_refused(
    server, lake: HiveLake, user: str, tenant: str, forbidden: str, refusal: str
):
    done = run_beeline(server.port, user, f"{QUERIES} {forbidden};")
    rows = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    events = pl.read_delta(table_uri(lake.config, "telemetry")).filter(
        pl.col("tenant_id") == tenant
    )
    assert rows == [f"{tenant},{events.height}", tenant], done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"Error: {refusal}"), done.stderr
    assert done.returncode != 0  # beeline says the statement failed
