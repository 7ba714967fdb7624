"""The Voila dashboards server with per-user login (``python -m ingest_service voila``).

* A login page of its own (``/login``) checks workbench users with
  :func:`~workbench.tenancy.authenticate` (failures land in the access log) and
  sets a signed session cookie; ``/logout`` clears it.
* On every request of a logged-in session the identity provider *overwrites*
  ``X-Workbench-Identity`` with ``user|expiry|HMAC`` (a client-sent value is always
  removed first); Voila copies that header into the kernel's environment, where
  :func:`~workbench.dashboards.identity.session_principal` verifies it.
* Preheated kernels are off (they would start before anyone logged in), and
  Voila's kernels accept only widget messages, never code.
* The served folder is ``$WORKBENCH_HOME/voila``: copies of ``dashboards/*.ipynb``
  and ``notebooks/provisioning.ipynb``, nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from workbench.config import Config
from workbench.dashboards.identity import (
    IDENTITY_ENV,
    IDENTITY_HEADER,
    load_dashboard_secret,
    sign_identity,
)
from workbench.exceptions import ConfigError, WorkbenchError

__all__ = ["SERVED_NOTEBOOKS", "prepare_root", "run_voila", "voila_app"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
# served name -> source in the checkout
SERVED_NOTEBOOKS = {
    "building.ipynb": REPO / "dashboards" / "building.ipynb",
    "fleet.ipynb": REPO / "dashboards" / "fleet.ipynb",
    "provisioning.ipynb": REPO / "notebooks" / "provisioning.ipynb",
}

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
    """``$WORKBENCH_HOME/voila`` with fresh copies of the served notebooks."""
    root = config.home / "voila"
    root.mkdir(parents=True, exist_ok=True)
    for name, source in SERVED_NOTEBOOKS.items():
        if not source.is_file():
            raise ConfigError(
                f"dashboard notebook {source} is missing",
                hint="run the dashboards from a checkout of the workbench (pip install -e .)",
            )
        shutil.copyfile(source, root / name)
    return root


def _handlers() -> tuple[type[Any], type[Any], type[Any]]:
    """The login/logout handlers and identity provider (imported late: jupyter_server)."""
    from jupyter_server.auth.decorator import allow_unauthenticated
    from jupyter_server.auth.identity import IdentityProvider, User
    from jupyter_server.base.handlers import JupyterHandler

    class WorkbenchLoginHandler(JupyterHandler):
        """The login form: workbench user name and password."""

        def _next(self) -> str:
            base = str(self.base_url)
            target = self.get_argument("next", default=base)
            parsed = urlparse(target)
            if parsed.scheme or parsed.netloc or not target.startswith(base) or "\\" in target:
                return base
            return target

        def _form(self, error: str = "", user: str = "") -> str:
            action = f"{self.base_url}login?next={quote(self._next())}"
            message = f"<p class='wb-login-error'>{html.escape(error)}</p>" if error else ""
            body = (
                f"<h3>Log in</h3>{message}<form method='post' action='{html.escape(action)}'>"
                f"{self.xsrf_form_html()}"
                "<label>User name<input name='username' id='username' autocomplete='username' "
                f"value='{html.escape(user)}' autofocus></label>"
                "<label>Password<input name='password' id='password' type='password' "
                "autocomplete='current-password'></label>"
                "<button type='submit' id='login'>Log in</button></form>"
            )
            return _PAGE.format(title="Log in", body=body)

        @allow_unauthenticated  # type: ignore[untyped-decorator,unused-ignore]
        def get(self) -> None:
            if self.current_user:
                self.redirect(self._next())
                return
            self.finish(self._form())

        @allow_unauthenticated  # type: ignore[untyped-decorator,unused-ignore]
        async def post(self) -> None:
            from workbench.tenancy import authenticate, record_access

            provider: Any = self.identity_provider
            config = provider.workbench_config
            user = self.get_argument("username", default="").strip()
            password = self.get_argument("password", default="")
            loop = asyncio.get_running_loop()
            try:  # scrypt and a Delta read: off the event loop
                principal = await loop.run_in_executor(
                    None, lambda: authenticate(config, user, password, door="voila")
                )
            except WorkbenchError as exc:
                self.set_status(401)
                self.finish(self._form(str(exc), user))
                return
            await loop.run_in_executor(
                None,
                lambda: record_access(
                    config, principal, action="login:voila", target=user, outcome="ok"
                ),
            )
            provider.set_login_cookie(self, User(username=principal.user))
            self.redirect(self._next())

    class WorkbenchLogoutHandler(JupyterHandler):
        """Clear the session cookie."""

        @allow_unauthenticated  # type: ignore[untyped-decorator,unused-ignore]
        def get(self) -> None:
            self.identity_provider.clear_login_cookie(self)
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
            user = await self._get_user(handler)
            # 2. a logged-in session gets a freshly signed one on every request
            if user is not None:
                expiry = int(time.time() + self.session_s)
                headers[IDENTITY_HEADER] = sign_identity(self.secret, user.username, expiry=expiry)
            return user

    return WorkbenchLoginHandler, WorkbenchLogoutHandler, WorkbenchIdentityProvider


def voila_app(config: Config, *, root: Path | None = None) -> Any:
    """An initialized (not started) Voila app serving the dashboards of ``config``."""
    from traitlets.config import Config as Traits
    from voila.app import Voila

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
    app = Voila(config=traits)
    app.initialize([str(root or prepare_root(config))])
    return app


def run_voila(config: Config) -> int:
    """Serve the dashboards until SIGTERM/SIGINT (kernels are shut down on the way out)."""
    app = voila_app(config)
    logger.info("dashboards on http://%s:%d/ (login required)", config.host, config.voila_port)
    app.start()
    return 0
