"""Connecting to the HiveServer2 endpoint with pyhive, and the local admin secret.

Without ``--as``, the ``workbench`` CLI on the server acts as the platform
admin: it reads ``$WORKBENCH_HOME/secrets/hive-admin.secret`` (mode 0600, made
by whichever of the server or the CLI needs it first) and logs in as user
``admin`` with it. Only someone who can read that home can do so, which is the
same trust the CLI's registry commands already rely on.
"""

from __future__ import annotations

import base64
import hmac
from pathlib import Path
from typing import Any

from workbench.config import Config
from workbench.exceptions import AccessDenied, MasterKeyError, QueryUnavailable
from workbench.secretfiles import load_secret, secret_path

__all__ = [
    "ADMIN_USER",
    "admin_secret_path",
    "check_admin_secret",
    "connect",
    "ensure_admin_secret",
    "open_connection",
]

ADMIN_USER = "admin"


def admin_secret_path(config: Config) -> Path:
    """``$WORKBENCH_HOME/secrets/hive-admin.secret``."""
    return secret_path(config, "hive-admin.secret")


def ensure_admin_secret(config: Config) -> str:
    """The local admin secret (base64 text), created (0600, 32 random bytes) when missing."""
    secret = load_secret(
        admin_secret_path(config),
        what="HiveServer2 admin secret",
        lost_hint="delete the file; the server and the CLI create a new one",
    )
    return base64.b64encode(secret).decode()


def check_admin_secret(config: Config, user: str, password: str) -> bool:
    """Whether ``user``/``password`` is the local admin login (constant-time)."""
    if user != ADMIN_USER:
        return False
    try:
        secret = ensure_admin_secret(config) if admin_secret_path(config).exists() else ""
    except MasterKeyError:
        return False
    return bool(secret) and hmac.compare_digest(secret.encode(), password.encode())


def connect(
    config: Config,
    *,
    user: str | None = None,
    password: str | None = None,
    host: str | None = None,
    port: int | None = None,
) -> Any:
    """A pyhive connection to the endpoint (SASL PLAIN); without ``user`` the local admin
    (see :func:`open_connection` for the errors)."""
    if user is None:
        user, password = ADMIN_USER, ensure_admin_secret(config)
    return open_connection(host or config.host, port or config.hive_port, user, password or "")


def open_connection(host: str, port: int, user: str, password: str) -> Any:
    """A pyhive connection to ``host:port`` as ``user`` (SASL PLAIN).

    Raises :class:`QueryUnavailable` when nothing answers or the login is refused, and
    :class:`AccessDenied` when the user logs in but may not query (a viewer).
    """
    from pyhive import hive
    from pyhive.exc import OperationalError

    try:
        return hive.connect(host=host, port=port, username=user, password=password, auth="CUSTOM")
    except OperationalError as exc:
        # the server answered: it opened no session for this user (a role that may not
        # query); pyhive wraps the TOpenSessionResp
        status = getattr(exc.args[0] if exc.args else None, "status", None)
        message = str(getattr(status, "errorMessage", None) or exc)
        if getattr(status, "sqlState", None) == "42000" or "not authorized" in message:
            raise AccessDenied(
                f"HiveServer2 at {host}:{port}: {user!r} is not allowed to query "
                f"({message.split('; ')[0]})",
                hint="ask an admin for an analyst, operator or admin account",
            ) from None
        raise QueryUnavailable(
            f"HiveServer2 at {host}:{port} opened no session for {user!r}: {message}",
            hint="check the server's log: workbench logs hiveserver2",
        ) from None
    except Exception as exc:
        text = str(exc)
        if "Bad status: 3" in text or "invalid user" in text.lower():
            raise QueryUnavailable(
                f"HiveServer2 at {host}:{port} refused the login of {user!r}",
                hint="check the user name and password (WORKBENCH_PASSWORD)",
            ) from None
        raise QueryUnavailable(
            f"HiveServer2 at {host}:{port} is not reachable ({type(exc).__name__}: {text})",
            hint="start it with 'workbench up' or check WORKBENCH_HIVE_PORT",
        ) from None
