"""`workbench bench ingest` end to end on a small topic (real broker, real processors)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import isolated_env, run_cli
from workbench.config import Config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_ingest_prints_and_records_both_baselines(broker_config: Config, tmp_path):
    env = isolated_env(
        tmp_path / "home",
        KAFKA_BOOTSTRAP_SERVERS=broker_config.bootstrap_servers,
        WORKBENCH_COMMIT_MAX_EVENTS="500",  # several polls and batches even for 3,000 events
    )
    done = run_cli(
        env,
        "bench",
        "ingest",
        "--events",
        "3000",
        "--devices",
        "100",
        "--runs",
        "1",
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("processor drain", "bare kafka-python consumer", "bare librdkafka consumer"):
        assert row in done.stdout
    lines = (tmp_path / "home" / "bench" / "results.jsonl").read_text().splitlines()
    figures = json.loads(lines[-1])["figures"]
    assert figures["events"] == 3000 and figures["processor_client"] == "librdkafka"
    for key in (
        "processor_events_per_s",
        "bare_consumer_events_per_s",
        "bare_librdkafka_events_per_s",
    ):
        assert figures[key] > 0, figures
    assert 0 < figures["bytes_per_event_compacted"] <= figures["bytes_per_event_ingested"] * 2
