"""`workbench up` with every component (what `make demo` runs), on free ports."""

from __future__ import annotations

import json
import os
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
        logins = tmp_path / "home" / "demo-logins.txt"
        assert f"demo logins (created; passwords in {logins}" in up.stdout
        assert logins.stat().st_mode & 0o777 == 0o600
        passwords = [line.split("\t")[4] for line in logins.read_text().splitlines()[1:]]
        assert len(passwords) == 7
        assert [p for p in passwords if p in up.stdout + up.stderr] == []
        status = json.loads(run_cli(env, "status", "--json").stdout)
        names = [c["name"] for c in status["components"]]
        # the hub gives each user an OS account: it starts only as root (as the tests run)
        hub = ["hub"] if os.geteuid() == 0 else []
        assert names == [
            "broker",
            "gateway",
            "processor",
            "notifier",
            "hiveserver2",
            "voila",
            *hub,
            "simulator",
        ]
        if hub:
            assert (
                f"JupyterHub           http://127.0.0.1:{env['WORKBENCH_HUB_PORT']}/" in up.stdout
            )
            hub_line = next(c for c in status["components"] if c["name"] == "hub")
            assert hub_line["metrics"] == {"servers": 0, "max_servers": 20, "spawn_failures": 0}
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
        assert again.stderr.count("already running") == len(names)
        assert f"demo logins (passwords in {logins}" in again.stdout
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
