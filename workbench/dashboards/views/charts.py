"""The building page's Bokeh charts: temperature and humidity on one chart, light on its
own, over a ``ColumnDataSource`` whose data a refresh replaces (Bokeh then sends only the
data over the page's websocket); a null value breaks the line, so gaps show as gaps."""

from __future__ import annotations

from typing import Any

import polars as pl

__all__ = ["charts", "device_data", "trend_data"]


def _local_times(column: pl.Series, zone: str) -> list[Any]:
    """Times as the wall clock of ``zone`` (Bokeh's datetime axis draws naive times)."""
    return column.dt.convert_time_zone(zone).dt.replace_time_zone(None).to_list()


def _figure(title: str, unit: str, height: int) -> Any:
    from bokeh.models import DatetimeTickFormatter, HoverTool
    from bokeh.plotting import figure

    fig = figure(
        title=title,
        x_axis_type="datetime",
        height=height,
        sizing_mode="stretch_width",
        tools="xpan,xwheel_zoom,box_zoom,reset,save",
        toolbar_location="above",
    )
    fig.yaxis.axis_label = unit
    fig.xaxis.formatter = DatetimeTickFormatter(hours="%H:%M", minutes="%H:%M", days="%d %b")
    fig.add_tools(
        HoverTool(
            tooltips=[("time", "@time{%Y-%m-%d %H:%M}"), ("value", "$y{0.0}")],
            formatters={"@time": "datetime"},
            mode="vline",
        )
    )
    return fig


def trend_data(frame: pl.DataFrame, zone: str) -> dict[str, list[Any]]:
    """A chart's columns; a null (a minute without data) breaks the line there."""
    return {
        "time": _local_times(frame["window_start"], zone) if frame.height else [],
        **{
            col: [float("nan") if v is None else v for v in frame[col].to_list()]
            if frame.height
            else []
            for col in ("temperature_avg", "humidity_avg", "light_avg")
        },
    }


def device_data(frame: pl.DataFrame, zone: str) -> dict[str, list[Any]]:
    return {
        "time": _local_times(frame["ts"], zone) if frame.height else [],
        **{
            col: [float("nan") if v is None else v for v in frame[col].to_list()]
            if frame.height
            else []
            for col in ("temperature", "humidity", "light")
        },
    }


def charts(source: Any, columns: tuple[str, str, str], height: int) -> Any:
    """Temperature and humidity on one chart (a legend entry hides its series on click)
    and light on its own, both reading ``source`` and sharing the time axis."""
    temperature, humidity, light = columns
    climate = _figure("temperature and humidity", "°C / %RH", height)
    climate.line("time", temperature, source=source, color="#c62828", legend_label="temperature °C")
    climate.line("time", humidity, source=source, color="#1565c0", legend_label="humidity %RH")
    climate.legend.click_policy = "hide"
    climate.legend.location = "top_left"
    lux = _figure("light", "lux", max(140, height * 2 // 3))
    lux.x_range = climate.x_range
    lux.line("time", light, source=source, color="#ef6c00", legend_label="light lux")
    lux.legend.click_policy = "hide"
    lux.legend.location = "top_left"
    from bokeh.layouts import column

    return column(climate, lux, sizing_mode="stretch_width")
