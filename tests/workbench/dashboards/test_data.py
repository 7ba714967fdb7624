"""The DataStore against a lake produced by the processor's commit path."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from tests.workbench.dashboards.conftest import expected_5m
from tests.workbench.dashboards.lake import SILENT
from workbench.alarms import acknowledge
from workbench.dashboards import DataStore
from workbench.exceptions import AccessDenied
from workbench.lake import telemetry
from workbench.lake.tables import table_uri
from workbench.tenancy import Principal

pytestmark = pytest.mark.integration

RITA = Principal("rita", "viewer", "t-0001", frozenset({"b-0001"}))
OPS = Principal("ops", "operator", "t-0001")


def test_snapshot_shows_the_five_minute_averages_computed_from_telemetry(lake):
    snap = DataStore(lake.config, RITA).snapshot("b-0001")
    want = expected_5m(lake, "b-0001")
    assert snap.state is not None
    assert snap.state["temperature_avg_5m"] == pytest.approx(want["temperature"])
    assert snap.state["humidity_avg_5m"] == pytest.approx(want["humidity"])
    assert snap.state["light_avg_5m"] == pytest.approx(want["light"])
    assert snap.state["readings_5m"] == want["readings"]
    assert snap.smoke_alarms == 0 and snap.intrusion_alarms == 0
    assert snap.trends.height >= 10  # fifteen minutes of one-minute windows


def test_device_health_flags_the_silent_device_only(lake):
    snap = DataStore(lake.config, RITA).snapshot("b-0001")
    silent = snap.devices.filter(pl.col("silent"))["device_id"].to_list()
    assert silent == [SILENT]
    assert snap.devices.height == 10


def test_devices_become_silent_when_the_clock_moves_on(lake):
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    snap = DataStore(lake.config, RITA, clock=lambda: later).snapshot("b-0001")
    assert snap.silent_devices == snap.devices.height


def test_a_fire_shows_active_smoke_alarms_of_that_floor(lake):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    lake.feed(lake.records(start, 4, scenario="fire"))
    store = DataStore(lake.config, Principal.system())
    fleet = store.fleet()
    burning = fleet.filter(pl.col("active_smoke_alarms") > 0)
    assert burning.height == 1
    assert fleet["building_id"][0] == burning["building_id"][0]  # alarms first
    snap = store.snapshot(burning["building_id"][0])
    assert snap.smoke_alarms >= 1
    assert snap.alarms["floor"].n_unique() == 1


@pytest.mark.parametrize("building", ["b-0002", "b-0003", "b-9999", "' OR 1=1 --"])
def test_a_viewer_cannot_read_any_other_building(lake, building):
    with pytest.raises(AccessDenied):
        DataStore(lake.config, RITA).snapshot(building)


def test_scopes_of_the_building_list_and_the_fleet(lake):
    assert DataStore(lake.config, RITA).buildings()["building_id"].to_list() == ["b-0001"]
    ops = DataStore(lake.config, OPS)
    assert ops.buildings()["building_id"].to_list() == ["b-0001", "b-0003"]
    assert sorted(ops.fleet()["building_id"].to_list()) == ["b-0001", "b-0003"]
    assert DataStore(lake.config, Principal.system()).fleet().height == 4
    with pytest.raises(AccessDenied):
        DataStore(lake.config, RITA).fleet()


def test_fleet_counts_silent_devices_per_building(lake):
    fleet = DataStore(lake.config, Principal.system()).fleet()
    silent = dict(zip(fleet["building_id"], fleet["silent_devices"], strict=True))
    assert silent == {"b-0001": 1, "b-0002": 0, "b-0003": 0, "b-0004": 0}
    assert fleet["building_id"][0] == "b-0001"  # silent devices come first


def test_alarms_count_detectors_not_events_and_show_who_acknowledged(lake):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    lake.feed(lake.records(start, 4, scenario="fire"))
    admin = Principal.system()
    smoke = telemetry(lake.config, start=start, principal=admin).filter(pl.col("smoke"))
    readings = smoke.group_by("building_id", "device_id").len()
    assert readings["len"].max() >= 3  # several smoke readings per detector...
    (building,) = readings["building_id"].unique().to_list()
    fleet = DataStore(lake.config, admin).fleet()
    counts = dict(zip(fleet["building_id"], fleet["active_smoke_alarms"], strict=True))
    # ...one alarm per detector, in its building only
    assert counts == {b: readings.height if b == building else 0 for b in counts}
    tenant = fleet.filter(pl.col("building_id") == building)["tenant_id"][0]
    operator = Principal("op", "operator", tenant)
    snap = DataStore(lake.config, operator).snapshot(building)
    assert snap.smoke_alarms == readings.height
    assert set(snap.alarms.filter(pl.col("alarm") == "smoke")["device_id"]) == set(
        readings["device_id"]
    )
    assert snap.alarms["acknowledged_by"].is_null().all()
    first = snap.alarms["alarm_id"][0]
    acknowledge(lake.config, first, principal=operator)
    after = DataStore(lake.config, operator).snapshot(building).alarms
    acked = after.filter(pl.col("alarm_id") == first).row(0, named=True)
    assert acked["acknowledged_by"] == "op" and acked["acknowledged_at"] is not None
    assert after.filter(pl.col("alarm_id") != first)["acknowledged_by"].is_null().all()


def test_trends_have_one_row_per_minute_with_gaps_as_nulls_and_hold_back_the_current_minute(lake):
    # a clock 40.5 minutes after the last window: the lake's minutes, then the 39 complete
    # minutes without data before the current one (last + 40), which is held back
    last = pl.read_delta(table_uri(lake.config, "building_metrics_1m"))["window_start"].max()
    assert isinstance(last, dt.datetime)
    now = last + dt.timedelta(minutes=40, seconds=30)
    store = DataStore(lake.config, RITA, clock=lambda: now)
    rows = store.trends("b-0001", start=now - dt.timedelta(hours=1))
    assert rows.height == 60  # one per minute of the hour
    assert rows["window_start"].max() < now.replace(second=0, microsecond=0)  # held back
    stored = pl.read_delta(table_uri(lake.config, "building_metrics_1m")).filter(
        pl.col("building_id") == "b-0001"
    )
    with_data = rows.filter(pl.col("readings").is_not_null())
    in_range = stored.filter(pl.col("window_start") >= rows["window_start"].min())
    assert with_data.height == in_range.height > 0
    assert rows.filter(pl.col("window_start") > last)["temperature_avg"].null_count() == 39


def test_device_series_is_one_device_of_one_of_your_buildings(lake):
    store = DataStore(lake.config, RITA)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    events = pl.read_delta(table_uri(lake.config, "telemetry"))
    mine = events.filter(pl.col("building_id") == "b-0001")["device_id"].unique().sort()[0]
    series = store.device_series("b-0001", mine, start=start)
    assert series.height == events.filter(pl.col("device_id") == mine).height > 0
    other = events.filter(pl.col("building_id") == "b-0002")["device_id"][0]
    assert store.device_series("b-0001", other, start=start).height == 0
    with pytest.raises(AccessDenied, match="not one of yours"):
        store.device_series("b-0002", other, start=start)
