"""`workbench bench registry` end to end at tiny sizes (real gateway, real Delta, real broker):
the table's structure and honest counts, never its wall-clock figures."""

from __future__ import annotations

import pytest

from tests.conftest import isolated_env
from tests.proving.bench.support import run_bench
from workbench.config import Config
from workbench.kafka import external_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_registry_measures_every_size_side_by_side(broker_config: Config, tmp_path):
    env = isolated_env(tmp_path / "home", **external_env(broker_config))
    done, figures = run_bench(
        env, "registry", "--sizes", "20,50", "--changes", "2", "--workers", "2", timeout=600
    )
    header = done.stdout.splitlines()[0]
    assert "20 DEVICES" in header and "50 DEVICES" in header, done.stdout
    for row in (
        "bulk import, one commit",
        "full reload, CPU per worker",
        "one change by feed, CPU per worker",
        "changes by feed / full resyncs",
        "gateway start-up, 2 workers serving",
        "start-up CPU per worker (1-device registry: ",
        "memory per device per worker",
        "provision returned -> first 202",
        "disable returned -> first refusal",
    ):
        assert row in done.stdout, row
    assert "2 of 2 / 0" in done.stdout  # every change by feed, no resync, at both sizes
    assert figures["sizes"] == [20, 50] and figures["workers"] == 2
    assert len(figures["baseline_startup_cpu_s"]) == 2
    assert sorted(figures["by_size"]) == ["20", "50"]
    for size, got in figures["by_size"].items():
        assert got["devices"] == int(size)
        assert got["devices_loaded"] == int(size)  # the view holds the whole fleet
        assert (got["changes"], got["changes_by_feed"], got["resyncs"]) == (2, 2, 0)
        assert len(got["worker_rss_mib"]) == 2
        # every worker has run its start-up (imports, registry load) by the time it serves
        assert len(got["startup_cpu_s"]) == 2 and min(got["startup_cpu_s"]) > 0, got
        # read-your-writes: the first request after each command already has the answer
        assert got["provision_to_202"]["requests"] == [1, 1], got
        assert got["disable_to_refusal"]["requests"] == [1, 1], got
        assert got["provision_to_202"]["missed"] == got["disable_to_refusal"]["missed"] == 0
    home = tmp_path / "home" / "bench" / "registry"
    assert not any(home.glob("n*")), "the scratch lakes are removed"
