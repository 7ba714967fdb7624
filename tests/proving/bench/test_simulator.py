"""``workbench bench simulator``: the simulator's CPU cost, alone and sending to Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import isolated_env
from tests.proving.bench.support import run_bench
from workbench.config import Config
from workbench.kafka import external_env

pytestmark = pytest.mark.integration


def test_bench_prints_a_table_and_appends_a_result(tmp_path: Path):
    env = isolated_env(tmp_path / "home")
    done, figures = run_bench(env, "simulator", "--devices", "3000", "--ticks", "2")
    assert "generator share of a core at 1 event/60s" in done.stdout
    assert figures["devices"] == 3000
    assert figures["generate_cpu_s"] > 0


def test_bench_send_to_kafka(kafka_config: Config, tmp_path: Path):
    env = isolated_env(
        tmp_path / "home",
        **external_env(kafka_config),
        WORKBENCH_TOPIC=kafka_config.topic,
    )
    done, figures = run_bench(
        env, "simulator", "--devices", "2000", "--ticks", "2",
        "--interval", "10", "--send", "kafka", "--speedup", "20",
    )  # fmt: skip
    assert figures["send_events"] == 4000 and figures["send_failed"] == 0
    assert "send to kafka: share of a core" in done.stdout
