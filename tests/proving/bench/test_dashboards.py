"""``workbench bench dashboards``: a refused ``--against``, and a tiny real run in Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import isolated_env, run_cli
from tests.proving.bench.support import run_bench

ROOT = Path(__file__).resolve().parents[3]


def test_against_must_be_a_source_tree(tmp_path: Path):
    env = isolated_env(tmp_path / "home")
    done = run_cli(env, "bench", "dashboards", "--against", str(tmp_path), timeout=120)
    assert done.returncode == 2
    assert f"--against {tmp_path}: not a source tree" in done.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_bench_dashboards_times_every_page_of_two_trees_side_by_side(tmp_path: Path):
    env = isolated_env(tmp_path / "home")
    done, figures = run_bench(
        env,
        "dashboards",
        "--devices",
        "20",
        "--minutes",
        "5",
        "--loads",
        "1",
        "--registry",
        "300",
        "--against",
        str(ROOT),
        timeout=600,
    )
    against = f"against {ROOT}"
    assert figures["registry_devices"] == 320
    for page in ("home", "building: figures", "building: charts", "fleet", "provisioning"):
        assert set(figures[page]) == {"this tree", against}, page
        assert all(seconds > 0 for seconds in figures[page].values()), page
    assert all(cpu > 0 for cpu in figures["building: server CPU"].values())
    assert "against / this" in done.stdout
