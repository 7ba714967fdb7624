"""Running the simulator against the real embedded broker (``--target kafka``)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from simulator.run import RunOptions, run
from workbench.config import Config
from workbench.exceptions import SimulatorError
from workbench.kafka import client_settings, external_env

pytestmark = pytest.mark.integration


def read_topic(config: Config, expected: int, timeout_s: float = 30.0) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(**client_settings(config), consumer_timeout_ms=3000)
    try:
        partitions = [
            TopicPartition(config.topic, p) for p in consumer.partitions_for_topic(config.topic)
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        out: list[tuple[bytes, bytes]] = []
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout_s)
        while len(out) < expected and dt.datetime.now(dt.UTC) < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                out.extend((r.key, r.value) for r in batch)
        return out
    finally:
        consumer.close()


def test_kafka_target_delivers_exactly_the_ground_truth(kafka_config: Config, tmp_path: Path):
    truth = tmp_path / "truth.jsonl"
    options = RunOptions(
        devices=400,
        interval_s=10,
        duration_s=30,
        speedup=60,
        seed=9,
        scenario="late-and-duplicate,unprovisioned",
        target="kafka",
        truth=truth,
        start=dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC),
    )
    lines: list[str] = []
    summary = run(kafka_config, options, report=lines.append)
    assert lines and lines[-1].startswith("done:")
    sent = [json.loads(line) for line in truth.read_text().splitlines()]
    delivered = [s for s in sent if s["outcome"] == "sent"]
    refused = [s for s in sent if s["outcome"] != "sent"]
    assert refused and {s["outcome"] for s in refused} == {"refused-unprovisioned"}
    assert summary.stats.sent == len(delivered) == summary.stats.accepted
    assert summary.stats.skipped == len(refused) and summary.stats.failed == 0
    # 400 devices x 3 intervals, plus resends with the same seq.
    assert len(sent) > 1200
    assert {s["seq"] for s in sent} == {1, 2, 3}

    records = read_topic(kafka_config, len(delivered))
    assert len(records) == len(delivered)
    got = sorted(
        (k.decode(), e["seq"], e["ts"], json.dumps(e["readings"], sort_keys=True))
        for k, e in ((k, json.loads(v)) for k, v in records)
    )
    want = sorted(
        (s["device_id"], s["seq"], s["ts"], json.dumps(s["readings"], sort_keys=True))
        for s in delivered
    )
    assert got == want
    assert len(set(got)) < len(got)  # the resends are there, as the gateway would forward them


def test_duration_stops_and_bad_options_fail(kafka_config: Config):
    with pytest.raises(SimulatorError):
        RunOptions(devices=0)
    with pytest.raises(SimulatorError, match="unknown scenario"):
        RunOptions(scenario="meteor")
    summary = run(
        kafka_config,
        RunOptions(devices=50, interval_s=5, duration_s=10, speedup=100, target="kafka"),
    )
    assert summary.stats.sent == 100
    assert summary.first_seq > 1_700_000_000_000  # survives restarts: wall-clock based


def test_cli_run_json_summary(kafka_config: Config, tmp_path: Path):
    env = {
        "WORKBENCH_HOME": str(tmp_path / "home"),
        **external_env(kafka_config),
        "WORKBENCH_TOPIC": kafka_config.topic,
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "simulator", "run", "--devices", "30", "--interval", "2",
         "--duration", "4", "--speedup", "20", "--target", "kafka", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["sent"] == summary["accepted"] == 60
    assert "done:" in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "simulator", "run", "--scenario", "meteor", "--target", "kafka"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert (
        bad.stderr.strip().splitlines() == [bad.stderr.strip().splitlines()[-1]]
        and "unknown scenario 'meteor'" in bad.stderr
    )
