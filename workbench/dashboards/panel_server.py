"""The Panel dashboards server: the home page, the building and fleet pages, the login.

Why Panel's own server and not Panel inside Voila: inside Voila a Panel page loads
BokehJS and Panel's bundle from public CDNs (and Voila's template Font Awesome), so it
stays blank offline, and Panel's JupyterLab extension fails to load in Voila 0.5. Panel's
server serves every script, style sheet and font from this process, keeps one Bokeh
session per open page whose periodic callback pushes changed data over the page's
websocket, and starts a page without a kernel (a kernel start was most of the old
4 to 11 s page load). The pages are still the parameterized notebooks
(``pages/building.ipynb``, ``pages/fleet.ipynb``): Panel runs their cells for each page
opened, papermill runs them in CI.

* ``/login`` checks workbench users with :func:`~workbench.tenancy.authenticate`
  (failures logged and throttled like the Voila login) and sets the session cookie
  :data:`~workbench.dashboards.identity.SESSION_COOKIE` (``user|expiry|HMAC``), which the
  Voila server on the same host accepts too — one login for both;
* ``/`` is the home page: who is logged in and links to exactly the pages the role may
  open; ``/logout`` clears the login of both servers;
* ``/building`` and ``/fleet`` need a valid cookie (the auth provider redirects to the
  login otherwise), and each page verifies it once more and builds the principal from
  the users table *now*.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from workbench.config import Config
from workbench.dashboards.identity import SESSION_COOKIE, load_dashboard_secret
from workbench.dashboards.identity import cookie_user as session_user
from workbench.dashboards.login import (
    check_login_form,
    end_session,
    login_form_body,
    safe_next,
    set_session_cookie,
)
from workbench.exceptions import WorkbenchError

__all__ = ["PANEL_PAGES", "home_links", "panel_server"]

logger = logging.getLogger(__name__)

# page notebook -> the path Panel serves it at
PANEL_PAGES = {"building.ipynb": "building", "fleet.ipynb": "fleet"}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Smart-building workbench</title>
<style>
body {{font-family: system-ui, sans-serif; max-width: 40em; margin: 2em auto; padding: 0 1em;
  color: #222}}
input {{display: block; width: 100%; margin: .3em 0 1em; padding: .4em; font-size: 1em;
  box-sizing: border-box}}
button {{padding: .5em 1.5em; font-size: 1em}}
.wb-login-error {{color: #b71c1c; font-weight: bold}}
.wb-links a {{display: block; padding: .8em 1em; margin: .5em 0; background: #f2f6fc;
  border-radius: 4px; color: #0d47a1; text-decoration: none; font-size: 1.1em}}
.wb-links small {{display: block; color: #555}}
</style></head>
<body><h2>Smart-building workbench</h2>{body}</body></html>
"""


def home_links(config: Config, role: str) -> list[tuple[str, str, str, str]]:
    """The pages ``role`` may open: ``(css class, label, url, what it is)``."""
    links = [
        (
            "wb-link-building",
            "Building dashboard",
            "/building",
            "live figures, alarms, trends and devices of your buildings",
        )
    ]
    if role in ("operator", "admin"):
        links.append(
            (
                "wb-link-fleet",
                "Fleet overview",
                "/fleet",
                "every building at a glance, alarms first",
            )
        )
        links.append(
            (
                "wb-link-provisioning",
                "Provisioning",
                f"http://{config.host}:{config.voila_port}/voila/render/provisioning.ipynb",
                "provision, disable, import and search devices",
            )
        )
    return links


def _handlers(config: Config, secret: bytes, session_s: float) -> dict[str, type[Any]]:
    """The login, logout and home handlers and the auth provider (imported late)."""
    from bokeh.server.auth_provider import AuthProvider
    from tornado.web import RequestHandler

    def cookie_user(handler: RequestHandler) -> str | None:
        token = handler.get_cookie(SESSION_COOKIE)
        return session_user(config, secret, token, now=time.time())

    class LoginHandler(RequestHandler):
        """The login form: workbench user name and password."""

        def _form(self, error: str = "", user: str = "") -> str:
            action = f"/login?next={quote(safe_next(self.get_argument('next', '/')))}"
            body = login_form_body(action, error=error, user=user)
            return _PAGE.format(title="Log in", body=body)

        def get(self) -> None:
            if cookie_user(self):
                self.redirect(safe_next(self.get_argument("next", "/")))
                return
            self.finish(self._form())

        async def post(self) -> None:
            principal = await check_login_form(self, config, door="dashboards", form=self._form)
            if principal is None:
                return
            set_session_cookie(self, secret, principal.user, session_s=session_s)
            self.redirect(safe_next(self.get_argument("next", "/")))

    class LogoutHandler(RequestHandler):
        """Clear the login of both dashboard servers."""

        def get(self) -> None:
            end_session(self, config)
            body = (
                "<p>You are logged out.</p>"
                "<p><a href='/login' id='login-again'>Log in again</a></p>"
            )
            self.finish(_PAGE.format(title="Logged out", body=body))

    class HomeHandler(RequestHandler):
        """Who is logged in, and links to the pages the role may open."""

        async def get(self) -> None:
            from workbench.dashboards.data import DataStore
            from workbench.dashboards.identity import cookie_principal

            token = self.get_cookie(SESSION_COOKIE)
            loop = asyncio.get_running_loop()
            try:
                principal = await loop.run_in_executor(
                    None, lambda: cookie_principal(config, token)
                )
                buildings = await loop.run_in_executor(
                    None, lambda: DataStore(config, principal).buildings()
                )
            except WorkbenchError:
                self.redirect("/login?next=/")
                return
            links = "".join(
                f"<a class='{css}' href='{html.escape(url)}'>{label}<small>{what}</small></a>"
                for css, label, url, what in home_links(config, principal.role)
            )
            mine = "".join(
                f"<li><a href='/building?building={html.escape(b)}'>"
                f"{html.escape(str(n or b))}</a> <small>{html.escape(b)}</small></li>"
                for b, n in buildings.select("building_id", "name").head(50).iter_rows()
            )
            more = (
                f"<p><small>… and {buildings.height - 50} more</small></p>"
                if buildings.height > 50
                else ""
            )
            tenant = principal.tenant_id or "all tenants"
            body = (
                f"<p class='wb-who'>Logged in as <b class='wb-user'>{html.escape(principal.user)}"
                f"</b>, <span class='wb-role'>{html.escape(principal.role)}</span> of "
                f"<span class='wb-tenant'>{html.escape(tenant)}</span>. "
                "<a href='/logout' class='wb-logout'>Log out</a></p>"
                f"<div class='wb-links'>{links}</div>"
                f"<h4>Your buildings ({buildings.height})</h4><ul class='wb-buildings'>{mine}</ul>"
                f"{more}"
            )
            self.finish(_PAGE.format(title="Home", body=body))

    class WorkbenchAuth(AuthProvider):
        """The pages need the signed session cookie; the login page is ours."""

        @property
        def get_user(self) -> Any:
            return cookie_user

        @property
        def login_url(self) -> str:
            return "/login"

        @property
        def login_handler(self) -> type[RequestHandler]:
            return LoginHandler

        @property
        def logout_url(self) -> str:
            return "/logout"

        @property
        def logout_handler(self) -> type[RequestHandler]:
            return LogoutHandler

    return {"home": HomeHandler, "auth": WorkbenchAuth}


def panel_server(config: Config, root: Path, *, start: bool = False) -> Any:
    """The Panel server of ``config`` serving the page notebooks in ``root``, on the
    current tornado loop (not started unless ``start``)."""
    # what every page uses, imported once here rather than on the first page opened
    import bokeh.plotting  # noqa: F401
    import panel as pn

    import workbench.dashboards.views.live  # noqa: F401

    secret = load_dashboard_secret(config)
    handlers = _handlers(config, secret, config.voila_session_hours * 3600.0)
    pn.config.browser_info = True
    apps = {path: str(root / name) for name, path in PANEL_PAGES.items() if (root / name).exists()}
    return pn.serve(  # type: ignore[no-untyped-call]
        apps,
        port=config.panel_port,
        address=config.host,
        websocket_origin=[f"{config.host}:{config.panel_port}"],
        show=False,
        start=start,
        title={path: path.capitalize() for path in apps},
        auth_provider=handlers["auth"](),
        extra_patterns=[(r"/", handlers["home"])],
        cookie_secret=secret.hex(),
    )
