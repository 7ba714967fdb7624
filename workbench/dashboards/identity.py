"""Who a dashboard kernel works for: signed identity tokens and the session's ``Principal``.

After a login the Voila server puts ``X-Workbench-Identity: user|expiry|signature``
on every request of the authenticated session (always overwriting whatever the
client sent); Voila copies that header into the kernel's environment as
``HTTP_X_WORKBENCH_IDENTITY``. The kernel verifies the HMAC with the secret in
``$WORKBENCH_HOME/secrets/voila.key`` (0600, never sent to a browser) and reads
the user's role, tenant and buildings from the users table *now*, so a user
disabled since the login gets nothing.

>>> secret = b"k" * 32
>>> token = sign_identity(secret, "rita", expiry=2_000_000_000)
>>> verify_identity(secret, token, now=1_900_000_000)
'rita'
>>> verify_identity(secret, token.replace("rita", "root"), now=1_900_000_000) is None
True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from workbench.config import Config
from workbench.exceptions import AccessDenied
from workbench.secretfiles import load_secret
from workbench.secretfiles import secret_path as secrets_file
from workbench.tenancy import Principal, UserStore

__all__ = [
    "IDENTITY_ENV",
    "IDENTITY_HEADER",
    "SESSION_COOKIE",
    "cookie_principal",
    "cookie_user",
    "load_dashboard_secret",
    "session_principal",
    "sign_identity",
    "verify_identity",
]

IDENTITY_HEADER = "X-Workbench-Identity"
IDENTITY_ENV = "HTTP_X_WORKBENCH_IDENTITY"
# The login both dashboard servers (Panel and Voila, same host) accept: ``user|expiry|HMAC``.
SESSION_COOKIE = "wb_session"
# Voila puts these into every kernel it starts; their presence means "served by Voila".
_VOILA_ENV = ("VOILA_BASE_URL", "VOILA_REQUEST_URL", "VOILA_PREHEAT")
_SECRET_BYTES = 32


def secret_path(config: Config) -> Path:
    """``$WORKBENCH_HOME/secrets/voila.key``."""
    return secrets_file(config, "voila.key")


def load_dashboard_secret(config: Config) -> bytes:
    """The dashboards' signing secret, created (32 random bytes, mode 0600) on first use."""
    return load_secret(
        secret_path(config),
        what="dashboard secret",
        lost_hint="delete the file and restart the dashboards (everyone logs in again)",
    )


def _signature(secret: bytes, user: str, expiry: int) -> str:
    mac = hmac.new(secret, f"{user}|{expiry}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def sign_identity(secret: bytes, user: str, *, expiry: int) -> str:
    """``user|expiry|signature`` (expiry in unix seconds)."""
    if "|" in user:
        raise ValueError("user names never contain '|'")
    return f"{user}|{expiry}|{_signature(secret, user, expiry)}"


def verify_identity(secret: bytes, token: str, *, now: float) -> str | None:
    """The user a token names when its signature is right and it has not expired, else None."""
    parts = token.strip().split("|")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    user, expiry = parts[0], int(parts[1])
    if not hmac.compare_digest(parts[2], _signature(secret, user, expiry)):
        return None
    return user if now < expiry else None


def session_principal(
    config: Config,
    *,
    as_user: str | None = None,
    environ: Mapping[str, str] | None = None,
    now: float | None = None,
) -> Principal:
    """The principal a notebook kernel works for.

    * Served by Voila: the verified identity header's user (fresh from the users
      table, active users only); no header, a bad or an expired one is refused.
    * Anywhere else (papermill, JupyterLab, the CLI — trusted, local, like
      ``workbench`` on the server): ``as_user``'s principal, or the platform
      administrator when ``as_user`` is None.
    """
    import time

    env = os.environ if environ is None else environ
    token = env.get(IDENTITY_ENV)
    served = token is not None or any(name in env for name in _VOILA_ENV)
    if served:
        user = (
            verify_identity(
                load_dashboard_secret(config),
                token or "",
                now=time.time() if now is None else now,
            )
            if token
            else None
        )
        if user is None:
            raise AccessDenied(
                "this dashboard session carries no valid login",
                hint="log in again at /login",
            )
        return _active_principal(config, user)
    if as_user is None:
        return Principal.system()
    return _active_principal(config, as_user)


def cookie_user(config: Config, secret: bytes, token: str | None, *, now: float) -> str | None:
    """The user a session cookie names when it is signed with ``secret``, unexpired and
    not logged out; else None."""
    from workbench.dashboards.sessions import logouts

    if not token:
        return None
    user = verify_identity(secret, token, now=now)
    if user is None or logouts(config).revoked(token):
        return None
    return user


def cookie_principal(config: Config, token: str | None, *, now: float | None = None) -> Principal:
    """The principal a Panel page works for: the user the signed session cookie names
    (fresh from the users table, active users only); no cookie, a bad, an expired or a
    logged-out one is refused. Never falls back to anyone else."""
    import time

    user = cookie_user(
        config, load_dashboard_secret(config), token, now=time.time() if now is None else now
    )
    if user is None:
        raise AccessDenied("this dashboard session carries no valid login", hint="log in again")
    return _active_principal(config, user)


def _active_principal(config: Config, user: str) -> Principal:
    from workbench.exceptions import NotFound

    try:
        record = UserStore(config).get(user)
    except NotFound:
        raise AccessDenied(f"user {user!r} does not exist", hint="log in again") from None
    if record.status != "active":
        raise AccessDenied(f"user {user!r} is disabled", hint="ask an admin to enable it")
    return record.principal()
