"""The daily building report: its figures (UI-free) and the papermill → HTML run.

``workbench report daily --building B --date D`` executes the report notebook
``daily_building_report.ipynb`` (installed in ``workbench/dashboards/notebooks/reports/``,
or from ``WORKBENCH_REPORTS_DIR``) with papermill (the notebook calls
:func:`daily_report`) and converts the executed notebook to HTML with nbconvert,
code cells hidden.

Comfort is the share of a building's environment readings inside the comfort
band (20-24 °C and 30-60 %RH); completeness is, per enabled device (status
``provisioned``: a disabled or de-provisioned one is not expected to send), the events
stored over the events expected at one per ``interval_s`` for the part of the day that
has elapsed (all of it for a past day) since the device was provisioned.

:func:`table_html` renders the report's tables for people: units in the headers,
numbers rounded, times as ``HH:MM``, every row (in a scrolling box past 25).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import polars as pl

from workbench.config import Config
from workbench.dashboards.data import alarm_kind, registry_for
from workbench.dashboards.notebook_files import DAILY_REPORT, report_notebook
from workbench.exceptions import AccessDenied, InvalidInput
from workbench.lake import building_metrics, telemetry
from workbench.registry import Registry
from workbench.tenancy import Principal

__all__ = [
    "COLUMNS",
    "COMFORT",
    "REPORT_STYLE",
    "DailyReport",
    "completeness_table",
    "daily_report",
    "run_daily_report",
    "table_html",
]

logger = logging.getLogger(__name__)

COMFORT = {"temperature": (20.0, 24.0), "humidity": (30.0, 60.0)}


@dataclasses.dataclass(frozen=True)
class DailyReport:
    """One building's day."""

    building_id: str
    tenant_id: str
    day: dt.date
    summary: dict[str, object]
    hourly: pl.DataFrame  # hour, readings, temperature/humidity/light avg, comfort_share
    alarms: pl.DataFrame  # device_id, alarm, floor, room, first, last, readings
    completeness: pl.DataFrame  # device_id, device_type, events, expected, completeness


def _parse_day(day: dt.date | str | None) -> dt.date:
    if day is None:
        return dt.datetime.now(dt.UTC).date()
    if isinstance(day, dt.date):
        return day
    try:
        return dt.date.fromisoformat(day)
    except ValueError:
        raise InvalidInput(f"invalid date {day!r}", hint="use YYYY-MM-DD") from None


def daily_report(
    config: Config,
    principal: Principal,
    *,
    building: str,
    day: dt.date | str | None = None,
    interval_s: float = 60.0,
    now: dt.datetime | None = None,
) -> DailyReport:
    """The figures of one building's day (UTC), read as ``principal``; ``now`` (the
    clock, default: the current time) ends today's expected events.

    >>> import tempfile
    >>> cfg = Config.from_env({"WORKBENCH_HOME": tempfile.mkdtemp()})
    >>> daily_report(cfg, Principal.system(), building="b-1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.exceptions.AccessDenied: building 'b-1' is not one of yours; ...
    """
    the_day = _parse_day(day)
    registry = registry_for(config, principal)
    rows = registry.buildings().filter(
        (pl.col("building_id") == building) & principal.scope_filter()
    )
    if rows.height == 0:
        raise AccessDenied(
            f"building {building!r} is not one of yours", hint="pick a building you may read"
        )
    tenant = str(rows["tenant_id"][0])
    start = dt.datetime.combine(the_day, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    events = telemetry(
        config, building_id=building, start=start, end=end, principal=principal
    ).filter(principal.scope_filter())
    metrics = building_metrics(
        config, building_id=building, start=start, end=end, principal=principal
    ).filter(principal.scope_filter())
    env = events.filter(pl.col("device_type") == "environment")
    in_band = (
        pl.col("temperature").is_between(*COMFORT["temperature"])
        & pl.col("humidity").is_between(*COMFORT["humidity"])
    ).cast(pl.Float64)
    hourly = (
        env.with_columns(hour=pl.col("ts").dt.truncate("1h"))
        .group_by("hour")
        .agg(
            readings=pl.len(),
            temperature_avg=pl.col("temperature").mean(),
            temperature_min=pl.col("temperature").min(),
            temperature_max=pl.col("temperature").max(),
            humidity_avg=pl.col("humidity").mean(),
            light_avg=pl.col("light").mean(),
            comfort_share=in_band.mean(),
        )
        .sort("hour")
    )
    alarm = alarm_kind()
    alarms = (
        events.with_columns(alarm=alarm)
        .filter(pl.col("alarm").is_not_null())
        .group_by("device_id", "alarm")
        .agg(
            floor=pl.col("floor").first(),
            room=pl.col("room").first(),
            first=pl.col("ts").min(),
            last=pl.col("ts").max(),
            readings=pl.len(),
        )
        .sort("first", "device_id")
    )
    elapsed_end = min(end, now or dt.datetime.now(dt.UTC))
    completeness = _completeness(registry, building, events, start, elapsed_end, interval_s)
    summary: dict[str, object] = {
        "building": building,
        "tenant": tenant,
        "date": the_day.isoformat(),
        "events": events.height,
        "devices_reporting": events["device_id"].n_unique() if events.height else 0,
        "temperature_avg": env["temperature"].mean() if env.height else None,
        "humidity_avg": env["humidity"].mean() if env.height else None,
        "comfort_share": float(env.select(in_band.mean()).item()) if env.height else None,
        "smoke_alarm_readings": int(metrics["smoke_alarms"].sum()) if metrics.height else 0,
        "intrusion_alarm_readings": (
            int(metrics["intrusion_alarms"].sum()) if metrics.height else 0
        ),
        "completeness": (
            float(completeness.select(pl.min_horizontal("events", "expected")).to_series().sum())
            / float(completeness["expected"].sum())
            if completeness.height and completeness["expected"].sum() > 0
            else None
        ),
        "devices_expected": completeness.height,
    }
    return DailyReport(building, tenant, the_day, summary, hourly, alarms, completeness)


def _completeness(
    registry: Registry,
    building: str,
    events: pl.DataFrame,
    start: dt.datetime,
    end: dt.datetime,
    interval_s: float,
) -> pl.DataFrame:
    devices: pl.DataFrame = registry.devices(building=building)
    return completeness_table(devices, events, start=start, end=end, interval_s=interval_s)


def completeness_table(
    devices: pl.DataFrame,
    events: pl.DataFrame,
    *,
    start: dt.datetime,
    end: dt.datetime,
    interval_s: float = 60.0,
) -> pl.DataFrame:
    """Per enabled device of ``devices`` (registry rows): ``events`` stored and events
    expected, one per ``interval_s``, between ``start`` (or its provisioning, if later)
    and ``end`` (the end of the day, or now for today); worst first.

    >>> day = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    >>> devices = pl.DataFrame({"device_id": ["a", "b"], "device_type": ["smoke"] * 2,
    ...     "floor": [1, 2], "room": ["1.01", "2.01"], "status": ["provisioned", "disabled"],
    ...     "created_at": [day - dt.timedelta(days=3)] * 2})
    >>> events = pl.DataFrame({"device_id": ["a"] * 60})
    >>> completeness_table(devices, events, start=day, end=day + dt.timedelta(hours=2)).rows()
    [('a', 'smoke', 1, '1.01', 60, 120, 0.5)]
    """
    devices = devices.filter(pl.col("status") == "provisioned")
    counts = events.group_by("device_id").agg(events=pl.len())
    span_s = max((end - start).total_seconds(), 0.0)
    return (
        devices.select("device_id", "device_type", "floor", "room", "created_at")
        .join(counts, on="device_id", how="left")
        .with_columns(
            pl.col("events").fill_null(0).cast(pl.Int64),
            # a device provisioned during the day is expected from then on
            expected=(
                (
                    pl.lit(span_s)
                    - (
                        (pl.col("created_at").fill_null(start) - pl.lit(start))
                        .dt.total_seconds()
                        .clip(0, span_s)
                    )
                )
                / interval_s
            )
            .floor()
            .cast(pl.Int64),
        )
        .with_columns(
            # a device that sent more than one a minute is complete, not "120 %"
            completeness=pl.when(pl.col("expected") > 0)
            .then((pl.col("events") / pl.col("expected")).clip(upper_bound=1.0))
            .otherwise(None)
        )
        .drop("created_at")
        .sort("completeness", "device_id", nulls_last=True)
    )


Format = Literal["int", "float1", "float2", "percent", "hhmm", "hhmmss", "text"]

COLUMNS: dict[str, tuple[str, Format]] = {
    "hour": ("hour (UTC)", "hhmm"),
    "readings": ("readings", "int"),
    "temperature_avg": ("temperature avg (°C)", "float1"),
    "temperature_min": ("min (°C)", "float1"),
    "temperature_max": ("max (°C)", "float1"),
    "humidity_avg": ("humidity avg (%RH)", "float1"),
    "light_avg": ("light avg (lx)", "float1"),
    "comfort_share": ("in comfort band", "percent"),
    "device_id": ("device", "text"),
    "device_type": ("type", "text"),
    "alarm": ("alarm", "text"),
    "floor": ("floor", "int"),
    "room": ("room", "text"),
    "first": ("first (UTC)", "hhmmss"),
    "last": ("last (UTC)", "hhmmss"),
    "events": ("events stored", "int"),
    "expected": ("events expected", "int"),
    "completeness": ("completeness", "percent"),
}
"""How the report's columns are shown: header (with unit) and format."""

_SCROLL_ROWS = 25

REPORT_STYLE = """<style>
.wb-report-table table {border-collapse: collapse; font-family: sans-serif; font-size: 0.95em}
.wb-report-table th {position: sticky; top: 0; background: #f5f5f5; text-align: left}
.wb-report-table th, .wb-report-table td {padding: 3px 12px; border-bottom: 1px solid #ddd}
.wb-report-table td.num {text-align: right; font-variant-numeric: tabular-nums}
</style>"""
"""The tables' style, shown once at the top of a report."""


def _cell(value: object, fmt: Format) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if fmt == "int" and isinstance(value, int | float):
        return f"{int(value):,}"
    if fmt in ("float1", "float2") and isinstance(value, int | float):
        return f"{value:,.{fmt[-1]}f}"
    if fmt == "percent" and isinstance(value, int | float):
        return f"{value * 100:.1f} %"
    if fmt in ("hhmm", "hhmmss") and isinstance(value, dt.datetime):
        return value.strftime("%H:%M" if fmt == "hhmm" else "%H:%M:%S")
    return str(value)


def _by_type(dtype: pl.DataType) -> Format:
    """How a column the report does not name is shown: by its type."""
    if dtype.is_integer():
        return "int"
    if dtype.is_float() or dtype.is_decimal():
        return "float2"
    return "text"


def table_html(
    frame: pl.DataFrame,
    *,
    columns: Mapping[str, tuple[str, Format]] = COLUMNS,
    empty: str = "none",
) -> str:
    """``frame`` as an HTML table for people: every row, headers with units, numbers
    right-aligned and rounded, None as ``-``; past 25 rows in a box that scrolls
    under a fixed header.

    >>> frame = pl.DataFrame({"device_id": ["d-1"], "events": [1380], "completeness": [0.958]})
    >>> page = table_html(frame)
    >>> page.count("<tr>"), "<th>events stored</th>" in page, '"num">95.8 %<' in page
    (2, True, True)
    """
    if frame.height == 0:
        return f"<p class='wb-report-empty'>{html.escape(empty)}</p>"
    specs = [(c, columns.get(c, (c, _by_type(frame.schema[c])))) for c in frame.columns]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, (label, _fmt) in specs)
    body = []
    for row in frame.iter_rows(named=True):
        cells = []
        for name, (_, fmt) in specs:
            klass = ' class="num"' if fmt not in ("text", "hhmm", "hhmmss") else ""
            cells.append(f"<td{klass}>{html.escape(_cell(row[name], fmt))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    style = ' style="max-height:32em;overflow-y:auto"' if frame.height > _SCROLL_ROWS else ""
    return (
        f'<div class="wb-report-table"{style}><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def run_daily_report(
    config: Config,
    *,
    building: str,
    day: dt.date | str,
    output_dir: Path,
    as_user: str | None = None,
) -> Path:
    """Execute the daily report notebook with papermill and write
    ``daily-<building>-<date>.html``; returns the HTML's path. The executed notebook is
    kept beside it."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    the_day = _parse_day(day)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = f"daily-{building}-{the_day.isoformat()}"
    executed = output_dir / f"{stem}.ipynb"
    with report_notebook(config, DAILY_REPORT) as notebook:
        pm.execute_notebook(
            str(notebook),
            str(executed),
            parameters={"building": building, "date": the_day.isoformat(), "as_user": as_user},
            cwd=str(output_dir),
            kernel_name="python3",
            progress_bar=False,
        )
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True)  # type: ignore[no-untyped-call]
    book = nbformat.read(executed, as_version=4)  # type: ignore[no-untyped-call]
    body, _ = exporter.from_notebook_node(book)
    html_path = output_dir / f"{stem}.html"
    html_path.write_text(body)
    return html_path
