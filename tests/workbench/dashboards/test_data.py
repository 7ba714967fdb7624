"""The DataStore against a lake produced by the processor's commit path."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from tests.workbench.dashboards.conftest import expected_5m
from tests.workbench.dashboards.lake import SILENT
from workbench.dashboards import DataStore
from workbench.exceptions import AccessDenied
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
