"""The ``simulator`` component of ``workbench up``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import isolated_env
from workbench.config import Config
from workbench.kafka import external_env
from workbench.stack import supervisor
from workbench.stack.base import UpOptions
from workbench.stack.components import registered

pytestmark = pytest.mark.integration


def test_simulator_is_the_last_component_and_on_by_default():
    components = registered()
    assert components[-1].name == "simulator"
    config = Config.from_env(isolated_env(Path("/nonexistent")))
    assert components[-1].enabled(config)
    argv = components[-1].command(config, UpOptions(devices=7, interval=3, scenario="fire"))  # type: ignore[misc]
    assert argv[1:4] == ["-m", "simulator", "run"]
    assert argv[argv.index("--devices") + 1] == "7" and argv[argv.index("--scenario") + 1] == "fire"
    assert argv[argv.index("--target") + 1] == "gateway"
    default = components[-1].command(config, UpOptions())  # type: ignore[misc]
    assert default[default.index("--devices") + 1] == str(config.simulator_devices)


@pytest.mark.slow
def test_up_starts_the_simulator_sending_through_the_gateway(kafka_config: Config, tmp_path: Path):
    env = isolated_env(
        tmp_path / "home",
        **external_env(kafka_config),
        WORKBENCH_TOPIC=kafka_config.topic,
        WORKBENCH_REGISTRY_POLL="0.3",
    )
    config = Config.from_env(env)
    try:
        supervisor.up(
            config,
            UpOptions(devices=120, interval=2, scenario="unprovisioned"),
            only=["kafka", "gateway", "simulator"],
        )
        by_name = {s.name: s for s in supervisor.status(config)}
        assert by_name["simulator"].healthy, by_name["simulator"].detail
        status = config.run_dir / "simulator.status.json"
        first = json.loads(status.read_text())
        deadline = time.monotonic() + 30
        beat = first
        while time.monotonic() < deadline and beat["accepted"] <= first["accepted"]:
            time.sleep(1)
            beat = json.loads(status.read_text())
        assert beat["state"] == "running" and beat["accepted"] > first["accepted"]
        assert beat["rejected"].get("403 unknown_device", 0) > 0  # the one unprovisioned device
        assert "devices (unprovisioned) -> gateway" in by_name["simulator"].address
    finally:
        supervisor.down(config)
    assert json.loads((config.run_dir / "simulator.status.json").read_text())["state"] == "done"
