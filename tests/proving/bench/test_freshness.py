"""``workbench bench freshness``: the pure matching logic, and a tiny real run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from proving.bench.freshness import freshness_percentiles, visible_at
from tests.conftest import isolated_env
from tests.proving.bench.support import run_bench
from workbench.config import Config
from workbench.kafka import external_env


def test_visible_at_is_the_first_poll_reaching_the_probe_ts():
    history = [(10.0, 1_000), (10.5, 2_000), (11.2, 3_500)]
    assert visible_at(history, 1_000) == 10.0
    assert visible_at(history, 1_001) == 10.5
    assert visible_at(history, 3_000) == 11.2
    assert visible_at(history, 3_501) is None
    assert visible_at([], 1) is None


def test_percentiles_use_nearest_rank_and_keep_never_visible_probes():
    values = [float(i) for i in range(1, 101)]
    pct = freshness_percentiles(values)
    assert (pct["p50"], pct["p95"], pct["p99"], pct["max"]) == (50.0, 95.0, 99.0, 100.0)
    assert math.isinf(freshness_percentiles([0.5, math.inf])["p99"])
    assert math.isnan(freshness_percentiles([])["p99"])


@pytest.mark.slow
@pytest.mark.integration
def test_bench_freshness_runs_end_to_end(broker_config: Config, tmp_path: Path):
    env = isolated_env(tmp_path / "home", **external_env(broker_config))
    done, figures = run_bench(
        env,
        "freshness",
        *("--devices", "60", "--seconds", "4", "--rate", "100", "--warmup", "1"),
        timeout=240,
    )
    assert "freshness p99" in done.stdout and "WORKBENCH_COMMIT_INTERVAL" in done.stdout
    assert figures["probes"] > 0 and figures["accepted"] > 0
    assert math.isfinite(figures["freshness_p99_s"])
    assert figures["probes_never_visible"] == 0
    # the scratch home (lake, logs, pid files) is removed and nothing is left running
    assert not list((tmp_path / "home" / "bench").glob("freshness-*"))
