"""Which registry version each running door has applied, and how a command wakes them.

A *door* is a process that answers devices from an in-memory copy of
``registry/devices`` (each gateway worker). Each one keeps a small JSON file
``$WORKBENCH_HOME/run/registry-views/<pid>.json`` — its pid and start time, the
registry version it has applied and a localhost UDP port — written before its first
load and after every change it applies, removed when it exits.

A registry command that takes a credential away (disable, deprovision, rotate-key)
commits, then sends one datagram to every live door's port (a *wake*: the door reads
the change at once instead of at its next poll) and returns only when every live door's
file shows a version at or past the commit's (:func:`wait_applied`); a door that does not
get there within ``WORKBENCH_REGISTRY_APPLY_TIMEOUT`` is named in the error. A command
that grants (provision, enable) only wakes: a door re-reads the registry by itself
before it refuses a device whose token verifies.

Why files and a datagram, not an endpoint each door serves: a file outlives a door that
hangs, so a command can still name it, and it needs no port of the gateway's own; the
datagram costs nothing when nobody listens (a door that died) and is not waited on — the
files are. It covers the doors on the host (the same ``WORKBENCH_HOME``) as the command;
doors elsewhere learn the change at their next poll (``WORKBENCH_REGISTRY_POLL``).

A door that starts writes its file (version -1) before it loads, so a command that
committed before that file existed is in the load, and one that commits after sees the
file and waits for the door.

>>> import tempfile
>>> from workbench.config import Config
>>> cfg = Config.from_env({"WORKBENCH_HOME": tempfile.mkdtemp()})
>>> view = ViewFile(cfg, "door 0", port=9)
>>> view.publish(7)
>>> [(v.name, v.version) for v in live_views(cfg)]
[('door 0', 7)]
>>> wait_applied(cfg, 7, timeout_s=1.0, what="a test")
>>> view.remove(); live_views(cfg)
[]
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import socket
import time
from pathlib import Path

import psutil

from workbench.config import Config
from workbench.exceptions import RegistryNotApplied
from workbench.filemodes import write_json

__all__ = [
    "View",
    "ViewFile",
    "live_views",
    "unreadable_line",
    "views_dir",
    "wait_applied",
    "wake",
]

logger = logging.getLogger(__name__)

_WAIT_TICK_S = 0.005
_REWAKE_S = 0.5  # a datagram can be lost (a full socket buffer): wake a lagging door again


def views_dir(config: Config) -> Path:
    """The folder of the doors' view files."""
    return config.run_dir / "registry-views"


def _started(pid: int) -> float:
    return float(psutil.Process(pid).create_time())


@dataclasses.dataclass(frozen=True)
class View:
    """One door's file: who it is and which registry version it has applied."""

    path: Path
    name: str
    pid: int
    started: float
    port: int
    version: int  # -1: still loading
    unreadable_since: float | None = None  # since when (epoch s) its registry reads fail
    error: str = ""  # why the last of them failed


class ViewFile:
    """This process's view file (a door's side)."""

    def __init__(self, config: Config, name: str, *, port: int) -> None:
        self.name = name
        self.port = port
        self.pid = os.getpid()
        self._started = _started(self.pid)
        self.path = views_dir(config) / f"{self.pid}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def publish(
        self, version: int | None, *, unreadable_since: float | None = None, error: str = ""
    ) -> None:
        """Record ``version`` (None or -1: not loaded yet) as applied; ``unreadable_since``
        (epoch seconds) when the door's registry reads have failed since then, with the
        last ``error``: what a command waiting for it and ``workbench status`` show."""
        body = {
            "name": self.name,
            "pid": self.pid,
            "started": self._started,
            "port": self.port,
            "version": -1 if version is None else version,
            "unreadable_since": unreadable_since,
            "error": error,
        }
        write_json(self.path, body)

    def remove(self) -> None:
        """Forget this door (it is exiting)."""
        self.path.unlink(missing_ok=True)


def _alive(view: View) -> bool:
    try:
        # a pid is reused: the start time tells this door from a later process
        return abs(_started(view.pid) - view.started) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def live_views(config: Config) -> list[View]:
    """The view files of the doors running now; those of dead doors are removed."""
    views = []
    try:
        paths = sorted(views_dir(config).glob("*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            body = json.loads(path.read_text())
            since = body.get("unreadable_since")
            view = View(
                path, str(body["name"]), int(body["pid"]), float(body["started"]),
                int(body["port"]), int(body["version"]),
                None if since is None else float(since), str(body.get("error") or ""),
            )  # fmt: skip
        except FileNotFoundError:  # the door exited between the listing and the read
            continue
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("ignoring unreadable registry view file %s", path)
            continue
        if _alive(view):
            views.append(view)
        else:  # a door killed without its clean-up (SIGKILL, a crash)
            with contextlib.suppress(OSError):
                path.unlink()
    return views


def wake(views: list[View], version: int | None = None) -> None:
    """Ask ``views``' doors to read the registry now (one datagram each, not waited on)."""
    payload = b"registry %d" % (-1 if version is None else version)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for view in views:
            with contextlib.suppress(OSError):  # the door is gone: its file goes next time
                sock.sendto(payload, ("127.0.0.1", view.port))


def unreadable_line(view: View) -> str:
    """``cannot read the registry since 09:41:07 UTC (<error>)``; empty when it can."""
    if view.unreadable_since is None:
        return ""
    clock = dt.datetime.fromtimestamp(view.unreadable_since, dt.UTC).strftime("%H:%M:%S UTC")
    return f"cannot read the registry since {clock}" + (f" ({view.error})" if view.error else "")


def _lagging(view: View) -> str:
    line = (
        f"{view.name} (pid {view.pid}) at version {view.version if view.version >= 0 else 'none'}"
    )
    unreadable = unreadable_line(view)
    return f"{line}, {unreadable}" if unreadable else line


def wait_applied(config: Config, version: int, *, timeout_s: float, what: str) -> None:
    """Return once every live door has applied registry ``version``; raise
    :class:`RegistryNotApplied` naming those that had not after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    woken: dict[Path, float] = {}
    while True:
        lagging = [v for v in live_views(config) if v.version < version]
        if not lagging:
            return
        now = time.monotonic()
        due = [v for v in lagging if now - woken.get(v.path, -_REWAKE_S) >= _REWAKE_S]
        wake(due, version)
        woken.update((v.path, now) for v in due)
        if now >= deadline:
            doors = ", ".join(_lagging(v) for v in lagging)
            raise RegistryNotApplied(
                f"{what} is committed (registry version {version}), but after "
                f"{timeout_s:g} s not every running gateway worker had applied it: {doors}; "
                "until it does, that worker may still accept the old credential",
                hint="see 'workbench logs gateway'; a worker that cannot read the registry "
                "keeps its last view: restart it ('workbench restart gateway --rolling'), or "
                "raise WORKBENCH_REGISTRY_APPLY_TIMEOUT",
            )
        time.sleep(_WAIT_TICK_S)
