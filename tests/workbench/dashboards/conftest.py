"""A dashboards lake per test module (cheap: ~2 s) and expectations recomputed from telemetry."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from tests.workbench.dashboards.lake import DashLake, make_lake
from workbench.lake.tables import table_uri


@pytest.fixture
def lake(tmp_path) -> DashLake:
    return make_lake(tmp_path / "home")


def expected_5m(lake: DashLake, building: str) -> dict[str, float]:
    """The five-minute averages of ``building`` straight from the stored telemetry: the
    readings of the five one-minute windows ending at its latest window."""
    events = pl.read_delta(table_uri(lake.config, "telemetry")).filter(
        pl.col("building_id") == building
    )
    events = events.with_columns(window=pl.col("ts").dt.truncate("1m"))
    last = events["window"].max()
    assert isinstance(last, dt.datetime)
    recent = events.filter(pl.col("window") >= last - dt.timedelta(minutes=4))
    return {
        "temperature": float(recent["temperature"].mean()),  # type: ignore[arg-type]
        "humidity": float(recent["humidity"].mean()),  # type: ignore[arg-type]
        "light": float(recent["light"].mean()),  # type: ignore[arg-type]
        "readings": recent.height,
    }
