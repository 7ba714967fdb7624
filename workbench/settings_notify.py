"""The settings of alarm notifications: the part of :class:`~workbench.config.Config`
that the notifier reads (webhook targets and timeout, the SMTP server).

:class:`NotifySettings` is a base of ``Config`` only so that ``config.py`` stays one
readable screen per concern; use ``Config`` (``config.smtp_host``), never this class.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from workbench.settings_parsers import Setting

__all__ = ["NotifySettings"]


def _setting(env: str, default: str, help: str, kind: str = "str") -> Any:
    return dataclasses.field(metadata={"setting": Setting(env, default, help, kind)})


@dataclasses.dataclass(frozen=True)
class NotifySettings:
    """The notification fields of :class:`~workbench.config.Config`."""

    webhook_allow: str = _setting(
        "WORKBENCH_WEBHOOK_ALLOW",
        "",
        "hosts or networks (comma-separated, e.g. 127.0.0.1,10.0.0.0/8) an alarm webhook may "
        "target although loopback, link-local or private (refused by default)",
    )
    webhook_timeout: float = _setting(
        "WORKBENCH_WEBHOOK_TIMEOUT",
        "5",
        "seconds an alarm webhook delivery (or SMTP conversation) may take before it counts "
        "as failed and is retried",
        "float",
    )
    smtp_host: str = _setting(
        "WORKBENCH_SMTP_HOST",
        "",
        "SMTP server that sends the alarm emails ([[email]] contact points); empty: none, "
        "and every email notification fails with that reason",
    )
    smtp_port: int = _setting("WORKBENCH_SMTP_PORT", "25", "SMTP server port", "port")
    smtp_user: str = _setting("WORKBENCH_SMTP_USER", "", "SMTP login user (empty: no login)")
    smtp_password: str = _setting("WORKBENCH_SMTP_PASSWORD", "", "SMTP login password")
    smtp_from: str = _setting(
        "WORKBENCH_SMTP_FROM",
        "workbench@localhost",
        "From address of alarm emails (its domain ends their Message-IDs)",
    )
    smtp_starttls: bool = _setting(
        "WORKBENCH_SMTP_STARTTLS",
        "0",
        "1: upgrade the SMTP connection with STARTTLS before logging in (refused if the "
        "server does not offer it)",
        "bool",
    )
