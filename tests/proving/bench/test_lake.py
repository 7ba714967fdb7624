"""``workbench bench lake`` runs end to end on a tiny lake and records its figures."""

from __future__ import annotations

from tests.conftest import isolated_env
from tests.proving.bench.support import run_bench


def test_bench_lake_prints_and_records_both_questions(tmp_path):
    env = isolated_env(tmp_path / "home")
    result, figures = run_bench(
        env,
        "lake",
        "--events",
        "20000",
        "--devices",
        "200",
        "--calls",
        "5",
        "--runs",
        "1",
        timeout=300,
    )
    assert "current averages of one building" in result.stdout
    assert "b-0001, last 3 h of 20,000 events" in result.stdout
    assert figures["building_3h_rows"] > 0
    assert 0 < figures["building_state_p50_s"] <= figures["building_state_p99_s"]
