"""The dashboards' login, shared by the Panel and the Voila servers: one check of the form,
one session cookie that both servers accept."""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Callable
from typing import Any

from workbench.config import Config
from workbench.dashboards.identity import SESSION_COOKIE, sign_identity
from workbench.exceptions import WorkbenchError
from workbench.tenancy import Principal

__all__ = [
    "check_login_form",
    "end_session",
    "login_form_body",
    "safe_next",
    "set_session_cookie",
]


def safe_next(target: str | None, base: str = "/") -> str:
    r"""Where to go after the login: ``target`` when it is a path under ``base`` on this
    server, else ``base`` — never another site (an open redirect would hand a phishing
    page the user's fresh login).

    >>> safe_next("/building?building=b-1"), safe_next("//evil.example/x")
    ('/building?building=b-1', '/')
    >>> safe_next("https://evil.example/"), safe_next("/\\evil.example"), safe_next(None)
    ('/', '/', '/')
    >>> safe_next("/voila/render/provisioning.ipynb", "/voila/"), safe_next("/x", "/voila/")
    ('/voila/render/provisioning.ipynb', '/voila/')
    """
    from urllib.parse import urlparse

    if not target or not target.startswith(base) or target.startswith("//") or "\\" in target:
        return base
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc:
        return base
    return target


async def check_login_form(
    handler: Any, config: Config, *, door: str, form: Callable[[str, str], str]
) -> Principal | None:
    """The principal of the login form ``handler`` (a tornado request handler) received,
    the login recorded as ``login:<door>``; None once a refusal is answered — 429 with
    ``Retry-After`` while the login is throttled, 401 otherwise, each with the form drawn
    again by ``form(message, user)``."""
    from workbench.tenancy import LoginThrottled, authenticate, record_access

    user = handler.get_argument("username", default="").strip()
    password = handler.get_argument("password", default="")
    # the connection's peer (X-Forwarded-For counts only when trust_xheaders is set)
    source = handler.request.remote_ip or "unknown"
    loop = asyncio.get_running_loop()
    try:  # scrypt and a Delta read: off the event loop
        principal = await loop.run_in_executor(
            None, lambda: authenticate(config, user, password, door=door, source=source)
        )
    except LoginThrottled as exc:
        handler.set_status(429)
        handler.set_header("Retry-After", str(exc.retry_after))
        handler.finish(form(str(exc), user))
        return None
    except WorkbenchError as exc:
        handler.set_status(401)
        handler.finish(form(str(exc), user))
        return None
    await loop.run_in_executor(
        None,
        lambda: record_access(config, principal, action=f"login:{door}", target=user, outcome="ok"),
    )
    return principal


def set_session_cookie(handler: Any, secret: bytes, user: str, *, session_s: float) -> None:
    """Give ``handler``'s browser the signed session cookie of ``user``, valid ``session_s``
    seconds, which the Panel pages and the Voila server both accept."""
    expiry = int(time.time() + session_s)
    handler.set_cookie(
        SESSION_COOKIE,
        sign_identity(secret, user, expiry=expiry),
        expires=expiry,
        httponly=True,
        samesite="Lax",
        secure=handler.request.protocol == "https",
    )


def end_session(handler: Any, config: Config) -> None:
    """Log ``handler``'s browser out of both dashboard servers: its session cookie is
    refused from now on, even replayed from a copy, and cleared from the browser (with
    the Voila server's own login cookie of older versions)."""
    from workbench.dashboards.sessions import logouts

    token = handler.get_cookie(SESSION_COOKIE)
    if token:
        logouts(config).revoke(token, now=time.time())
    handler.clear_cookie(SESSION_COOKIE)
    for name in handler.request.cookies:
        if name.startswith("username-"):
            handler.clear_cookie(name)


def login_form_body(action: str, *, error: str = "", user: str = "", hidden: str = "") -> str:
    """The login form both servers draw: posting to ``action``, with ``error`` above it,
    ``user`` filled in and ``hidden`` inputs (Voila's XSRF token) inside it."""
    message = f"<p class='wb-login-error'>{html.escape(error)}</p>" if error else ""
    return (
        f"<h3>Log in</h3>{message}<form method='post' action='{html.escape(action)}'>"
        f"{hidden}"
        "<label>User name<input name='username' id='username' autocomplete='username' "
        f"value='{html.escape(user)}' autofocus></label>"
        "<label>Password<input name='password' id='password' type='password' "
        "autocomplete='current-password'></label>"
        "<button type='submit' id='login'>Log in</button></form>"
    )
