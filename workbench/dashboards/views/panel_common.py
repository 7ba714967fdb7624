"""What the Panel pages share: the page style, the top bar, a refused page's text,
formatting in the user's time zone, and :class:`LiveApp`, the periodic refresh with a
pause that the building and fleet apps build on."""

from __future__ import annotations

import datetime as dt
import functools
import html
import logging
from typing import Any

__all__ = [
    "CSS",
    "CUSTOM",
    "LONGEST_RANGE",
    "RANGES",
    "REFRESH",
    "LiveApp",
    "nav_bar",
    "panel_module",
    "parse_range",
    "refusal",
    "zones",
]

logger = logging.getLogger(__name__)

# the building page's range picker: label -> minutes
RANGES: dict[str, int] = {
    "last 15 min": 15,
    "last 1 h": 60,
    "last 3 h": 180,
    "last 12 h": 720,
    "last 24 h": 1440,
    "last 7 days": 7 * 1440,
    "last 30 days": 30 * 1440,
}
# the range picker's last entry: a "from" and a "to" typed in the page's time zone
CUSTOM = "custom range"
LONGEST_RANGE = dt.timedelta(days=30)
REFRESH: dict[str, float] = {"1 s": 1, "5 s": 5, "10 s": 10, "30 s": 30, "1 min": 60}


@functools.cache
def zones() -> tuple[str, ...]:
    """Every IANA time zone this machine knows, UTC first, then by name."""
    import zoneinfo

    return ("UTC", *sorted(z for z in zoneinfo.available_timezones() if z != "UTC"))


def parse_range(
    since: str, until: str, zone: str, *, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """A custom range typed as ``YYYY-MM-DD HH:MM`` (or just ``YYYY-MM-DD``) wall-clock
    times of ``zone``, as UTC; ``until`` empty means now. Refused with the reason: a value
    that is no such time, a range that ends before it starts or starts in the future, one
    longer than 30 days.

    >>> now = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    >>> parse_range("2026-12-06 10:00", "2026-12-06 11:00", "Europe/Berlin", now=now)[0]
    datetime.datetime(2026, 12, 6, 9, 0, tzinfo=datetime.timezone.utc)
    """
    from zoneinfo import ZoneInfo

    from workbench.exceptions import InvalidInput

    def parse(text: str, field: str) -> dt.datetime:
        for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%d"):
            try:
                local = dt.datetime.strptime(text.strip(), pattern)  # noqa: DTZ007 (zone below)
            except ValueError:
                continue
            return local.replace(tzinfo=ZoneInfo(zone)).astimezone(dt.UTC)
        raise InvalidInput(
            f"{field} {text!r} is not a time",
            hint="write it as YYYY-MM-DD HH:MM, e.g. 2026-12-06 14:30",
        )

    if not since.strip():
        raise InvalidInput("a custom range needs its 'from' time", hint="e.g. 2026-12-06 14:30")
    start = parse(since, "from")
    end = parse(until, "to") if until.strip() else now
    if start >= now:
        raise InvalidInput(f"the range starts in the future ({since})", hint="pick a past time")
    if end <= start:
        raise InvalidInput(f"the range ends ({until}) before it starts ({since})", hint="swap them")
    if end - start > LONGEST_RANGE:
        raise InvalidInput(
            f"the range is {(end - start).days} days long; the longest is 30 days",
            hint="shorten it, or use workbench query for longer spans",
        )
    return start, min(end, now)


CSS = """
:host, .wb-page {font-family: system-ui, sans-serif; color: #222}
.wb-nav {display: flex; flex-wrap: wrap; gap: .2em 1.2em; align-items: baseline;
  border-bottom: 1px solid #ddd; padding: .3em 0 .5em}
.wb-nav a {color: #1565c0; text-decoration: none}
.wb-cards {display: flex; flex-wrap: wrap; gap: 10px}
.wb-card {display: block; border-left: 8px solid #2e7d32; background: #f7f7f7;
  padding: 8px 12px; min-width: 15em; flex: 1 1 15em; color: #222; text-decoration: none;
  border-radius: 4px; overflow-wrap: anywhere}
.wb-card.wb-status-alarm {border-left-color: #c62828; background: #ffebee}
.wb-card.wb-status-silent {border-left-color: #f9a825; background: #fffde7}
.wb-card h4 {margin: 0 0 4px; font-size: 1.05em}
.wb-card .wb-figures {display: flex; flex-wrap: wrap; gap: 2px 14px}
.wb-kpi {background: #f7f7f7; padding: 6px 12px; border-radius: 4px; min-width: 9em;
  flex: 1 1 9em}
.wb-kpi b {font-size: 1.3em}
.wb-alarm-box {background: #c62828; color: white; padding: 8px 14px; font-size: 1.2em;
  border-radius: 4px}
.wb-ok-box {background: #2e7d32; color: white; padding: 8px 14px; border-radius: 4px}
.wb-notice, .wb-refusal {color: #b71c1c; font-weight: bold}
.wb-scroll {max-height: 22em; overflow: auto; max-width: 100%}
.wb-scroll table {border-collapse: collapse; font-size: .9em}
.wb-scroll td, .wb-scroll th {padding: 2px 8px; border-bottom: 1px solid #ddd;
  text-align: left; white-space: nowrap}
"""


def panel_module() -> Any:
    """Panel, with the pages' style loaded."""
    import panel as pn

    pn.extension(raw_css=[CSS], notifications=False)
    return pn


def nav_bar(user: str, role: str, tenant: str | None, *, current: str) -> str:
    """The pages' top bar: home, the user, log out."""
    who = f"{html.escape(user)} ({html.escape(role)}{', ' + html.escape(tenant) if tenant else ''})"
    return (
        f"<nav class='wb-nav'><a href='/' class='wb-home-link'>&#8962; Home</a>"
        f"<b>{html.escape(current)}</b><span class='wb-user'>{who}</span>"
        "<a href='/logout' class='wb-logout'>Log out</a></nav>"
    )


def refusal(message: str, *, role: str | None = None) -> str:
    """A refused page: the reason and a link to where the user's data is."""
    links = "<a href='/' class='wb-home-link'>your home page</a>"
    if role is not None and role not in ("operator", "admin"):
        links = "<a href='/building' class='wb-building-link'>your building page</a> or " + links
    return (
        f"<div class='wb-error wb-message'>{html.escape(message)}</div>"
        f"<p class='wb-refusal'>Go to {links}.</p>"
    )


class LiveApp:
    """A periodic refresh of the page's own session, with a pause. The lake is read in a
    worker thread: the server's event loop (which also serves every other page and
    Voila) never waits for a Delta read."""

    refresh_s: float
    _callback: Any = None
    _busy = False

    def read(self) -> Any:
        """Read what the page shows (any thread)."""
        raise NotImplementedError

    def show(self, data: Any) -> None:
        """Draw what :meth:`read` returned (the session's thread)."""
        raise NotImplementedError

    def refresh(self) -> None:
        """Read afresh and redraw, now."""
        self.show(self.read())

    def start(self) -> None:
        """Refresh every ``refresh_s`` seconds while the page is open (only in a session)."""
        pn = panel_module()
        if pn.state.curdoc is None or pn.state.curdoc.session_context is None:
            return
        self._callback = pn.state.add_periodic_callback(
            self._tick, period=int(self.refresh_s * 1000)
        )

    def set_period(self, seconds: float) -> None:
        self.refresh_s = seconds
        if self._callback is not None:
            self._callback.period = int(seconds * 1000)

    def pause(self, paused: bool) -> None:
        if self._callback is None:
            return
        if paused:
            self._callback.stop()
        else:
            self._callback.start()

    async def _tick(self) -> None:
        import asyncio

        if self._busy:  # the previous read is still running: skip this tick
            return
        self._busy = True
        try:
            data = await asyncio.get_running_loop().run_in_executor(None, self.read)
            self.show(data)
        except Exception:  # keep the page alive; the next tick may work again
            logger.exception("dashboard refresh failed")
        finally:
            self._busy = False
