"""The daily report's completeness and tables, as pure functions of registry rows and
events (the report notebook's papermill run is in tests/notebooks)."""

from __future__ import annotations

import datetime as dt

import polars as pl

from workbench.dashboards.reports import completeness_table, table_html

DAY = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


def _devices(*rows: tuple[str, str, dt.datetime]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "device_id": [r[0] for r in rows],
            "device_type": ["environment"] * len(rows),
            "floor": [1] * len(rows),
            "room": ["1.01"] * len(rows),
            "status": [r[1] for r in rows],
            "created_at": [r[2] for r in rows],
        }
    )


def _every_minute(device: str, start: dt.datetime, end: dt.datetime) -> list[str]:
    return [device] * int((end - start).total_seconds() // 60)


def test_a_device_that_sent_every_minute_so_far_today_is_complete():
    now = DAY + dt.timedelta(hours=3)  # 03:00: 180 minutes of the day have passed
    devices = _devices(
        ("steady", "provisioned", DAY - dt.timedelta(days=30)),
        ("new", "provisioned", DAY + dt.timedelta(hours=2)),  # provisioned at 02:00
        ("half", "provisioned", DAY - dt.timedelta(days=30)),
        ("off", "disabled", DAY - dt.timedelta(days=30)),  # not expected to send
    )
    events = pl.DataFrame(
        {
            "device_id": _every_minute("steady", DAY, now)
            + _every_minute("new", DAY + dt.timedelta(hours=2), now)
            + _every_minute("half", DAY, DAY + dt.timedelta(minutes=90))
            + _every_minute("off", DAY, DAY + dt.timedelta(minutes=10))
        }
    )
    table = completeness_table(devices, events, start=DAY, end=now)
    got = {
        r["device_id"]: (r["events"], r["expected"], r["completeness"]) for r in table.to_dicts()
    }
    assert got == {"steady": (180, 180, 1.0), "new": (60, 60, 1.0), "half": (90, 180, 0.5)}
    assert table["device_id"].to_list() == ["half", "new", "steady"]  # worst first


def test_a_silent_device_is_listed_at_zero_and_one_sending_twice_a_minute_is_complete():
    end = DAY + dt.timedelta(days=1)  # a past day: all of it
    devices = _devices(
        ("silent", "provisioned", DAY - dt.timedelta(days=1)),
        ("chatty", "provisioned", DAY - dt.timedelta(days=1)),
    )
    events = pl.DataFrame({"device_id": _every_minute("chatty", DAY, end) * 2})
    table = completeness_table(devices, events, start=DAY, end=end)
    assert table.rows() == [  # worst first
        ("silent", "environment", 1, "1.01", 0, 1440, 0.0),
        ("chatty", "environment", 1, "1.01", 2880, 1440, 1.0),
    ]


def test_report_tables_are_for_people_every_row_with_units_and_no_frame_repr():
    hourly = pl.DataFrame(
        {
            "hour": [DAY + dt.timedelta(hours=h) for h in range(52)],
            "readings": [1234] * 52,
            "temperature_avg": [21.456] * 52,
            "comfort_share": [0.877] * 52,
            "room": [None] * 52,
        }
    )
    page = table_html(hourly)
    assert page.count("<tr>") == 53  # the header and all 52 rows, none cut
    assert "<th>hour (UTC)</th>" in page and "<th>temperature avg (°C)</th>" in page
    assert ">03:00<" in page and ">1,234<" in page and ">21.5<" in page and ">87.7 %<" in page
    assert "<td>-</td>" in page  # None, not 'null'
    assert "shape:" not in page and '"' + "b-" not in page and "f64" not in page
    assert "overflow-y:auto" in page  # past 25 rows it scrolls under its header
    assert table_html(hourly.head(0), empty="no alarms this day") == (
        "<p class='wb-report-empty'>no alarms this day</p>"
    )
