"""`workbench query` through a real `python -m ingest_service hiveserver2` process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli
from tests.ingest_service.hiveserver2.lake import USERS, make_lake

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli") / "home"
    lake = make_lake(home)
    env = {k: v for k, v in lake.config.env().items()}
    import os

    full = {**{k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}, **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest_service", "hiveserver2"],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", lake.config.hive_port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"hiveserver2 did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
    yield full
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def test_query_as_local_admin_json(served):
    res = run_cli(
        served,
        "query",
        "SELECT tenant_id, count(*) AS n FROM telemetry GROUP BY tenant_id ORDER BY tenant_id",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [
        {"tenant_id": "t-0001", "n": 10000},
        {"tenant_id": "t-0002", "n": 10000},
    ]


def test_query_as_analyst_csv_is_scoped(served):
    env = {**served, "WORKBENCH_PASSWORD": USERS["bob"][2]}
    res = run_cli(env, "query", "SELECT DISTINCT tenant_id FROM telemetry", "--as", "bob", "--csv")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["tenant_id", "t-0002"]


def test_query_table_output_and_refusal(served):
    res = run_cli(served, "query", "SHOW TABLES")
    assert res.returncode == 0 and "telemetry" in res.stdout
    res = run_cli(served, "query", "COPY telemetry TO '/tmp/x.csv'")
    assert res.returncode == 3
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith("workbench: error: COPY statements are refused")
    )


def test_wrong_password_is_one_clear_line(served):
    env = {**served, "WORKBENCH_PASSWORD": "wrong-password"}
    res = run_cli(env, "query", "SHOW TABLES", "--as", "ann")
    assert res.returncode != 0
    assert "refused the login of 'ann'" in res.stderr
