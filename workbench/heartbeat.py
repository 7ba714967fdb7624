"""The heartbeats background components leave for ``workbench up`` and ``status``.

A component (the processor's members, the simulator, the alarm notifier) rewrites a
small JSON file every few seconds with :func:`workbench.filemodes.write_json`, its
``at`` field the Unix time of writing. Health checks read it here: a missing file is a
component that has not beaten yet, an old one a component that stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.config import Config

__all__ = ["STALE_AFTER_S", "Heartbeat", "heartbeat_path", "read_heartbeat"]

STALE_AFTER_S = 30.0
"""A heartbeat older than this is a component that stopped beating."""


@dataclass(frozen=True)
class Heartbeat:
    """What a component last wrote, and how long ago."""

    fields: dict[str, Any]
    age_s: float

    @property
    def stale(self) -> bool:
        return self.age_s > STALE_AFTER_S

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


def read_heartbeat(path: Path) -> Heartbeat | None:
    """The heartbeat at ``path``; None when there is none yet (or it is unreadable)."""
    try:
        fields = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(fields, dict):
        return None
    return Heartbeat(fields, time.time() - float(fields.get("at", 0)))


def heartbeat_path(config: Config, component: str) -> Path:
    """Where ``component`` (``processor``, ``notifier``) beats: in the run folder."""
    return config.run_dir / f"{component}.heartbeat.json"
