"""The Voila dashboards server with per-user login (``python -m workbench.dashboards``).

* A login page of its own (``/login``) checks workbench users with
  :func:`~workbench.tenancy.authenticate` (failures land in the access log; repeated
  ones are throttled per user and client address: 429 with ``Retry-After``) and
  sets a signed session cookie; ``/logout`` clears it.
* On every request of a logged-in session the identity provider *overwrites*
  ``X-Workbench-Identity`` with ``user|expiry|HMAC`` (a client-sent value is always
  removed first); Voila copies that header into the kernel's environment, where
  :func:`~workbench.dashboards.identity.session_principal` verifies it.
* Preheated kernels are off (they would start before anyone logged in), and
  Voila's kernels accept only widget messages, never code; each kernel answers only the
  user who started it, and kernels are capped and culled
  (:mod:`~workbench.dashboards.kernels`).
* ``/logout`` revokes the session cookie for both servers
  (:mod:`~workbench.dashboards.sessions`).
* The served folder is ``$WORKBENCH_HOME/voila``: copies of the dashboard pages
  (:func:`~workbench.dashboards.notebook_files.page_notebooks`), nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from workbench.config import Config
from workbench.dashboards.identity import (
    IDENTITY_ENV,
    IDENTITY_HEADER,
    SESSION_COOKIE,
    cookie_user,
    load_dashboard_secret,
    sign_identity,
)
from workbench.dashboards.kernels import cull_traits, guard_handlers, kernel_manager_class
from workbench.dashboards.login import (
    check_login_form,
    end_session,
    login_form_body,
    safe_next,
    set_session_cookie,
)
from workbench.dashboards.notebook_files import page_notebooks
from workbench.dashboards.panel_server import PANEL_PAGES

__all__ = ["prepare_root", "run_voila", "voila_app"]

logger = logging.getLogger(__name__)

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title} · Smart-building workbench</title>
<style>
body {{font-family: sans-serif; max-width: 420px; margin: 8em auto; color: #222}}
input {{display: block; width: 100%; margin: .3em 0 1em; padding: .4em; font-size: 1em}}
button {{padding: .5em 1.5em; font-size: 1em}}
.wb-login-error {{color: #b71c1c; font-weight: bold}}
</style></head>
<body><h2>Smart-building workbench</h2>{body}</body></html>
"""


def prepare_root(config: Config) -> Path:
    """``$WORKBENCH_HOME/voila`` with fresh copies of the dashboard pages and no other
    notebook (one left from an earlier pages folder would otherwise still be served)."""
    pages = page_notebooks(config)
    root = config.home / "voila"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("*.ipynb"):
        if stale.name not in pages:
            stale.unlink()
    for name, source in pages.items():
        (root / name).write_bytes(source.read_bytes())
    return root


def _handlers() -> tuple[type[Any], type[Any], type[Any]]:
    """The login/logout handlers and identity provider (imported late: jupyter_server)."""
    from jupyter_server.auth.decorator import allow_unauthenticated
    from jupyter_server.auth.identity import IdentityProvider, User
    from jupyter_server.base.handlers import JupyterHandler

    class WorkbenchLoginHandler(JupyterHandler):
        """The login form: workbench user name and password."""

        def _next(self) -> str:
            return safe_next(self.get_argument("next", default=None), str(self.base_url))

        def _form(self, error: str = "", user: str = "") -> str:
            action = f"{self.base_url}login?next={quote(self._next())}"
            body = login_form_body(action, error=error, user=user, hidden=self.xsrf_form_html())
            return _PAGE.format(title="Log in", body=body)

        @allow_unauthenticated  # type: ignore[untyped-decorator,unused-ignore]
        def get(self) -> None:
            if self.current_user:
                self.redirect(self._next())
                return
            self.finish(self._form())

        @allow_unauthenticated  # type: ignore[untyped-decorator,unused-ignore]
        async def post(self) -> None:
            provider: Any = self.identity_provider
            config = provider.workbench_config
            principal = await check_login_form(self, config, door="voila", form=self._form)
            if principal is None:
                return
            # one cookie for both servers (so one logout ends both): jupyter_server's own
            # login cookie is never set
            set_session_cookie(self, provider.secret, principal.user, session_s=provider.session_s)
            self.redirect(self._next())

    class WorkbenchLogoutHandler(JupyterHandler):
        """End the session on both servers."""

        @allow_unauthenticated  # type: ignore[untyped-decorator,unused-ignore]
        def get(self) -> None:
            provider: Any = self.identity_provider
            end_session(self, provider.workbench_config)
            body = (
                f"<p>You are logged out.</p><p><a href='{self.base_url}login'>Log in again</a></p>"
            )
            self.finish(_PAGE.format(title="Logged out", body=body))

    class WorkbenchIdentityProvider(IdentityProvider):
        """Workbench users, a signed cookie, and the identity header for the kernels."""

        workbench_config: Config
        secret: bytes
        session_s: float

        def __init__(self, **kwargs: Any) -> None:
            kwargs["token"] = ""
            kwargs["login_handler_class"] = WorkbenchLoginHandler
            kwargs["logout_handler_class"] = WorkbenchLogoutHandler
            super().__init__(**kwargs)
            self.need_token = False
            days = self.session_s / 86400.0
            self.cookie_options = {"expires_days": days}
            self.get_secure_cookie_kwargs = {"max_age_days": days}

        @property
        def auth_enabled(self) -> bool:
            return True

        @property
        def login_available(self) -> bool:
            return True

        async def get_user(self, handler: Any) -> Any:
            # 1. never let a client supply the identity header
            headers = handler.request.headers
            if IDENTITY_HEADER in headers:
                del headers[IDENTITY_HEADER]
            # only the shared session cookie counts (a logout revokes it for both servers)
            token = handler.get_cookie(SESSION_COOKIE)
            name = cookie_user(self.workbench_config, self.secret, token, now=time.time())
            user = User(username=name) if name else None
            # 2. a logged-in session gets a freshly signed one on every request
            if user is not None:
                expiry = int(time.time() + self.session_s)
                headers[IDENTITY_HEADER] = sign_identity(self.secret, user.username, expiry=expiry)
            return user

    return WorkbenchLoginHandler, WorkbenchLogoutHandler, WorkbenchIdentityProvider


def voila_app(config: Config, *, root: Path | None = None) -> Any:
    """An initialized (not started) Voila app serving the dashboards of ``config``."""
    from traitlets.config import Config as Traits

    secret = load_dashboard_secret(config)
    _, _, provider = _handlers()
    bound = type(
        "BoundWorkbenchIdentityProvider",
        (provider,),
        {
            "workbench_config": config,
            "secret": secret,
            "session_s": config.voila_session_hours * 3600.0,
        },
    )
    # a kernel must never inherit an identity from the server's own environment
    os.environ.pop(IDENTITY_ENV, None)
    traits = Traits()
    traits.Voila.ip = config.host
    traits.Voila.port = config.voila_port
    traits.Voila.port_retries = 0
    traits.Voila.open_browser = False
    traits.Voila.identity_provider_class = bound
    # sessions survive restarts (rolling upgrades): the cookie key derives from the secret
    traits.Voila.cookie_secret = hmac.new(secret, b"voila-cookie", hashlib.sha256).digest()
    traits.VoilaConfiguration.http_header_envs = [IDENTITY_HEADER]
    traits.VoilaConfiguration.preheat_kernel = False
    traits.VoilaConfiguration.show_tracebacks = False
    # kernels owned by the user whose page started them, capped, culled when abandoned
    traits.VoilaConfiguration.multi_kernel_manager_class = kernel_manager_class(config, secret)
    for name, value in cull_traits(config).items():
        setattr(traits.MappingKernelManager, name, value)
    app = _voila_class(config)(config=traits)
    app.initialize([str(root or prepare_root(config))])
    return app


def _voila_class(config: Config) -> type[Any]:
    """Voila without its file list: its start page and the Panel pages' old Voila
    addresses redirect to the Panel server (home, ``/building``, ``/fleet``)."""
    from tornado.web import RequestHandler
    from voila.app import Voila

    panel = f"http://{config.host}:{config.panel_port}"

    class ToPanel(RequestHandler):
        def get(self, path: str = "") -> None:
            page = PANEL_PAGES.get(path.strip("/"))
            query = f"?{self.request.query}" if page and self.request.query else ""
            self.redirect(f"{panel}/{page or ''}{query}")

    class WorkbenchVoila(Voila):  # type: ignore[misc]
        def init_handlers(self) -> list[Any]:
            base = str(self.server_url).rstrip("/")
            pages = "|".join(re.escape(name) for name in PANEL_PAGES)
            own = [
                (f"{base}/?", ToPanel),
                (f"{base}/voila/tree(/.*)?", ToPanel),
                (f"{base}/voila/render/({pages})", ToPanel),
            ]
            return own + guard_handlers(list(super().init_handlers()))

    return WorkbenchVoila


def run_voila(config: Config) -> int:
    """Serve the dashboards until SIGTERM/SIGINT (kernels are shut down on the way out)."""
    from tornado.ioloop import IOLoop, PeriodicCallback

    from workbench.dashboards.kernels import write_kernel_count
    from workbench.dashboards.panel_server import panel_server

    root = prepare_root(config)
    app = voila_app(config, root=root)
    # the kernel count for 'workbench status', written where it looks
    PeriodicCallback(lambda: write_kernel_count(config, app.kernel_manager), 5000).start()
    # kernels waiting for the first pages (the manager exists once the loop runs)
    IOLoop.current().add_callback(lambda: app.kernel_manager.fill_pool())
    # one process, one loop: the Panel server listens now and serves once Voila's loop runs
    server = panel_server(config, root)
    server.start()
    logger.info(
        "dashboards on http://%s:%d/ (login required); provisioning on :%d",
        config.host,
        config.panel_port,
        config.voila_port,
    )
    app.start()
    return 0
