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


def test_a_page_that_does_not_show_is_reported_and_the_round_goes_on(capsys):
    """At a million devices the building page once never showed: the bench then said
    'internal error' and printed nothing. A page past the timeout is now a figure."""
    import math

    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from proving.bench import dashboards

    class Page:  # what _round uses of a Playwright page; the building page never shows
        def goto(self, url: str) -> None:
            self.url = url

        def wait_for_selector(self, selector: str, **_: object) -> None:
            if selector.startswith(".wb-kpi") or selector.startswith(".wb-trends"):
                raise PlaywrightTimeout("Timeout 120000ms exceeded.")

    page = Page()
    took = dashboards._round({"viewer": page, "operator": page}, ("http://p", "http://v"))
    assert math.isinf(took["building: figures"]) and math.isinf(took["building: charts"])
    assert not math.isinf(took["fleet"]) and not math.isinf(took["provisioning"])
    assert page.url == "http://v/voila/render/provisioning.ipynb"
    assert "building: figures: not shown within 120 s" in capsys.readouterr().err
    assert dashboards._shown(math.inf) == "> 120 s"
