"""``workbench bench alarms`` at a tiny size: its table's shape, and every alarm seen and
delivered."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.conftest import isolated_env
from tests.proving.bench.support import run_bench
from workbench.config import Config
from workbench.kafka import external_env


@pytest.mark.slow
@pytest.mark.integration
def test_bench_alarms_runs_end_to_end(broker_config: Config, tmp_path: Path):
    env = isolated_env(tmp_path / "home", **external_env(broker_config))
    done, figures = run_bench(
        env,
        "alarms",
        *("--devices", "60", "--seconds", "6", "--rate", "100", "--warmup", "1"),
        timeout=240,
    )
    header = done.stdout.splitlines()[0].split("  ")
    assert [h.strip() for h in header if h.strip()] == [
        "FIGURE",
        "EVENT FRESHNESS (building_state)",
        "ALARM ROW (alarms)",
        "WEBHOOK DELIVERED",
        "TARGET",
    ]
    for line in ("latency p50", "latency p99", "ratio p99 to freshness"):
        assert line in done.stdout
    # probes alternate raise and end once a second: at least 2 raising ones after warm-up
    assert figures["alarms"] >= 2
    assert figures["alarms_never_visible"] == figures["alarms_never_delivered"] == 0
    assert figures["webhook_requests"] >= figures["alarms"]
    for name in ("fresh", "row", "webhook"):
        assert math.isfinite(figures[f"{name}_p99_s"])
    # the scratch home (lake, logs, pid files) is removed and nothing is left running
    assert not list((tmp_path / "home" / "bench").glob("alarms-*"))
