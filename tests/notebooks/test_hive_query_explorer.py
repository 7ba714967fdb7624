"""The Hive query explorer notebook runs top to bottom under papermill against a real
HiveServer2 and a real lake, as an analyst, and downloads only that tenant's rows."""

from __future__ import annotations

from pathlib import Path

import papermill as pm
import polars as pl
import pytest

from tests.ingest_service.hiveserver2.lake import USERS, make_lake, running_server
from workbench.lake.tables import table_uri

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "hive_query_explorer.ipynb"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_explorer_runs_under_papermill(tmp_path):
    lake = make_lake(tmp_path / "home")
    out_dir = tmp_path / "downloads"
    with running_server(lake.config) as server:
        pm.execute_notebook(
            str(NOTEBOOK),
            str(tmp_path / "out.ipynb"),
            parameters={
                "host": "127.0.0.1",
                "port": server.port,
                "user": "ann",
                "password": USERS["ann"][2],
                "example": "daily averages per building",
                "output_dir": str(out_dir),
            },
            cwd=str(tmp_path),
            kernel_name="python3",
        )
    got = pl.read_csv(out_dir / "hive_result.csv")
    expected = (
        pl.read_delta(table_uri(lake.config, "telemetry"))
        .filter(pl.col("tenant_id") == "t-0001")
        .group_by("building_id", "event_date")
        .agg(pl.len().alias("events"))
        .sort("building_id", "event_date")
    )
    assert (
        got.select("building_id", "events").rows()
        == expected.select("building_id", "events").rows()
    )
    assert pl.read_parquet(out_dir / "hive_result.parquet").height == got.height
