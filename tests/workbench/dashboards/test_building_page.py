"""The building page's Panel app driven server-side (its widgets, as a browser's clicks set
them) over a lake produced by the processor's commit path."""

from __future__ import annotations

import datetime as dt
import html

import polars as pl
import pytest

from tests.workbench.dashboards.lake import SILENT
from workbench.alarms import alarm
from workbench.dashboards import DataStore
from workbench.dashboards.views.building_page import BuildingApp
from workbench.tenancy import Principal

pytestmark = pytest.mark.integration

RITA = Principal("rita", "viewer", "t-0001", frozenset({"b-0001"}))


def _fire(lake) -> tuple[str, str]:
    """A fire in one building: its id and tenant."""
    lake.feed(lake.records(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30), 4, scenario="fire"))
    fleet = DataStore(lake.config, Principal.system()).fleet()
    burning = fleet.filter(pl.col("active_smoke_alarms") > 0).row(0, named=True)
    return burning["building_id"], burning["tenant_id"]


def test_an_operator_acknowledges_an_alarm_on_the_page_once_and_an_analyst_only_reads(lake):
    building, tenant = _fire(lake)
    operator = Principal("op", "operator", tenant)
    page = BuildingApp(DataStore(lake.config, operator), building=building)
    other = BuildingApp(DataStore(lake.config, operator), building=building)  # a second tab
    assert page.ack_row.visible
    offered = list(page.ack_pick.options.values())
    assert len(offered) == page.snapshot.alarms.height >= 1  # type: ignore[union-attr]
    picked = offered[-1]
    page.ack_pick.value = picked
    page.ack.clicks += 1  # what a click in the browser sets
    assert "acknowledged by op" in page.ack_result.object
    assert alarm(lake.config, picked, principal=operator)["acknowledged_by"] == "op"
    assert picked not in page.ack_pick.options.values()  # no longer offered
    assert "op" in page.alarms.object  # the alarm list shows who acknowledged
    # the second tab still offers it: the library refuses, naming who was first
    other.ack_pick.value = picked
    other.ack.clicks += 1
    assert f"alarm {picked} was acknowledged already, by op" in other.ack_result.object
    analyst = BuildingApp(
        DataStore(lake.config, Principal("ann", "analyst", tenant)), building=building
    )
    assert not analyst.ack_row.visible
    analyst.ack_pick.options = {"x": offered[0]}  # a forged pick: the library refuses it
    analyst.ack_pick.value = offered[0]
    analyst.ack.clicks += 1
    assert "not authorized: ann (analyst) may not acknowledge alarms" in analyst.ack_result.object
    assert alarm(lake.config, offered[0], principal=operator)["acknowledged_by"] in (None, "op")
    if offered[0] != picked:
        assert alarm(lake.config, offered[0], principal=operator)["acknowledged_by"] is None


def test_an_operator_cannot_acknowledge_another_tenants_alarm(lake):
    building, tenant = _fire(lake)
    stranger = "t-0002" if tenant == "t-0001" else "t-0001"
    theirs = DataStore(lake.config, Principal("op", "operator", tenant)).snapshot(building)
    mine = BuildingApp(DataStore(lake.config, Principal("ops2", "operator", stranger)))
    target = theirs.alarms["alarm_id"][0]
    mine.ack_pick.options = {"forged": target}
    mine.ack_pick.value = target
    mine.ack.clicks += 1
    assert f"no alarm {target!r} of yours" in html.unescape(mine.ack_result.object)
    assert alarm(lake.config, target, principal=Principal.system())["acknowledged_by"] is None


def test_a_custom_range_typed_in_the_picked_zone_shows_exactly_its_minutes(lake):
    from zoneinfo import ZoneInfo

    from workbench.dashboards.views.panel_common import CUSTOM
    from workbench.lake.tables import table_uri

    page = BuildingApp(DataStore(lake.config, RITA), building="b-0001")
    assert "America/Argentina/Buenos_Aires" in page.zone.options  # every zone, not five
    page.zone.value = "Asia/Tokyo"
    page.range.value = CUSTOM
    assert page.custom.visible
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    start, end = now - dt.timedelta(minutes=10), now - dt.timedelta(minutes=4)
    tokyo = ZoneInfo("Asia/Tokyo")
    page.since.value = start.astimezone(tokyo).strftime("%Y-%m-%d %H:%M")
    page.until.value = end.astimezone(tokyo).strftime("%Y-%m-%d %H:%M")
    page.show_range.clicks += 1
    assert page.range_error.object == ""
    shown = page.trends
    assert shown["window_start"].to_list() == [
        start + dt.timedelta(minutes=m) for m in range(6)
    ]  # one row per minute, the end excluded
    stored = (
        pl.read_delta(table_uri(lake.config, "building_metrics_1m"))
        .filter(
            (pl.col("building_id") == "b-0001")
            & pl.col("window_start").is_between(start, end, closed="left")
        )
        .sort("window_start")
    )
    assert shown.filter(pl.col("readings").is_not_null())["readings"].to_list() == (
        stored["readings"].to_list()
    )
    assert len(page.source.data["time"]) == 6
    assert "(Asia/Tokyo)" in page.chart_note.object
    # a device's drill-down shows the same range: its readings from start until end
    device = next(d for d in page.device.options.values() if d and d != SILENT)
    page.device.value = device
    drawn = page.device_source.data["time"]
    wall = [t.astimezone(tokyo).replace(tzinfo=None) for t in (start, end)]
    sent = (
        pl.read_delta(table_uri(lake.config, "telemetry"))
        .filter((pl.col("device_id") == device) & pl.col("ts").is_between(start, end, "left"))
        .height
    )
    assert sent and len(drawn) == sent, (len(drawn), sent)
    assert all(wall[0] <= t < wall[1] for t in drawn), drawn
    # what is no range is refused next to it, and the chart keeps what it showed
    for since, until, why in (
        ("yesterday", "", "from 'yesterday' is not a time"),
        (page.until.value, page.since.value, "before it starts"),
        ("2026-01-01 00:00", "2026-03-01 00:00", "the longest is 30 days"),
        ("2999-01-01", "", "starts in the future"),
    ):
        page.since.value, page.until.value = since, until
        page.show_range.clicks += 1
        assert why in html.unescape(page.range_error.object), since
        assert page.trends is shown


def test_a_building_of_a_huge_fleet_lists_its_first_devices_silent_first_and_exports_all(
    lake, tmp_path, monkeypatch
):
    """A building of a fleet being onboarded holds far more devices than a page can draw
    (at a million devices the page took 13 s of server CPU and never showed): the table and
    the picker stop at DEVICE_ROWS, silent devices first, and the CSV has every one."""
    import workbench.dashboards.views.building_page as building_page
    from workbench.registry.store import Registry

    monkeypatch.setattr(building_page, "DEVICE_ROWS", 50)
    onboarded = [f"new-{i:04d}" for i in range(120)]
    csv = tmp_path / "onboard.csv"
    pl.DataFrame(
        {"device_id": onboarded, "building_id": "b-0001", "device_type": "environment"}
    ).write_csv(csv)
    Registry(lake.config, principal=Principal.system("admin")).import_csv(csv)

    page = BuildingApp(DataStore(lake.config, RITA), building="b-0001")

    devices = page.snapshot.devices  # type: ignore[union-attr]
    assert devices.height > 120
    table = page.devices.object
    listed = [
        cells.split("</td>")[0] for cells in table.split("<tr><td>")[1:]
    ]  # each row's first cell: the device id
    assert len(listed) == 50
    assert set(listed) <= set(devices.filter(pl.col("silent"))["device_id"])  # silent first
    assert f"the first 50 of {devices.height:,} devices, silent ones first" in table
    picked = [v for v in page.device.options.values() if v]
    assert sorted(picked) == sorted(listed)
    exported = pl.read_csv(page._devices_csv())
    assert exported.height == devices.height
    assert set(onboarded) <= set(exported["device_id"])
