"""Event-time windows: their definition, the clock, and their execution over a batch.

* **Definition** — :class:`TumblingWindows`: one-minute windows of event time
  and the grace period during which a late event still updates its window.
* **Clock** — :class:`Clock`: where "now" comes from (processing time, for
  ``ingested_at``, ``as_of`` and the future-timestamp check); injected so tests
  can fix it.
* **Execution** — pure functions over polars frames: :func:`mark_late`
  (per-partition event-time watermark), :func:`minute_partials` (a batch's
  contribution to each building-minute) and :func:`rolling_state` (the
  five-minute building view from one-minute sums and counts).

Lateness is decided against the *partition's* watermark, the largest event
time seen before the event on its partition: a pure function of the partition's
record order, so it does not depend on batch boundaries or on how long the
processor took. An event is late when its window closed more than ``grace``
before the watermark, i.e. ``window_start + size + grace <= watermark``.

An event moves the watermark at most to the moment the gateway received it
(:func:`watermark_time`, ``min(ts, received_at)``): a device whose clock runs
fast is stored in its (future) window, but does not drag the watermark ahead and
make every other device on its partition late (found by ``workbench drill
clock-skew``: one device 5 minutes fast had 1,405 on-time events of its
partition's other devices left out of the aggregates).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Protocol

import polars as pl

__all__ = [
    "Clock",
    "FixedClock",
    "SystemClock",
    "TumblingWindows",
    "mark_late",
    "minute_partials",
    "rolling_state",
    "watermark_time",
]


class Clock(Protocol):
    """Processing time."""

    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> dt.datetime:
        """The current UTC time."""
        return dt.datetime.now(dt.UTC)


@dataclasses.dataclass
class FixedClock:
    """A clock tests move by hand.

    >>> c = FixedClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)); c.advance(60); c.now().minute
    1
    """

    at: dt.datetime

    def now(self) -> dt.datetime:
        """The time the test set."""
        return self.at

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.at += dt.timedelta(seconds=seconds)


@dataclasses.dataclass(frozen=True)
class TumblingWindows:
    """Fixed, non-overlapping event-time windows with a grace period for late events.

    >>> w = TumblingWindows(size_s=60, grace_s=120, rolling=5)
    >>> w.every, w.rolling_span
    ('60s', datetime.timedelta(seconds=240))
    """

    size_s: int = 60
    grace_s: float = 120.0
    rolling: int = 5  # windows in the building's rolling view

    @property
    def every(self) -> str:
        """The window size as a polars duration string."""
        return f"{self.size_s}s"

    @property
    def rolling_span(self) -> dt.timedelta:
        """From the first to the last window start of the rolling view."""
        return dt.timedelta(seconds=self.size_s * (self.rolling - 1))

    def start(self, ts: pl.Expr) -> pl.Expr:
        """The start of the window holding ``ts``."""
        return ts.dt.truncate(self.every)


def watermark_time(columns: Iterable[str]) -> pl.Expr:
    """How far an event moves its partition's watermark: its ``ts``, but no further than
    ``received_at`` (the gateway's clock) when the rows have it.

    >>> rows = pl.DataFrame({"ts": [dt.datetime(2026, 1, 1, 0, 10, tzinfo=dt.UTC)],
    ...                      "received_at": [dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.UTC)]})
    >>> rows.select(watermark_time(rows.columns)).item().isoformat()  # a clock 10 min fast
    '2026-01-01T00:00:00+00:00'
    """
    if "received_at" in columns:
        return pl.min_horizontal("ts", "received_at")  # a null received_at leaves ts
    return pl.col("ts")


def mark_late(
    rows: pl.DataFrame, watermarks: dict[int, dt.datetime], windows: TumblingWindows
) -> tuple[pl.DataFrame, dict[int, dt.datetime]]:
    """Add ``window_start`` and ``late`` to ``rows`` (sorted by partition, offset).

    ``watermarks`` holds each partition's watermark before these rows; the
    updated watermarks are returned. Each row moves the watermark to its
    :func:`watermark_time`.
    """
    initial = pl.DataFrame(
        {
            "source_partition": pl.Series(list(watermarks), dtype=pl.Int32),
            "_wm0": pl.Series(list(watermarks.values()), dtype=pl.Datetime("us", "UTC")),
        }
    )
    closes_after = dt.timedelta(seconds=windows.size_s + windows.grace_s)
    marked = (
        rows.join(initial, on="source_partition", how="left")
        .with_columns(_seen=watermark_time(rows.columns))
        .with_columns(
            _wm=pl.max_horizontal(
                pl.col("_seen").cum_max().shift(1).over("source_partition"), pl.col("_wm0")
            ),
            window_start=windows.start(pl.col("ts")),
        )
        .with_columns(
            late=(pl.col("window_start") + closes_after <= pl.col("_wm")).fill_null(False)
        )
    )
    updated = dict(watermarks)
    ends = marked.group_by("source_partition").agg(pl.col("_seen").max())
    for partition, wm in ends.iter_rows():
        if partition not in updated or wm > updated[partition]:
            updated[partition] = wm
    return marked.drop("_wm", "_wm0", "_seen"), updated


def minute_partials(rows: pl.DataFrame) -> pl.DataFrame:
    """Each building-minute's sums, counts, extremes and alarm counts over ``rows``.

    ``rows`` are on-time telemetry rows with ``window_start`` and ``new_device``
    (true on the first row of a device in a window that was not counted before).
    """
    return rows.group_by("tenant_id", "building_id", "window_start").agg(
        readings=pl.len().cast(pl.Int64),
        devices=pl.col("new_device").sum().cast(pl.Int64),
        temperature_sum=pl.col("temperature").sum(),
        temperature_count=pl.col("temperature").count().cast(pl.Int64),
        temperature_min=pl.col("temperature").min(),
        temperature_max=pl.col("temperature").max(),
        humidity_sum=pl.col("humidity").sum(),
        humidity_count=pl.col("humidity").count().cast(pl.Int64),
        light_sum=pl.col("light").sum(),
        light_count=pl.col("light").count().cast(pl.Int64),
        smoke_alarms=pl.col("smoke").fill_null(False).sum().cast(pl.Int64),
        intrusion_alarms=pl.col("intrusion").fill_null(False).sum().cast(pl.Int64),
        last_event_ts=pl.col("ts").max(),
    )


def rolling_state(
    metrics: pl.DataFrame, windows: TumblingWindows, *, as_of: dt.datetime, metrics_version: int
) -> pl.DataFrame:
    """The ``building_state`` rows from one-minute metrics (at least the last windows of each
    building): the ``rolling`` windows ending at each building's latest window.

    Averages are sum / count over the readings of those windows; ``devices_5m``
    is the largest one-minute device count among them; alarm figures count the
    alarm readings in them.
    """
    latest = metrics.group_by("building_id").agg(_last=pl.col("window_start").max())
    return (
        metrics.join(latest, on="building_id")
        .filter(pl.col("window_start") >= pl.col("_last") - windows.rolling_span)
        .group_by("building_id")
        .agg(
            tenant_id=pl.col("tenant_id").first(),
            window_start=pl.col("_last").first() - windows.rolling_span,
            temperature_avg_5m=_avg("temperature"),
            humidity_avg_5m=_avg("humidity"),
            light_avg_5m=_avg("light"),
            readings_5m=pl.col("readings").sum().cast(pl.Int64),
            devices_5m=pl.col("devices").max().cast(pl.Int64),
            active_smoke_alarms=pl.col("smoke_alarms").sum().cast(pl.Int64),
            active_intrusion_alarms=pl.col("intrusion_alarms").sum().cast(pl.Int64),
            last_event_ts=pl.col("last_event_ts").max(),
        )
        .with_columns(
            as_of=pl.lit(as_of, pl.Datetime("us", "UTC")),
            metrics_version=pl.lit(metrics_version, pl.Int64),
        )
    )


def _avg(name: str) -> pl.Expr:
    count = pl.col(f"{name}_count").sum()
    return pl.when(count > 0).then(pl.col(f"{name}_sum").sum() / count).otherwise(None)
