"""``workbench report daily`` runs the report notebook with papermill and writes HTML."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_report_daily_writes_html(lake, tmp_path):
    day = dt.datetime.now(dt.UTC).date().isoformat()
    out = tmp_path / "reports"
    result = run_cli(
        lake.env, "report", "daily", "--building", "b-0001", "--date", day, "--output", str(out)
    )
    assert result.returncode == 0, result.stderr
    html = (out / f"daily-b-0001-{day}.html").read_text()
    assert html.strip().endswith("</html>")
    assert "b-0001 (tenant t-0001)" in html and "Completeness per device" in html
    assert "dev-000002" in html  # the silent device is listed with 0 events
    # tables for people, not polars' frame reprs
    assert "shape: (" not in html and "<th>events expected</th>" in html


def test_report_refuses_an_unknown_building_in_one_line(lake):
    result = run_cli(lake.env, "report", "daily", "--building", "b-9999", "--date", "2026-01-01")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "not one of yours" in result.stderr
