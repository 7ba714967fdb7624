"""The monitoring pages as Panel apps: one building's live dashboard and the fleet monitor.

They only draw what a :class:`~workbench.dashboards.data.DataStore` returns. Charts are
Bokeh (hover, box and wheel zoom, legends that hide a series on click); a
live refresh is a periodic callback of the page's own Bokeh session, which pushes the
changed data to the browser over its websocket — the page is never re-rendered. In a
notebook (papermill, JupyterLab) the same objects display once, without the refresh.

Every element a browser test reads carries a ``wb-...`` CSS class.
"""

from __future__ import annotations

from typing import Any

from workbench.config import Config
from workbench.dashboards.data import DataStore
from workbench.dashboards.identity import SESSION_COOKIE, cookie_principal, session_principal
from workbench.dashboards.views.building_page import BuildingApp
from workbench.dashboards.views.fleet_page import FleetApp
from workbench.dashboards.views.panel_common import RANGES, nav_bar, panel_module, refusal
from workbench.exceptions import WorkbenchError
from workbench.tenancy import Principal

__all__ = [
    "RANGES",
    "BuildingApp",
    "FleetApp",
    "building_app",
    "fleet_app",
    "nav_bar",
    "refusal",
]


def _served() -> bool:
    """True inside a Panel server session (a browser page), False in a notebook."""
    pn = panel_module()
    return pn.state.curdoc is not None and pn.state.curdoc.session_context is not None


def _principal(config: Config, as_user: str | None) -> Principal:
    """A served page works for the user its signed session cookie names — never for
    ``as_user`` or the admin; a notebook run (papermill, JupyterLab) for ``as_user``."""
    if _served():
        pn = panel_module()
        return cookie_principal(config, pn.state.cookies.get(SESSION_COOKIE))
    return session_principal(config, as_user=as_user)


def _url_parameter(name: str) -> str | None:
    """``?name=`` of the page's URL (only a wish: the data store checks it like any value)."""
    if not _served():
        return None
    pn = panel_module()
    values = pn.state.session_args.get(name) or []
    return values[0].decode() if values else None


def _follow_browser_zone(app: BuildingApp) -> None:
    """Show times in the browser's own time zone once the browser has said which."""
    pn = panel_module()
    info = pn.state.browser_info
    if info is None:
        return

    def use(zone: Any) -> None:
        if not isinstance(zone, str) or not zone:
            return
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(zone)
        except (KeyError, ValueError):  # an unknown name: keep what is shown
            return
        if zone not in app.zone.options:  # a name this machine's zone list lacks
            app.zone.options = [*app.zone.options, zone]
        app.zone.value = zone

    info.param.watch(lambda event: use(event.new), "timezone")
    use(info.timezone)


def _error_page(message: str, role: str | None = None) -> Any:
    pn = panel_module()
    return pn.Column(
        pn.pane.HTML(
            "<nav class='wb-nav'><a href='/' class='wb-home-link'>&#8962; Home</a>"
            "<a href='/logout' class='wb-logout'>Log out</a></nav>" + refusal(message, role=role),
            sizing_mode="stretch_width",
        ),
        css_classes=["wb-page"],
    ).servable(title="Smart-building workbench")


def building_app(
    config: Config,
    *,
    as_user: str | None = None,
    building: str | None = None,
    range_label: str = "last 1 h",
    live: bool = True,
) -> Any:
    """The building page for the session's user (``?building=`` picks the building), or
    the reason there is none."""
    try:
        principal = _principal(config, as_user)
        app = BuildingApp(
            DataStore(config, principal),
            building=building or _url_parameter("building"),
            refresh_s=config.dashboard_refresh,
            range_label=range_label,
        )
    except WorkbenchError as exc:
        return _error_page(str(exc))
    if live and _served():
        app.start()
        _follow_browser_zone(app)
    return app.servable()


def fleet_app(config: Config, *, as_user: str | None = None, live: bool = True) -> Any:
    """The fleet monitor (operators and admins), or the reason there is none."""
    principal: Principal | None = None
    try:
        principal = _principal(config, as_user)
        app = FleetApp(DataStore(config, principal), refresh_s=config.dashboard_refresh)
    except WorkbenchError as exc:
        return _error_page(str(exc), role=principal.role if principal else None)
    if live and _served():
        app.start()
    return app.servable()
