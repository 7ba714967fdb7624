"""The building page as a Panel app: one building's alarms, current figures, Bokeh charts
over a picked time range (gaps as gaps, the current minute held back), one device's
chart, CSV export, in the user's time zone."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import polars as pl

from workbench.dashboards.data import BuildingSnapshot, DataStore
from workbench.dashboards.views.charts import charts, device_data, trend_data
from workbench.dashboards.views.formatting import fmt, html_table, local_time
from workbench.dashboards.views.panel_common import (
    CUSTOM,
    RANGES,
    REFRESH,
    LiveApp,
    nav_bar,
    panel_module,
    parse_range,
    zones,
)
from workbench.exceptions import InvalidInput, WorkbenchError

__all__ = ["DEVICE_ROWS", "BuildingApp"]


DEVICE_ROWS = 500
"""Devices the building page lists in its table and picker (silent ones first)."""


class _RangeRefused(str):
    """Why the typed custom range is no range (shown next to it, not as the page's error)."""


class BuildingApp(LiveApp):
    """One building: alarms, five-minute figures, trends over a chosen range, one device's
    own chart, device health, CSV export; times in the user's zone."""

    def __init__(
        self,
        store: DataStore,
        *,
        building: str | None = None,
        refresh_s: float = 5.0,
        range_label: str = "last 1 h",
        zone: str = "UTC",
    ) -> None:
        pn = panel_module()
        self.store = store
        self.refresh_s = refresh_s
        p = store.principal
        buildings = store.buildings()
        options = {
            f"{r['name']} ({r['building_id']})": r["building_id"]
            for r in buildings.iter_rows(named=True)
        }
        notice = ""
        if building is not None and building not in options.values():
            notice = f"building {building!r} is not one of yours; showing your first building"
            building = None
        if not options:
            notice = "you have no buildings to show; ask an admin for access"
        self.nav = pn.pane.HTML(
            nav_bar(p.user, p.role, p.tenant_id, current="Building"), sizing_mode="stretch_width"
        )
        self.message = pn.pane.HTML(
            f"<div class='wb-error wb-notice'>{html.escape(notice)}</div>" if notice else "",
            css_classes=["wb-message"],
            sizing_mode="stretch_width",
        )
        self.picker = pn.widgets.Select(
            name="Building",
            options=options,
            value=building or next(iter(options.values()), None),
            css_classes=["wb-picker"],
            width=260,
        )
        self.range = pn.widgets.Select(
            name="Time range",
            options=[*RANGES, CUSTOM],
            value=range_label,
            css_classes=["wb-range"],
            width=150,
        )
        self.interval = pn.widgets.Select(
            name="Refresh",
            options={f"every {k}": v for k, v in REFRESH.items()}
            | ({} if refresh_s in REFRESH.values() else {f"every {refresh_s:g} s": refresh_s}),
            value=refresh_s,
            css_classes=["wb-interval"],
            width=130,
        )
        self.paused = pn.widgets.Toggle(
            name="Pause", value=False, css_classes=["wb-pause"], width=90, align="end"
        )
        self.since = pn.widgets.TextInput(
            name="From", placeholder="YYYY-MM-DD HH:MM", css_classes=["wb-since"], width=150
        )
        self.until = pn.widgets.TextInput(
            name="To (empty: now)",
            placeholder="YYYY-MM-DD HH:MM",
            css_classes=["wb-until"],
            width=150,
        )
        self.show_range = pn.widgets.Button(
            name="Show", css_classes=["wb-range-show"], width=70, align="end"
        )
        # a range typed in the page's time zone, shown when the picker says "custom range"
        self.range_error = pn.pane.HTML(css_classes=["wb-range-error"])
        self.custom = pn.FlexBox(
            self.since, self.until, self.show_range, self.range_error, visible=False
        )
        self.zone = pn.widgets.Select(
            name="Time zone",
            options=list(zones()) if zone in zones() else [zone, *zones()],
            value=zone,
            css_classes=["wb-zone"],
            width=170,
        )
        self.header = pn.pane.HTML(css_classes=["wb-header"], sizing_mode="stretch_width")
        self.alarms = pn.pane.HTML(css_classes=["wb-alarms"], sizing_mode="stretch_width")
        self.ack_pick = pn.widgets.Select(
            name="Acknowledge an alarm", options={}, css_classes=["wb-ack-pick"], width=320
        )
        self.ack = pn.widgets.Button(
            name="Acknowledge",
            button_type="warning",
            css_classes=["wb-ack"],
            width=130,
            align="end",
        )
        self.ack_result = pn.pane.HTML(css_classes=["wb-ack-result"], sizing_mode="stretch_width")
        # analysts only read alarms (the alarms library refuses them too)
        self.can_ack = p.role != "analyst"
        self.ack_row = pn.FlexBox(self.ack_pick, self.ack, visible=False)
        self.ack.on_click(lambda _: self.acknowledge())
        self.kpis = pn.pane.HTML(css_classes=["wb-kpis"], sizing_mode="stretch_width")
        self.chart_note = pn.pane.HTML(css_classes=["wb-chart-note"], sizing_mode="stretch_width")
        from bokeh.models import ColumnDataSource

        self.trends = pl.DataFrame()
        empty: dict[str, list[Any]] = {
            "time": [],
            "temperature_avg": [],
            "humidity_avg": [],
            "light_avg": [],
        }
        self.source = ColumnDataSource(data=empty, name="wb-trends")
        self.chart = pn.pane.Bokeh(
            charts(self.source, ("temperature_avg", "humidity_avg", "light_avg"), 260),
            sizing_mode="stretch_width",
        )
        self.device = pn.widgets.Select(
            name="Device",
            options={"(pick a device)": ""},
            css_classes=["wb-device-picker"],
            width=260,
        )
        self.device_source = ColumnDataSource(
            data={"time": [], "temperature": [], "humidity": [], "light": []},
            name="wb-device-series",
        )
        # drawn on the first pick: a Bokeh figure costs a good part of a page's start-up
        self.device_chart = pn.pane.Bokeh(
            None,
            sizing_mode="stretch_width",
            visible=False,
        )
        self.devices = pn.pane.HTML(css_classes=["wb-devices"], sizing_mode="stretch_width")
        self.device_list = pn.widgets.FileDownload(
            callback=self._devices_csv,
            filename="devices.csv",
            label="Download CSV (every device)",
            css_classes=["wb-devices-csv"],
            width=240,
        )
        self.updated = pn.pane.HTML(css_classes=["wb-updated"], sizing_mode="stretch_width")
        self.download = pn.widgets.FileDownload(
            callback=self._csv,
            filename="trends.csv",
            label="Download CSV (chart rows)",
            css_classes=["wb-csv"],
            width=240,
        )
        self.snapshot: BuildingSnapshot | None = None
        self.picker.param.watch(lambda _: self._picked(), "value")
        self.range.param.watch(lambda _: self._ranged(), "value")
        self.show_range.on_click(lambda _: self.refresh())
        self.zone.param.watch(lambda _: self.refresh(), "value")
        self.device.param.watch(lambda _: self._draw_device(), "value")
        self.interval.param.watch(lambda e: self.set_period(float(e.new)), "value")
        self.paused.param.watch(lambda e: self.pause(bool(e.new)), "value")
        controls = pn.FlexBox(
            self.picker,
            self.range,
            self.custom,
            self.zone,
            self.interval,
            self.paused,
            self.download,
        )
        self.widget = pn.Column(
            self.nav,
            self.message,
            controls,
            self.header,
            self.alarms,
            self.ack_row,
            self.ack_result,
            self.kpis,
            self.chart_note,
            pn.Column(self.chart, css_classes=["wb-trends"], sizing_mode="stretch_width"),
            pn.pane.HTML("<h4>One device</h4>"),
            self.device,
            pn.Column(
                self.device_chart, css_classes=["wb-device-chart"], sizing_mode="stretch_width"
            ),
            pn.pane.HTML("<h4>Device health</h4>"),
            self.devices,
            self.device_list,
            self.updated,
            sizing_mode="stretch_width",
            css_classes=["wb-page"],
        )
        self.refresh()

    def servable(self) -> Any:
        """The page's layout, marked servable (what the page notebook ends with)."""
        return self.widget.servable(title="Building · Smart-building workbench")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.widget._repr_mimebundle_(include, exclude)

    # --- reading -------------------------------------------------------------------------

    def _window(self) -> tuple[dt.datetime, dt.datetime | None]:
        """The picked range as UTC ``(start, end)``; ``end`` None: up to now. A custom range
        that is not one raises :class:`~workbench.exceptions.InvalidInput`, saying why."""
        now = self.store.clock()
        if self.range.value == CUSTOM:
            return parse_range(self.since.value, self.until.value, self.zone.value, now=now)
        return now - dt.timedelta(minutes=RANGES[self.range.value]), None

    def _range_label(self, trends: pl.DataFrame) -> str:
        if self.range.value != CUSTOM or not trends.height:
            return str(self.range.value)
        first, last = trends["window_start"].min(), trends["window_start"].max()
        zone = self.zone.value
        return f"{local_time(first, zone)[:16]} to {local_time(last, zone)[:16]} ({zone})"

    def _ranged(self) -> None:
        custom = self.range.value == CUSTOM
        self.custom.visible = custom
        if not custom or self.since.value:
            self.refresh()

    def _picked(self) -> None:
        self.message.object = ""
        self.device.value = ""
        self.refresh()

    def read(self) -> tuple[BuildingSnapshot, pl.DataFrame] | str | None:
        """A fresh snapshot and the range's trends of the picked building, or why not."""
        building = self.picker.value
        if building is None:
            return None
        try:
            start, end = self._window()
        except InvalidInput as exc:
            return _RangeRefused(exc)
        try:
            snap = self.store.snapshot(building, trends_start=start, trends_end=end)
        except WorkbenchError as exc:
            return str(exc)
        return snap, snap.trends

    def show(self, data: tuple[BuildingSnapshot, pl.DataFrame] | str | None) -> None:
        """Draw what :meth:`read` returned."""
        if data is None:
            return
        if isinstance(data, _RangeRefused):
            self.range_error.object = f"<div class='wb-error'>{html.escape(data)}</div>"
            return
        self.range_error.object = ""
        if isinstance(data, str):
            self.message.object = f"<div class='wb-error wb-notice'>{html.escape(data)}</div>"
            return
        snap, trends = data
        self.snapshot = snap
        self.trends = trends
        self._draw(snap, trends)

    def _devices_csv(self) -> Any:
        """Every device of the building, as the table shows them (the table stops at
        DEVICE_ROWS)."""
        import io

        devices = self.snapshot.devices if self.snapshot is not None else pl.DataFrame()
        if devices.height:
            devices = devices.with_columns(
                pl.col("last_seen").dt.convert_time_zone(self.zone.value)
            )
        self.device_list.filename = f"{self.picker.value}-devices.csv"
        return io.BytesIO(devices.write_csv().encode())

    def _csv(self) -> Any:
        import io

        frame = self.trends.filter(pl.col("readings").is_not_null()).with_columns(
            pl.col("window_start").dt.convert_time_zone(self.zone.value)
        )
        self.download.filename = f"{self.picker.value}-trends.csv"
        return io.BytesIO(frame.write_csv().encode())

    # --- drawing -------------------------------------------------------------------------

    def _draw(self, snap: BuildingSnapshot, trends: pl.DataFrame) -> None:
        zone = self.zone.value
        state = snap.state or {}
        self.header.object = (
            f"<h2 class='wb-building-title'>{html.escape(snap.name)} "
            f"<small>({html.escape(snap.building_id)}, "
            f"tenant {html.escape(snap.tenant_id)})</small></h2>"
        )
        self._offer_acks(snap.alarms)
        if snap.alarms.height:
            rows = snap.alarms.select(
                "alarm",
                "device_id",
                "floor",
                "room",
                "since",
                "last_ts",
                "acknowledged_by",
                "acknowledged_at",
            )
            self.alarms.object = (
                f"<div class='wb-alarm-box'>&#9888; <span class='wb-smoke-count'>"
                f"{snap.smoke_alarms}</span> device(s) in smoke alarm, "
                f"<span class='wb-intrusion-count'>{snap.intrusion_alarms}</span> in "
                "intrusion alarm</div>" + html_table(rows, "wb-alarm-list", zone=zone)
            )
        else:
            self.alarms.object = (
                "<div class='wb-ok-box'>No active smoke or intrusion alarms "
                "(<span class='wb-smoke-count'>0</span> smoke, "
                "<span class='wb-intrusion-count'>0</span> intrusion)</div>"
            )
        cells = (
            ("Temperature, 5-min avg", "temperature", state.get("temperature_avg_5m"), " °C"),
            ("Humidity, 5-min avg", "humidity", state.get("humidity_avg_5m"), " %RH"),
            ("Light, 5-min avg", "light", state.get("light_avg_5m"), " lux"),
            ("Readings, 5 min", "readings", state.get("readings_5m"), ""),
            ("Devices reporting", "devices", state.get("devices_5m"), ""),
        )
        self.kpis.object = (
            "<div class='wb-cards'>"
            + "".join(
                f"<div class='wb-kpi'>{label}<br>"
                f"<b class='wb-kpi-{key}'>{fmt(value, unit)}</b></div>"
                for label, key, value, unit in cells
            )
            + "</div>"
        )
        held = snap.taken_at.replace(second=0, microsecond=0)
        points = int(trends["readings"].is_not_null().sum()) if trends.height else 0
        self.chart_note.object = (
            f"<small>{html.escape(self._range_label(trends))}, one-minute averages "
            f"(<span class='wb-points'>{points}</span> minute(s) with data; gaps are minutes "
            f"without data); the current minute, from {local_time(held, zone)[11:16]}, is held "
            "back until it is complete</small>"
        )
        self.source.data = trend_data(trends, zone)
        # a building of a fleet being onboarded can hold a hundred thousand devices: the
        # picker and the table take the first DEVICE_ROWS, silent ones first (what needs
        # looking at), and the CSV has them all
        listed = snap.devices.head(DEVICE_ROWS)
        options = {
            f"{r['device_id']} ({r['device_type']}, floor {fmt(r['floor'])}, "
            f"{r['room'] or '-'})": r["device_id"]
            for r in listed.sort("device_id").iter_rows(named=True)
        }
        options = {"(pick a device)": ""} | options
        if options != self.device.options:
            current = self.device.value
            self.device.options = options
            self.device.value = current if current in options.values() else ""
        self._draw_device()
        silent = snap.devices.filter(pl.col("silent"))
        shown = listed.with_columns(
            pl.when(pl.col("silent")).then(pl.lit("silent")).otherwise(pl.lit("ok")).alias("health")
        ).select("device_id", "device_type", "floor", "room", "status", "health", "last_seen")
        cut = (
            f"<p class='wb-devices-cut'>the first {listed.height:,} of {snap.devices.height:,}"
            " devices, silent ones first: the CSV below has every one</p>"
            if listed.height < snap.devices.height
            else ""
        )
        self.devices.object = (
            f"<p><span class='wb-silent-count'>{silent.height}</span> of {snap.devices.height} "
            f"device(s) silent for more than {int(self.store.silent_after.total_seconds() // 60)}"
            " minutes</p>" + cut + html_table(shown, "wb-device-table", zone=zone)
        )
        last = state.get("last_event_ts")
        self.updated.object = (
            f"<small>updated <span class='wb-updated-at'>{local_time(snap.taken_at, zone)}</span> "
            f"({html.escape(zone)}); last event {local_time(last, zone)}</small>"
        )

    # --- acknowledging ---------------------------------------------------------------------

    def _offer_acks(self, alarms: pl.DataFrame) -> None:
        """The alarms not yet acknowledged, to pick one and acknowledge it."""
        open_ = alarms.filter(pl.col("acknowledged_at").is_null()) if alarms.height else alarms
        options = {
            f"{r['alarm']} · {r['device_id']} (floor {fmt(r['floor'])}, {r['room'] or '-'}) · "
            f"since {local_time(r['since'], self.zone.value)[11:16]}": r["alarm_id"]
            for r in open_.iter_rows(named=True)
        }
        if options != self.ack_pick.options:
            current = self.ack_pick.value
            self.ack_pick.options = options
            if current in options.values():
                self.ack_pick.value = current
        self.ack_row.visible = self.can_ack and bool(options)

    def acknowledge(self) -> None:
        """Acknowledge the picked alarm as the page's user, then show the alarms afresh."""
        alarm_id = self.ack_pick.value
        if not alarm_id:
            self.ack_result.object = "<div class='wb-error'>pick an alarm to acknowledge</div>"
            return
        self.ack.disabled = True
        try:
            done = self.store.acknowledge(alarm_id)
        except WorkbenchError as exc:
            self.ack_result.object = f"<div class='wb-error'>{html.escape(str(exc))}</div>"
        else:
            self.ack_result.object = (
                f"<div class='wb-done'>alarm {html.escape(alarm_id)} acknowledged by "
                f"{html.escape(str(done['acknowledged_by']))} at "
                f"{local_time(done['acknowledged_at'], self.zone.value)}</div>"
            )
        finally:
            self.ack.disabled = False
        self.refresh()

    def _draw_device(self) -> None:
        device = self.device.value
        building = self.picker.value
        if not device or building is None:
            self.device_chart.visible = False
            return
        try:
            start, end = self._window()  # the page's range, a custom one's end included
            series = self.store.device_series(building, device, start=start, end=end)
        except WorkbenchError as exc:
            self.message.object = f"<div class='wb-error wb-notice'>{html.escape(str(exc))}</div>"
            return
        self.device_source.data = device_data(series, self.zone.value)
        if self.device_chart.object is None:
            self.device_chart.object = charts(
                self.device_source, ("temperature", "humidity", "light"), 200
            )
        self.device_chart.visible = True
