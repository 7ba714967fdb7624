"""``workbench bench mqtt`` at a tiny size, with a gateway restart in the middle: every
device reconnects, every PUBACK is a stored record, and the lake holds each once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import isolated_env
from tests.proving.bench.support import run_bench
from workbench.config import Config
from workbench.kafka import external_env


@pytest.mark.slow
@pytest.mark.integration
def test_bench_mqtt_devices_come_back_after_a_gateway_restart(
    broker_config: Config, tmp_path: Path
):
    env = isolated_env(tmp_path / "home", **external_env(broker_config))
    devices = 20
    _, figures = run_bench(
        env,
        "mqtt",
        *("--devices", str(devices), "--seconds", "10", "--interval", "2"),
        *("--storm", "3", "--restart-after", "3", "--workers", "1", "--lake"),
        timeout=240,
    )
    assert figures["connected"] == devices
    # the restart dropped every connection, and every device came back and held on
    assert figures["reconnected"] >= devices
    assert figures["held_to_the_end"] == devices
    assert figures["dropped"] == figures["never_connected"] == 0
    assert figures["all_back_after_restart_s"] is not None
    # every publish acknowledged is on the topic; extra records only from re-sends
    assert figures["acks"] <= figures["records_in_kafka"]
    assert figures["records_in_kafka"] - figures["acks"] <= figures["resent_after_reconnect"]
    assert figures["acks"] == figures["sent"]
    # and in the lake each acknowledged publish is one row: re-sends stored once
    assert figures["rows_in_lake"] == figures["acks"]
    assert figures["distinct_device_seq_in_lake"] == figures["rows_in_lake"]
    assert figures["unacked_when_dropped"] == 0
