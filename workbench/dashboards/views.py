"""The dashboards' views: ipywidgets that only draw what a store returns.

Plots are matplotlib figures rendered to PNG into an ``ipywidgets.Image``: they
render in Voila, JupyterLab and papermill output alike (see docs/dashboards.md
for why not Panel/Bokeh). Live updates are an asyncio task in the kernel that
refreshes every ``refresh_s`` seconds and pushes widget changes over the comm
channel, so the page changes without a reload.

Every widget a browser test reads carries a ``wb-...`` CSS class.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w
import polars as pl

from workbench.config import Config
from workbench.dashboards.data import BuildingSnapshot, DataStore
from workbench.dashboards.identity import request_parameter, session_principal
from workbench.dashboards.provisioning import ProvisioningActions
from workbench.exceptions import ImportRejected, WorkbenchError

__all__ = [
    "BuildingDashboard",
    "FleetOverview",
    "Page",
    "ProvisioningPanel",
    "building_page",
    "fleet_page",
    "provisioning_page",
    "trend_png",
]

logger = logging.getLogger(__name__)

_STYLE = """
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


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{value}{unit}"


def _table(frame: pl.DataFrame, css: str = "wb-table", limit: int = 500) -> str:
    if frame.height == 0:
        return f"<div class='{css}'><i>none</i></div>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v, digits=2))}</td>" for v in row) + "</tr>"
        for row in frame.head(limit).iter_rows()
    )
    return f"<div class='{css}'><table><tr>{head}</tr>{body}</table></div>"


def _html(css: str) -> w.HTML:
    widget = w.HTML()
    widget.add_class(css)
    return widget


def _error(message: str) -> str:
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


class _Live:
    """A periodic refresh on the kernel's event loop (none outside a running loop)."""

    refresh_s: float
    _task: asyncio.Task[None] | None = None

    def refresh(self) -> None:
        raise NotImplementedError

    def start(self, refresh_s: float | None = None) -> None:
        """Refresh every ``refresh_s`` seconds until :meth:`stop`."""
        if refresh_s is not None:
            self.refresh_s = refresh_s
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop()
        self.stop()
        self._task = loop.create_task(self._run())

    def stop(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                self.refresh()
            except Exception:  # keep the page alive; the next tick may work again
                logger.exception("dashboard refresh failed")


class BuildingDashboard(_Live):
    """One building: five-minute figures, alarms, trends, device health."""

    def __init__(
        self, store: DataStore, *, building: str | None = None, refresh_s: float = 5.0
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.message = _html("wb-message")
        self.header = _html("wb-header")
        self.alarms = _html("wb-alarms")
        self.kpis = _html("wb-kpis")
        self.plot = w.Image(format="png", layout=w.Layout(max_width="760px"))
        self.plot.add_class("wb-trends")
        self.devices = _html("wb-devices")
        self.updated = _html("wb-updated")
        buildings = store.buildings()
        options = [
            (f"{r['name']} ({r['building_id']})", r["building_id"])
            for r in buildings.iter_rows(named=True)
        ]
        self.picker = w.Dropdown(options=options, description="Building")
        self.picker.add_class("wb-picker")
        self.snapshot: BuildingSnapshot | None = None
        self.notice = ""  # shown until the user picks another building
        if building is not None:
            if building in {v for _, v in options}:
                self.picker.value = building
            else:
                self.notice = _error(
                    f"building {building!r} is not one of yours; showing your first building"
                )
        if not options:
            self.notice = _error("you have no buildings to show; ask an admin for access")
        self.message.value = self.notice
        self.picker.observe(self._picked, names="value")
        self.widget = w.VBox(
            [
                w.HTML(_STYLE),
                self.message,
                self.picker,
                self.header,
                self.alarms,
                self.kpis,
                self.plot,
                w.HTML("<h4 style='font-family:sans-serif'>Device health</h4>"),
                self.devices,
                self.updated,
            ]
        )
        self.refresh()

    def _picked(self, change: Any) -> None:
        self.notice = ""
        self.refresh()

    def refresh(self) -> None:
        """Read a fresh snapshot of the picked building and redraw."""
        building = self.picker.value
        if building is None:
            return
        try:
            snap = self.store.snapshot(building)
        except WorkbenchError as exc:
            self.message.value = _error(str(exc))
            return
        self.snapshot = snap
        self._draw(snap)

    def _draw(self, snap: BuildingSnapshot) -> None:
        state = snap.state or {}
        self.header.value = (
            f"<h2 style='font-family:sans-serif'>{html.escape(snap.name)} "
            f"<small>({html.escape(snap.building_id)}, tenant {html.escape(snap.tenant_id)})"
            "</small></h2>"
        )
        if snap.smoke_alarms or snap.intrusion_alarms:
            rows = snap.alarms.select("alarm", "device_id", "floor", "room", "since")
            self.alarms.value = (
                f"<div class='wb-alarm-box'>&#9888; <span class='wb-smoke-count'>"
                f"{snap.smoke_alarms}</span> smoke alarm(s), <span class='wb-intrusion-count'>"
                f"{snap.intrusion_alarms}</span> intrusion alarm(s)</div>" + _table(rows)
            )
        else:
            self.alarms.value = (
                "<div class='wb-ok-box'>No active smoke or intrusion alarms "
                "(<span class='wb-smoke-count'>0</span> smoke, "
                "<span class='wb-intrusion-count'>0</span> intrusion)</div>"
            )
        cells = (
            ("Temperature (5 min avg)", "temperature", state.get("temperature_avg_5m"), " °C"),
            ("Humidity (5 min avg)", "humidity", state.get("humidity_avg_5m"), " %RH"),
            ("Light (5 min avg)", "light", state.get("light_avg_5m"), " lux"),
            ("Readings (5 min)", "readings", state.get("readings_5m"), ""),
            ("Devices reporting", "devices", state.get("devices_5m"), ""),
        )
        self.kpis.value = (
            "<table><tr>"
            + "".join(f"<td>{label}</td>" for label, *_ in cells)
            + "</tr><tr>"
            + "".join(
                f"<td><b class='wb-kpi-{key}'>{_fmt(value, unit)}</b></td>"
                for _, key, value, unit in cells
            )
            + "</tr></table>"
        )
        self.plot.value = trend_png(
            snap.trends, title=f"last {self.store.trend_hours:g} h, one-minute averages"
        )
        silent = snap.devices.filter(pl.col("silent"))
        self.devices.value = (
            f"<p style='font-family:sans-serif'><span class='wb-silent-count'>{silent.height}"
            f"</span> of {snap.devices.height} device(s) silent for more than "
            f"{int(self.store.silent_after.total_seconds() // 60)} minutes</p>"
            + _table(snap.devices)
        )
        last = state.get("last_event_ts")
        self.updated.value = (
            f"<small style='font-family:sans-serif'>updated "
            f"<span class='wb-updated-at'>{snap.taken_at:%H:%M:%S}</span> UTC; "
            f"last event {_fmt(last)}; refreshes every {self.refresh_s:g} s</small>"
        )
        self.message.value = self.notice


class FleetOverview(_Live):
    """Every building in scope, alarms and silent devices first."""

    def __init__(self, store: DataStore, *, refresh_s: float = 5.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.summary = _html("wb-fleet-summary")
        self.table = _html("wb-fleet")
        self.message = _html("wb-message")
        self.frame: pl.DataFrame | None = None
        self.widget = w.VBox([w.HTML(_STYLE), self.message, self.summary, self.table])
        self.refresh()

    def refresh(self) -> None:
        """Re-read the fleet and redraw."""
        try:
            frame = self.store.fleet()
        except WorkbenchError as exc:
            self.message.value = _error(str(exc))
            return
        self.frame = frame
        alarms = frame.filter(
            (pl.col("active_smoke_alarms") > 0) | (pl.col("active_intrusion_alarms") > 0)
        ).height
        self.summary.value = (
            f"<h3 style='font-family:sans-serif'><span class='wb-fleet-buildings'>"
            f"{frame.height}</span> building(s); <span class='wb-fleet-alarming'>{alarms}"
            f"</span> with active alarms; <span class='wb-fleet-silent'>"
            f"{int(frame['silent_devices'].sum())}</span> silent device(s); updated "
            f"{dt.datetime.now(dt.UTC):%H:%M:%S} UTC</h3>"
        )
        self.table.value = _table(frame)


class ProvisioningPanel:
    """Provision, manage, import and search, as the logged-in operator or admin."""

    def __init__(self, actions: ProvisioningActions) -> None:
        self.actions = actions
        self.message = _html("wb-message")
        buildings = [
            (f"{r['name']} ({r['building_id']})", r["building_id"])
            for r in actions.buildings().iter_rows(named=True)  # refuses non-operators
        ]
        # provision
        self.device_id = w.Text(description="Device id")
        self.device_id.add_class("wb-prov-device")
        self.building = w.Combobox(
            options=[b for _, b in buildings], description="Building", ensure_option=False
        )
        self.building.add_class("wb-prov-building")
        self.device_type = w.Dropdown(
            options=["environment", "smoke", "intrusion"], description="Type"
        )
        self.floor = w.Text(description="Floor")
        self.room = w.Text(description="Room")
        self.protocol = w.Dropdown(options=["http", "fbk1", "bin1"], description="Protocol")
        self.provision_button = w.Button(description="Provision", button_style="primary")
        self.provision_button.add_class("wb-prov-submit")
        self.provision_out = _html("wb-prov-result")
        self.provision_button.on_click(lambda _: self._provision())
        provision = w.VBox(
            [
                self.device_id,
                self.building,
                self.device_type,
                self.floor,
                self.room,
                self.protocol,
                self.provision_button,
                self.provision_out,
            ]
        )
        # manage one device
        self.manage_id = w.Text(description="Device id")
        self.manage_id.add_class("wb-manage-device")
        buttons = []
        for label, action in (
            ("Disable", actions.disable),
            ("Enable", actions.enable),
            ("De-provision", actions.deprovision),
            ("Rotate key", actions.rotate_key),
        ):
            button = w.Button(description=label)
            button.add_class(f"wb-manage-{label.lower().replace(' ', '-')}")
            button.on_click(lambda _, a=action, n=label: self._manage(a, n))
            buttons.append(button)
        self.manage_out = _html("wb-manage-result")
        manage = w.VBox([self.manage_id, w.HBox(buttons), self.manage_out])
        # import
        self.upload = w.FileUpload(accept=".csv", multiple=False, description="CSV file")
        self.upload.add_class("wb-import-file")
        self.import_button = w.Button(description="Import", button_style="primary")
        self.import_button.add_class("wb-import-submit")
        self.progress = w.IntProgress(min=0, max=1, value=0, description="Progress")
        self.import_out = _html("wb-import-result")
        self.import_button.on_click(lambda _: self._import())
        importing = w.VBox(
            [
                w.HTML(
                    "<p style='font-family:sans-serif'>Columns: <code>device_id,building_id,"
                    "device_type[,floor,room,protocol]</code>. All rows or none are applied.</p>"
                ),
                self.upload,
                self.import_button,
                self.progress,
                self.import_out,
            ]
        )
        # search
        self.query = w.Text(description="Search")
        self.query.add_class("wb-search-text")
        self.status = w.Dropdown(
            options=[("any", ""), *((s, s) for s in ("provisioned", "disabled", "deprovisioned"))],
            description="Status",
        )
        self.search_button = w.Button(description="Search")
        self.search_button.add_class("wb-search-submit")
        self.search_out = _html("wb-search-result")
        self.search_button.on_click(lambda _: self._search())
        search = w.VBox([w.HBox([self.query, self.status, self.search_button]), self.search_out])

        self.tabs = w.Tab(children=[provision, manage, importing, search])
        for i, title in enumerate(("Provision", "Manage", "Import CSV", "Search")):
            self.tabs.set_title(i, title)
        self.widget = w.VBox([w.HTML(_STYLE), self.message, self.tabs])
        self._search()

    # --- handlers: call the library, show its answer ---------------------------------------

    def _provision(self) -> None:
        floor_text = self.floor.value.strip()
        if floor_text and not floor_text.lstrip("-").isdigit():
            self.provision_out.value = _error(f"floor must be a whole number, not {floor_text!r}")
            return
        try:
            new = self.actions.provision(
                self.device_id.value,
                building=self.building.value,
                device_type=self.device_type.value,
                floor=int(floor_text) if floor_text else None,
                room=self.room.value.strip() or None,
                protocol=self.protocol.value,
            )
        except WorkbenchError as exc:
            self.provision_out.value = _error(str(exc))
            return
        self.provision_out.value = (
            f"<div class='wb-done'>Provisioned <b class='wb-new-device'>"
            f"{html.escape(new.device.device_id)}</b> in {html.escape(new.device.building_id)}. "
            "Its key is shown this once — copy it to the device now:<br>"
            f"<code class='wb-new-key'>{html.escape(new.key)}</code></div>"
        )
        self._search()

    def _manage(self, action: Callable[[str], Any], label: str) -> None:
        device_id = self.manage_id.value.strip()
        try:
            result = action(device_id)
        except WorkbenchError as exc:
            self.manage_out.value = _error(str(exc))
            return
        key = getattr(result, "key", None)
        device = getattr(result, "device", result)
        text = (
            f"{label}: <b>{html.escape(device_id)}</b> is now "
            f"<b class='wb-device-status'>{html.escape(device.status)}</b>"
        )
        if key:
            text += (
                f"; new key (shown this once): <code class='wb-new-key'>{html.escape(key)}</code>"
            )
        self.manage_out.value = f"<div class='wb-done'>{text}</div>"
        self._search()

    def _import(self) -> None:
        files = list(self.upload.value)
        if not files:
            self.import_out.value = _error("choose a CSV file first")
            return
        upload = files[0]
        with tempfile.TemporaryDirectory(prefix="wb-import-") as tmp:
            path = Path(tmp) / "devices.csv"
            path.write_bytes(bytes(upload["content"]))
            self.import_out.value = f"importing {html.escape(str(upload['name']))} …"
            try:
                result = self.actions.import_csv(path, progress=self._progress)
            except ImportRejected as exc:
                lines = "".join(
                    f"<tr><td>{line}</td><td>{html.escape(msg)}</td></tr>"
                    for line, msg in exc.errors[:200]
                )
                self.import_out.value = (
                    _error(str(exc))
                    + "<div class='wb-table wb-import-errors'><table><tr><th>line</th>"
                    f"<th>error</th></tr>{lines}</table></div>"
                )
                return
            except WorkbenchError as exc:
                self.import_out.value = _error(str(exc))
                return
        self.import_out.value = (
            f"<div class='wb-done'>Imported {result['rows']} row(s): {result['inserted']} new, "
            f"{result['updated']} updated.</div>"
        )
        self._search()

    def _progress(self, stage: str, done: int, total: int) -> None:
        self.progress.description = stage.capitalize()
        self.progress.max = max(total, 1)
        self.progress.value = min(done, self.progress.max)

    def _search(self) -> None:
        try:
            found = self.actions.search(self.query.value, status=self.status.value or None)
        except WorkbenchError as exc:
            self.search_out.value = _error(str(exc))
            return
        self.search_out.value = f"<p>{found.height} device(s)</p>" + _table(
            found.drop("tenant_id", "updated_by")
        )


class Page:
    """What a notebook displays: a view's widget, or the reason there is none."""

    def __init__(self, view: Any = None, *, error: str | None = None) -> None:
        self.view = view
        self.error = error
        self.widget: w.Widget = (
            view.widget if view is not None else w.VBox([w.HTML(_STYLE), _error_html(error)])
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _error_html(message: str | None) -> w.HTML:
    widget = _html("wb-message")
    widget.value = _error(message or "")
    return widget


def _page(build: Callable[[], Any]) -> Page:
    try:
        return Page(build())
    except WorkbenchError as exc:
        return Page(error=str(exc))


def building_page(
    config: Config,
    *,
    as_user: str | None = None,
    building: str | None = None,
    trend_hours: float = 3.0,
    live: bool = True,
) -> Page:
    """The building dashboard for the session's user (``?building=`` picks the building)."""

    def build() -> BuildingDashboard:
        principal = session_principal(config, as_user=as_user)
        store = DataStore(config, principal, trend_hours=trend_hours)
        wanted = building or request_parameter("building")
        view = BuildingDashboard(store, building=wanted, refresh_s=config.dashboard_refresh)
        if live:
            view.start()
        return view

    return _page(build)


def fleet_page(config: Config, *, as_user: str | None = None, live: bool = True) -> Page:
    """The fleet overview (operators and admins)."""

    def build() -> FleetOverview:
        store = DataStore(config, session_principal(config, as_user=as_user))
        view = FleetOverview(store, refresh_s=config.dashboard_refresh)
        if live:
            view.start()
        return view

    return _page(build)


def provisioning_page(config: Config, *, as_user: str | None = None) -> Page:
    """The provisioning forms (the tenant's operators and admins)."""
    return _page(
        lambda: ProvisioningPanel(
            ProvisioningActions(config, session_principal(config, as_user=as_user))
        )
    )
