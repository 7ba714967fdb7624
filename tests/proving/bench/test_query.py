"""``workbench bench query`` through the real command on a small lake (DuckDB only: the
Spark engine's figures are measured by hand, see docs/hive.md)."""

from __future__ import annotations

import pytest

from tests.conftest import isolated_env, run_cli
from tests.proving.bench.support import run_bench

pytestmark = pytest.mark.integration


def test_small_query_alone_and_under_another_tenants_heavy_one(tmp_path):
    env = isolated_env(tmp_path / "home")
    done, figures = run_bench(
        env, "query", "--events", "4000", "--devices", "40", "--days", "0.2", "--runs", "1",
        "--samples", "3", timeout=300,
    )  # fmt: skip
    small = figures["duckdb"]["small_under_heavy"]
    assert small["samples"] == 3
    for key in ("p50_alone_s", "p50_during_s", "p99_alone_s", "p99_during_s"):
        assert small[key] > 0
    assert small["p99_during_s"] >= small["p50_during_s"]
    assert "small query p50: alone → during heavy" in done.stdout
    assert "small query p99: alone → during heavy" in done.stdout


def test_too_few_samples_are_refused(tmp_path):
    done = run_cli(isolated_env(tmp_path / "home"), "bench", "query", "--samples", "1")
    assert done.returncode != 0
    assert "--samples 1: at least 2 are needed for a p99" in done.stderr


def test_two_sizes_side_by_side_with_how_the_times_grow(tmp_path):
    env = isolated_env(tmp_path / "home")
    done, figures = run_bench(
        env, "query", "--events", "2000,8000", "--devices", "20", "--days", "0.2",
        "--runs", "1", "--samples", "2", timeout=300,
    )  # fmt: skip
    assert figures["events"] == [2000, 8000]
    small, large = figures["by_events"]["2000"]["duckdb"], figures["by_events"]["8000"]["duckdb"]
    assert small["daily average per building"]["rows"] > 0
    growth = figures["growth"]["2,000 -> 8,000"]["duckdb"]
    for name, ratio in growth.items():
        expected = large[name]["median_s"] / small[name]["median_s"]
        # the medians are recorded rounded to 0.1 ms, the ratio from the exact ones
        assert ratio == pytest.approx(expected, rel=0.05)
    assert "how each engine's median grows from 2,000 to 8,000 events" in done.stderr
    assert "duckdb 8,000 / 2,000" in done.stdout
    # each size keeps its own lake, so a second run reuses both
    lakes = sorted(p.name for p in (tmp_path / "home" / "bench" / "query-lake").iterdir())
    assert lakes == ["2000-events-20-devices-0.2-days", "8000-events-20-devices-0.2-days"]


def test_sizes_out_of_order_are_refused(tmp_path):
    done = run_cli(isolated_env(tmp_path / "home"), "bench", "query", "--events", "100,10")
    assert done.returncode != 0
    assert "expected positive sizes, ascending, each once" in done.stderr
