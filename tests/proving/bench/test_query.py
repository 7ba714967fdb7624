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
