"""workbench.lake.read.freshness over a real building_state Delta table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from workbench.config import Config
from workbench.lake import schemas
from workbench.lake.read import freshness
from workbench.lake.tables import BUILDING_STATE, table_uri
from workbench.tenancy.principal import Principal

NOW = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)


def state_row(tenant: str, building: str, last_event_ts: dt.datetime) -> dict[str, object]:
    """One building_state row (only last_event_ts matters here)."""
    return {
        "tenant_id": tenant,
        "building_id": building,
        "as_of": last_event_ts,
        "window_start": last_event_ts - dt.timedelta(minutes=5),
        "temperature_avg_5m": 21.0,
        "humidity_avg_5m": 40.0,
        "light_avg_5m": 300.0,
        "readings_5m": 10,
        "devices_5m": 2,
        "active_smoke_alarms": 0,
        "active_intrusion_alarms": 0,
        "last_event_ts": last_event_ts,
        "metrics_version": 1,
    }


def write_state(config: Config, rows: list[dict[str, object]]) -> None:
    write_deltalake(
        table_uri(config, BUILDING_STATE),
        pa.Table.from_pylist(rows, schema=schemas.BUILDING_STATE),
        mode="overwrite",
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config.from_env({"WORKBENCH_HOME": str(tmp_path / "home")})


def test_freshness_is_now_minus_the_newest_event_in_scope(config: Config):
    write_state(
        config,
        [
            state_row("t-1", "b-1", NOW - dt.timedelta(seconds=90)),
            state_row("t-1", "b-2", NOW - dt.timedelta(seconds=4, milliseconds=250)),
            state_row("t-2", "b-9", NOW - dt.timedelta(seconds=1)),
        ],
    )
    assert freshness(config, principal=Principal.system(), now=NOW) == 1.0
    analyst = Principal(user="ann", role="analyst", tenant_id="t-1")
    assert freshness(config, principal=analyst, now=NOW) == 4.25
    viewer = Principal(user="rita", role="viewer", tenant_id="t-1", buildings=frozenset({"b-1"}))
    assert freshness(config, principal=viewer, now=NOW) == 90.0
    stranger = Principal(user="x", role="analyst", tenant_id="t-3")
    assert freshness(config, principal=stranger, now=NOW) is None


def test_no_table_or_no_row_is_none(config: Config):
    assert freshness(config, principal=Principal.system(), now=NOW) is None
    write_state(config, [])
    assert freshness(config, principal=Principal.system(), now=NOW) is None


def test_the_clock_defaults_to_now_and_must_be_aware(config: Config):
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    write_state(config, [state_row("t-1", "b-1", recent)])
    age = freshness(config, principal=Principal.system())
    assert age is not None and 30 <= age < 60
    with pytest.raises(ValueError, match="naive"):
        freshness(config, principal=Principal.system(), now=dt.datetime(2026, 11, 27))  # noqa: DTZ001
