"""`workbench up` with every component (what `make demo` runs), on free ports."""

from __future__ import annotations

import json
import time

import psutil
import pytest

from tests.conftest import isolated_env, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_whole_stack_comes_up_healthy_moves_data_and_goes_down_without_leftovers(tmp_path):
    env = isolated_env(
        tmp_path / "home",
        WORKBENCH_SIM_DEVICES="40",
        WORKBENCH_SIM_INTERVAL="2",
        WORKBENCH_STARTUP_TIMEOUT="120",
    )
    try:
        up = run_cli(env, "up", timeout=600)
        assert up.returncode == 0, up.stderr[-3000:]
        assert "demo logins (shown once" in up.stdout
        logins = tmp_path / "home" / "demo-logins.txt"
        assert logins.stat().st_mode & 0o777 == 0o600
        status = json.loads(run_cli(env, "status", "--json").stdout)
        names = [c["name"] for c in status["components"]]
        assert names == ["broker", "gateway", "processor", "hiveserver2", "voila", "simulator"]
        assert status["healthy"], status
        pids = [c["pid"] for c in status["components"]]

        # events flow: simulator -> gateway -> broker -> processor -> lake
        deadline = time.monotonic() + 120
        detail = ""
        while time.monotonic() < deadline:
            doc = json.loads(run_cli(env, "status", "--json").stdout)
            detail = next(c["detail"] for c in doc["components"] if c["name"] == "processor")
            if "freshness" in detail and "stored 0," not in detail:
                break
            time.sleep(2)
        assert "freshness" in detail and "stored 0," not in detail, detail

        # a second `up` changes nothing
        again = run_cli(env, "up", timeout=300)
        assert again.returncode == 0
        assert again.stderr.count("already running") == 6
        assert "demo logins: see" in again.stdout
    finally:
        down = run_cli(env, "down", timeout=300)
    assert down.returncode == 0
    survivors = [p for p in pids if psutil.pid_exists(p)]
    assert survivors == []
    children = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline", "environ"])
        if (p.info.get("environ") or {}).get("WORKBENCH_HOME") == env["WORKBENCH_HOME"]
    ]
    assert children == []
