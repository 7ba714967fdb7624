"""The simulator's ``mqtt`` target (paho-mqtt, one connection per device) through a real
gateway into a real processor and Delta lake, across a rolling restart of the gateway:
every event stored exactly once."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import polars as pl
import psutil
import pytest

from ingest_service.processor.main import run as run_processor
from proving.processes import stop_process
from simulator.run import RunOptions, run
from tests.simulator.conftest import gateway_env
from workbench.config import Config
from workbench.lake.tables import table_uri

pytestmark = [pytest.mark.integration]


def _workers(proc: subprocess.Popen[bytes]) -> set[int]:
    return {p.pid for p in psutil.Process(proc.pid).children()}


def _healthy(config: Config) -> bool:
    try:
        url = f"http://{config.host}:{config.gateway_port}/healthz"
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _mqtt_accepted(config: Config) -> float:
    """Events the gateway's workers accepted over MQTT so far (0 while unreachable)."""
    try:
        url = f"http://{config.host}:{config.gateway_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    m = re.search(r'^gateway_events_accepted_total\{channel="mqtt"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_qos1_over_a_rolling_restart_lands_exactly_once(kafka_config: Config, tmp_path: Path):
    env = gateway_env(tmp_path / "home", kafka_config, WORKBENCH_COMMIT_INTERVAL="0.5")
    env["WORKBENCH_LOG_LEVEL"] = "INFO"  # the draining workers' lines
    config = Config.from_env(env)
    log = (tmp_path / "gateway.log").open("w")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "ingest_service", "gateway"], env=env, stdout=log, stderr=log
    )
    stop = threading.Event()
    beat = tmp_path / "processor.json"
    processor = threading.Thread(
        target=run_processor,
        args=(config,),
        kwargs={"stop": stop, "heartbeat": beat, "maintain": False},
        daemon=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _healthy(config):
            assert gateway.poll() is None and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.2)
        before = _workers(gateway)
        processor.start()
        restarted = threading.Event()
        accepted_at_restart: list[float] = []

        def rolling_restart() -> None:
            # once the devices publish (200 events stored in Kafka): replace every worker
            while _mqtt_accepted(config) < 200:
                time.sleep(0.2)
            accepted_at_restart.append(_mqtt_accepted(config))
            gateway.send_signal(signal.SIGHUP)
            restarted.set()

        threading.Thread(target=rolling_restart, daemon=True).start()
        options = RunOptions(
            devices=60,
            interval_s=10,
            duration_s=300,
            speedup=25,
            seed=5,
            buildings=3,
            target="mqtt",
            truth=tmp_path / "truth.jsonl",
        )
        summary = run(config, options)
        assert restarted.is_set()
        assert accepted_at_restart[0] < 60 * 30 / 2  # the restart began mid-run
        deadline = time.monotonic() + 60
        while _workers(gateway) & before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _workers(gateway) & before, "the rolling restart did not replace the workers"
        assert summary.stats.failed == 0 and not summary.stats.rejected
        assert summary.stats.accepted == summary.stats.sent == 60 * 30
        deadline = time.monotonic() + 120
        consumed = -1
        while time.monotonic() < deadline and consumed < summary.stats.accepted:
            try:
                consumed = json.loads(beat.read_text())["records"]
            except (OSError, ValueError, KeyError):
                consumed = -1
            time.sleep(0.5)
    finally:
        stop.set()
        processor.join(60)
        stop_process(gateway, timeout_s=20)
        log.close()
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    sent = {(t["device_id"], t["seq"]) for t in truth}
    assert len(sent) == len(truth) == 60 * 30
    telemetry = pl.read_delta(table_uri(config, "telemetry"))
    stored = list(zip(telemetry["device_id"], telemetry["seq"], strict=True))
    assert len(stored) == len(set(stored))  # no duplicates
    assert set(stored) == sent  # nothing lost
    # the drained workers' sessions reconnected: the log shows the door draining
    assert "draining" in (tmp_path / "gateway.log").read_text()
