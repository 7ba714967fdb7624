"""The Hive query explorer notebook runs top to bottom under papermill against a real
HiveServer2 and a real lake, as an analyst, and downloads only that tenant's rows."""

from __future__ import annotations

from pathlib import Path

import papermill as pm
import polars as pl
import pytest

from tests.conftest import free_port
from tests.workbench.query.hiveserver2.lake import USERS, make_lake, running_server
from workbench.lake.tables import table_uri

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "hive_query_explorer.ipynb"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_explorer_runs_under_papermill_with_its_connection_from_the_environment(
    tmp_path, monkeypatch
):
    lake = make_lake(tmp_path / "home")
    out_dir = tmp_path / "downloads"
    with running_server(lake.config) as server:
        # no connection parameters: the analyst's environment names the port and the user
        monkeypatch.setenv("WORKBENCH_HIVE_PORT", str(server.port))
        monkeypatch.setenv("WORKBENCH_USER", "ann")
        monkeypatch.setenv("WORKBENCH_PASSWORD", USERS["ann"][2])
        pm.execute_notebook(
            str(NOTEBOOK),
            str(tmp_path / "out.ipynb"),
            parameters={"example": "daily averages per building", "output_dir": str(out_dir)},
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
    shown = (tmp_path / "out.ipynb").read_text()
    assert "connected to 127.0.0.1:" in shown and "as ann" in shown
    # the result and the history as tables for people, not polars' frame reprs
    assert "wb-report-table" in shown and "shape: (" not in shown


def test_a_wrong_port_is_one_line_saying_so_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_USER", "ann")
    monkeypatch.setenv("WORKBENCH_PASSWORD", "any")
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(
            str(NOTEBOOK),
            str(tmp_path / "out.ipynb"),
            parameters={"port": free_port()},  # nothing listens there
            cwd=str(tmp_path),
            kernel_name="python3",
        )
    assert err.value.ename == "QueryUnavailable"
    assert "is not reachable" in err.value.evalue and "WORKBENCH_HIVE_PORT" in err.value.evalue
    assert len(err.value.traceback) == 1, err.value.traceback  # the message, no frames
