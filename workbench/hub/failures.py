"""Servers that failed to start, kept where ``workbench status`` can show them.

JupyterHub tells the user whose spawn failed (on the hub's page) and logs it, but its
REST API forgets the failure; an operator running ``workbench status`` should see it
too. The spawner records each failure in ``$WORKBENCH_HOME/hub/spawn-failures.json``
(``{user: {"at": ISO time, "reason": text}}``) and removes the user's entry when their
next server starts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from pathlib import Path

from workbench.config import Config
from workbench.filemodes import write_json

__all__ = ["clear_spawn_failure", "record_spawn_failure", "spawn_failures"]

_lock = threading.Lock()  # the hub's spawners share one file; they run in one process


def _path(config: Config) -> Path:
    return config.home / "hub" / "spawn-failures.json"


def spawn_failures(config: Config) -> dict[str, dict[str, str]]:
    """``{user: {"at": ..., "reason": ...}}`` of the users whose last spawn failed.

    >>> import tempfile
    >>> cfg = Config.from_env({"WORKBENCH_HOME": tempfile.mkdtemp()})
    >>> at = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    >>> record_spawn_failure(cfg, "ann", "useradd failed", now=at)
    >>> spawn_failures(cfg)
    {'ann': {'at': '2026-12-06T00:00:00+00:00', 'reason': 'useradd failed'}}
    >>> clear_spawn_failure(cfg, "ann"); spawn_failures(cfg)
    {}
    """
    try:
        found = json.loads(_path(config).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write(config: Config, failures: dict[str, dict[str, str]]) -> None:
    write_json(_path(config), failures)


def record_spawn_failure(
    config: Config, user: str, reason: str, *, now: dt.datetime | None = None
) -> None:
    """Remember that ``user``'s server failed to start, and why (first line, 300 chars)."""
    at = (now or dt.datetime.now(dt.UTC)).isoformat()
    line = (reason.strip().splitlines() or ["no reason given"])[0][:300]
    with _lock:
        failures = spawn_failures(config)
        failures[user] = {"at": at, "reason": line}
        _write(config, failures)


def clear_spawn_failure(config: Config, user: str) -> None:
    """``user``'s server started: forget their last failure."""
    with _lock:
        failures = spawn_failures(config)
        if failures.pop(user, None) is not None:
            with contextlib.suppress(OSError):
                _write(config, failures)
