"""The daily building report: its figures (UI-free) and the papermill → HTML run.

``workbench report daily --building B --date D`` executes
``notebooks/reports/daily_building_report.ipynb`` with papermill (the notebook
calls :func:`daily_report`) and converts the executed notebook to HTML with
nbconvert, code cells hidden.

Comfort is the share of a building's environment readings inside the comfort
band (20-24 °C and 30-60 %RH); completeness is, per device, the events stored
over the events expected at one per ``interval_s`` for the part of the day the
device was provisioned.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

import polars as pl

from workbench.config import Config
from workbench.dashboards.data import registry_for
from workbench.exceptions import AccessDenied, InvalidInput
from workbench.lake import building_metrics, telemetry
from workbench.registry import Registry
from workbench.tenancy import Principal

__all__ = ["COMFORT", "REPORT_NOTEBOOK", "DailyReport", "daily_report", "run_daily_report"]

logger = logging.getLogger(__name__)

REPORT_NOTEBOOK = (
    Path(__file__).resolve().parents[2] / "notebooks" / "reports" / ("daily_building_report.ipynb")
)
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
) -> DailyReport:
    """The figures of one building's day (UTC), read as ``principal``.

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
    alarm = (
        pl.when(pl.col("smoke").fill_null(False))
        .then(pl.lit("smoke"))
        .when(pl.col("intrusion").fill_null(False))
        .then(pl.lit("intrusion"))
        .otherwise(None)
    )
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
    completeness = _completeness(registry, building, events, start, end, interval_s)
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
            float(completeness["events"].sum()) / float(completeness["expected"].sum())
            if completeness.height and completeness["expected"].sum() > 0
            else None
        ),
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
    counts = events.group_by("device_id").agg(events=pl.len())
    day_s = (end - start).total_seconds()
    return (
        devices.select("device_id", "device_type", "status", "created_at")
        .join(counts, on="device_id", how="full", coalesce=True)
        .with_columns(
            pl.col("events").fill_null(0),
            # a device provisioned during the day is expected from then on
            expected=(
                (
                    pl.lit(day_s)
                    - (
                        (pl.col("created_at").fill_null(start) - pl.lit(start))
                        .dt.total_seconds()
                        .clip(0, day_s)
                    )
                )
                / interval_s
            )
            .floor()
            .cast(pl.Int64),
        )
        .with_columns(
            completeness=pl.when(pl.col("expected") > 0)
            .then(pl.col("events") / pl.col("expected"))
            .otherwise(None)
        )
        .drop("created_at")
        .sort("completeness", "device_id", nulls_last=True)
    )


def run_daily_report(
    config: Config,
    *,
    building: str,
    day: dt.date | str,
    output_dir: Path,
    as_user: str | None = None,
    notebook: Path = REPORT_NOTEBOOK,
) -> Path:
    """Execute the report notebook with papermill and write ``<building>-<date>.html``;
    returns the HTML's path. The executed notebook is kept beside it."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    the_day = _parse_day(day)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = f"daily-{building}-{the_day.isoformat()}"
    executed = output_dir / f"{stem}.ipynb"
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
