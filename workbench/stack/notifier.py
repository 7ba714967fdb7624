"""The alarm notifier as a component of the stack: started and supervised by
``workbench up``, its deliveries and failures shown by ``workbench status``."""

from __future__ import annotations

import sys

from workbench.config import Config
from workbench.stack.base import Component, Detail, UpOptions

__all__ = ["NOTIFIER"]


def _command(config: Config, options: UpOptions) -> list[str]:
    return [sys.executable, "-m", "workbench", "alarms", "notify"]


def _health(config: Config) -> str | None:
    from workbench.alarms.notify import notifier_health

    return notifier_health(config)


def _describe(config: Config) -> Detail:
    from workbench.alarms.notify import notifier_status

    return Detail(*notifier_status(config))


NOTIFIER = Component(
    name="notifier",
    command=_command,
    address=lambda cfg: f"alarm webhooks of every tenant (state in {cfg.run_dir})",
    health=_health,
    describe=_describe,
)
