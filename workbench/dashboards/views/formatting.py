"""Values and tables as the pages and reports show them: one ``fmt`` for a value, times in
a time zone, one escaped HTML table. No UI toolkit is imported here, so the Panel pages
and the ipywidgets provisioning form share it without loading each other's."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import polars as pl

__all__ = ["fmt", "html_table", "local_time"]


def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    """``value`` for a page: ``-`` when missing, floats to ``digits``, times in UTC.

    >>> fmt(21.04, " °C"), fmt(None), fmt(3, " lux")
    ('21.0 °C', '-', '3 lux')
    >>> fmt(dt.datetime(2026, 12, 6, 9, 30, tzinfo=dt.UTC))
    '2026-12-06 09:30:00 UTC'
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    if isinstance(value, dt.datetime):
        return local_time(value, "UTC") + " UTC"
    return f"{value}{unit}"


def local_time(value: Any, zone: str) -> str:
    """A time as the wall clock of ``zone``; anything else as :func:`fmt` writes it.

    >>> local_time(dt.datetime(2026, 12, 6, 9, 30, tzinfo=dt.UTC), "Asia/Tokyo")
    '2026-12-06 18:30:00'
    """
    if not isinstance(value, dt.datetime):
        return fmt(value)
    from zoneinfo import ZoneInfo

    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def html_table(
    frame: pl.DataFrame,
    css: str = "wb-table",
    *,
    zone: str | None = None,
    digits: int = 1,
    limit: int | None = None,
) -> str:
    """``frame`` (its first ``limit`` rows) as an escaped HTML table in a scrolling box of
    class ``css``; times in ``zone`` (None: UTC, marked so)."""
    if frame.height == 0:
        return f"<div class='{css}'><i>none</i></div>"

    def cell(value: Any) -> str:
        if zone is not None and isinstance(value, dt.datetime):
            return local_time(value, zone)
        return fmt(value, digits=digits)

    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = frame if limit is None else frame.head(limit)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>"
        for row in rows.iter_rows()
    )
    return f"<div class='wb-scroll {css}'><table><tr>{head}</tr>{body}</table></div>"
