"""What the ipywidgets pages and the reports draw with: the page style, value formatting,
HTML tables and the matplotlib trend chart (a PNG: the daily report and the exploration
notebook are static documents). The building and fleet pages are Panel apps
(:mod:`~workbench.dashboards.views.live`).
"""

from __future__ import annotations

import html
import io
import logging

import ipywidgets as w
import polars as pl

__all__ = ["STYLE", "error_html", "html_widget", "trend_png"]

logger = logging.getLogger(__name__)

STYLE = """
<style>
.wb-kpis table, .wb-table table {border-collapse: collapse; font-family: sans-serif}
.wb-kpis td {padding: 4px 18px; font-size: 1.3em}
.wb-table td, .wb-table th {padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left}
.wb-alarm-box {background: #c62828; color: white; padding: 8px 14px; font-size: 1.4em;
  font-family: sans-serif; border-radius: 4px}
.wb-ok-box {background: #2e7d32; color: white; padding: 8px 14px; font-family: sans-serif;
  border-radius: 4px}
.wb-error {color: #b71c1c; font-family: sans-serif; font-weight: bold}
.wb-done {color: #1b5e20; font-family: sans-serif}
</style>
"""


def html_widget(css: str) -> w.HTML:
    """An empty HTML widget carrying the CSS class a browser test finds it by."""
    widget = w.HTML()
    widget.add_class(css)
    return widget


def error_html(message: str) -> str:
    """``message`` in the page's error style."""
    return f"<div class='wb-error'>{html.escape(message)}</div>"


def trend_png(trends: pl.DataFrame, *, title: str = "") -> bytes:
    """The last hours' one-minute temperature, humidity and light as one PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.2), dpi=80)
    axes = fig.subplots(3, 1, sharex=True)
    series = (
        ("temperature_avg", "°C", "tab:red"),
        ("humidity_avg", "%RH", "tab:blue"),
        ("light_avg", "lux", "tab:orange"),
    )
    x = trends["window_start"].to_list() if trends.height else []
    for ax, (col, unit, color) in zip(axes, series, strict=True):
        ax.plot(x, trends[col].to_list() if trends.height else [], color=color)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    if title:
        axes[0].set_title(title)
    if not trends.height:
        axes[0].text(0.5, 0.5, "no data yet", transform=axes[0].transAxes, ha="center")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
