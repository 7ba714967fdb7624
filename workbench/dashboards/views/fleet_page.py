"""The fleet monitor as a Panel app: a card per building coloured by status, with its
figures in units and a click-through, searchable and sortable."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import polars as pl

from workbench.dashboards.data import DataStore
from workbench.dashboards.views.formatting import fmt
from workbench.dashboards.views.panel_common import LiveApp, nav_bar, panel_module
from workbench.exceptions import WorkbenchError

__all__ = ["FleetApp"]

_STATUS = {"alarm": "in alarm", "silent": "silent devices", "normal": "normal"}
_SORTS = {
    "status (alarms first)": None,
    "name": "name",
    "building id": "building_id",
    "temperature": "temperature_avg_5m",
    "silent devices": "silent_devices",
}


class FleetApp(LiveApp):
    """Every building in scope as a card: status colour, five-minute figures with units,
    alarm counts, silent devices, a link to its page; searchable and sortable."""

    def __init__(self, store: DataStore, *, refresh_s: float = 5.0) -> None:
        pn = panel_module()
        self.store = store
        self.refresh_s = refresh_s
        p = store.principal
        self.frame: pl.DataFrame | None = store.fleet()  # a refusal raises: no page to draw
        self.nav = pn.pane.HTML(
            nav_bar(p.user, p.role, p.tenant_id, current="Fleet"), sizing_mode="stretch_width"
        )
        self.message = pn.pane.HTML(css_classes=["wb-message"], sizing_mode="stretch_width")
        self.search = pn.widgets.TextInput(
            name="Search", placeholder="name or id", css_classes=["wb-search"], width=220
        )
        self.sort = pn.widgets.Select(
            name="Sort by", options=list(_SORTS), css_classes=["wb-sort"], width=200
        )
        self.summary = pn.pane.HTML(css_classes=["wb-fleet-summary"], sizing_mode="stretch_width")
        self.cards = pn.pane.HTML(css_classes=["wb-fleet"], sizing_mode="stretch_width")
        self.search.param.watch(lambda _: self._draw(), "value_input")
        self.sort.param.watch(lambda _: self._draw(), "value")
        self.widget = pn.Column(
            self.nav,
            self.message,
            pn.FlexBox(self.search, self.sort),
            self.summary,
            self.cards,
            sizing_mode="stretch_width",
            css_classes=["wb-page"],
        )
        self._draw()

    def servable(self) -> Any:
        """The page's layout, marked servable."""
        return self.widget.servable(title="Fleet · Smart-building workbench")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.widget._repr_mimebundle_(include, exclude)

    def read(self) -> pl.DataFrame | str:
        """The fleet afresh, or why not."""
        try:
            return self.store.fleet()
        except WorkbenchError as exc:
            return str(exc)

    def show(self, data: pl.DataFrame | str) -> None:
        """Draw what :meth:`read` returned."""
        if isinstance(data, str):
            self.message.object = f"<div class='wb-error wb-notice'>{html.escape(data)}</div>"
            return
        self.frame = data
        self._draw()

    def _draw(self) -> None:
        everything = self.frame
        if everything is None:
            return
        frame = everything.with_columns(
            status=pl.when((pl.col("active_smoke_alarms") + pl.col("active_intrusion_alarms")) > 0)
            .then(pl.lit("alarm"))
            .when(pl.col("silent_devices") > 0)
            .then(pl.lit("silent"))
            .otherwise(pl.lit("normal"))
        )
        alarming = frame.filter(pl.col("status") == "alarm").height
        text = (self.search.value_input or self.search.value or "").strip().lower()
        if text:
            frame = frame.filter(
                pl.col("name").fill_null("").str.to_lowercase().str.contains(text, literal=True)
                | pl.col("building_id").str.to_lowercase().str.contains(text, literal=True)
            )
        key = _SORTS[self.sort.value]
        if key is not None:
            frame = frame.sort(key, descending=key in ("silent_devices",), nulls_last=True)
        self.summary.object = (
            f"<h3><span class='wb-fleet-buildings'>{everything.height}</span> building(s); "
            f"<span class='wb-fleet-alarming'>{alarming}</span> in alarm; "
            f"<span class='wb-fleet-silent'>"
            f"{int(everything['silent_devices'].sum())}"
            f"</span> silent device(s); updated {dt.datetime.now(dt.UTC):%H:%M:%S} UTC</h3>"
        )
        cards = []
        for r in frame.iter_rows(named=True):
            bid = html.escape(r["building_id"])
            cards.append(
                f"<a class='wb-card wb-status-{r['status']}' data-building='{bid}' "
                f"href='/building?building={bid}'>"
                f"<h4>{html.escape(r['name'] or r['building_id'])} <small>{bid}</small></h4>"
                f"<div class='wb-status'>{_STATUS[r['status']]}</div>"
                "<div class='wb-figures'>"
                f"<span>{fmt(r['temperature_avg_5m'], ' °C')}</span>"
                f"<span>{fmt(r['humidity_avg_5m'], ' %RH')}</span>"
                f"<span>{fmt(r['light_avg_5m'], ' lux', 0)}</span></div>"
                f"<div>smoke alarms: <b class='wb-card-smoke'>{r['active_smoke_alarms']}</b>, "
                f"intrusion: <b class='wb-card-intrusion'>{r['active_intrusion_alarms']}</b>, "
                f"silent: <b class='wb-card-silent'>{r['silent_devices']}</b> of "
                f"{r['devices']} device(s)</div>"
                "<small>5-minute averages</small></a>"
            )
        self.cards.object = (
            "<div class='wb-cards'>" + "".join(cards) + "</div>"
            if cards
            else "<p><i>no building matches</i></p>"
        )


# --- what the page notebooks call ------------------------------------------------------------
