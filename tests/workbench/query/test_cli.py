"""`workbench query` through a real `python -m workbench.query.hiveserver2` process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.cli_inprocess import workbench
from tests.conftest import run_cli
from tests.workbench.query.hiveserver2.lake import USERS, make_lake

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli") / "home"
    lake = make_lake(home)
    env = {k: v for k, v in lake.config.env().items()}
    import os

    full = {**{k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}, **env}
    # its log to a file: a pipe nobody reads fills up and blocks the server mid-write, so
    # that it can no longer stop when told to
    log = home.parent / "hiveserver2.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.query.hiveserver2"],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", lake.config.hive_port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"hiveserver2 did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    yield full
    proc.terminate()
    # a bound for a hang, not a speed check: on CI's loaded machine 20 s ran out once
    assert proc.wait(timeout=90) == 0, log.read_text()[-2000:]


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


def test_a_user_who_may_not_query_is_told_not_allowed_not_unreachable(served):
    env = {**served, "WORKBENCH_PASSWORD": USERS["rita"][2]}  # a viewer
    res = workbench(env, "query", "SHOW TABLES", "--as", "rita")
    assert res.returncode == 1
    line = res.stderr.strip().splitlines()[-1]
    assert "'rita' is not allowed to query" in line and "(viewer) may not query" in line
    assert "not reachable" not in line and "TOpenSessionResp" not in line


def test_a_typo_in_the_first_word_is_a_syntax_error_with_its_position(served):
    res = workbench(served, "query", "\nSELEC 1")
    assert res.returncode == 3
    line = res.stderr.strip().splitlines()[-1]
    assert "HiveQL syntax error: unknown statement 'SELEC' (line 2, column 1)" in line
    assert "did you mean SELECT?" in line and "refused" not in line
