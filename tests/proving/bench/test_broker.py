"""``workbench bench broker``: a short real run on a broker of its own, both fetch modes."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.conftest import isolated_env, run_cli
from tests.proving.bench.support import run_bench

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fetch", ["paced", "tail"])
def test_bench_broker_reports_cpu_over_time_and_every_record_read(tmp_path: Path, fetch: str):
    home = tmp_path / "home"
    env = isolated_env(home)
    done, figures = run_bench(
        env,
        "broker",
        *("--seconds", "6", "--sample", "2", "--rate", "300", "--devices", "200"),
        *("--partitions", "3", "--linger-ms", "10", "--fetch", fetch, "--burst-ms", "50"),
        timeout=240,
    )
    assert f"VALUE (3 partitions, linger 10 ms, bursts every 50 ms, {fetch}, 6 s)" in done.stdout
    assert "broker CPU, average" in done.stdout
    assert "s: broker " in done.stderr  # a progress line per reading
    settings = ("partitions", "linger_ms", "fetch", "burst_ms")
    assert tuple(figures[k] for k in settings) == (3, 10, fetch, 50)
    assert figures["produce_errors"] == 0
    # 300/s for 6 s, acknowledged; all of it read back
    assert 1_500 <= figures["produced"] <= 1_800
    assert figures["consumed"] == figures["produced"] and figures["caught_up"] is True
    assert len(figures["broker_cpu_samples"]) == 3
    assert all(share >= 0 for _, share in figures["broker_cpu_samples"])
    assert figures["broker_cpu_avg"] > 0  # the broker did work for it
    # the scratch broker is gone, and so is its home
    leftovers = [
        p.pid
        for p in psutil.process_iter(["environ"])
        if (p.info.get("environ") or {}).get("WORKBENCH_HOME", "").startswith(str(home))
    ]
    assert leftovers == []
    assert not list((home / "bench").glob("broker-*"))


def test_bench_broker_refuses_a_rate_of_nothing(tmp_path: Path):
    done = run_cli(isolated_env(tmp_path / "home"), "bench", "broker", "--rate", "0")
    assert done.returncode == 2
    assert "--rate must be positive, got 0.0" in done.stderr
    assert not (tmp_path / "home" / "bench").exists()  # refused before starting anything
