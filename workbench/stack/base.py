"""What a supervised component is: how to start it, where it listens, how to tell it is healthy.

Adding a component to ``workbench up`` is one
:func:`~workbench.stack.components.register` call in :mod:`workbench.stack.components`::

    register(Component(
        name="gateway",
        command=lambda cfg, opts: [sys.executable, "-m", "ingest_service", "gateway"],
        ports=lambda cfg: [Port(cfg.host, cfg.gateway_port, "WORKBENCH_GATEWAY_PORT")],
        address=lambda cfg: f"http://{cfg.host}:{cfg.gateway_port}",
        health=http_health("/healthz", port=lambda cfg: cfg.gateway_port),
    ))
"""

from __future__ import annotations

import dataclasses
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from workbench.config import Config

__all__ = [
    "Component",
    "Detail",
    "HealthCheck",
    "Port",
    "UpOptions",
    "http_health",
    "tcp_health",
]


@dataclasses.dataclass(frozen=True)
class Port:
    """A port a component binds; checked free before start."""

    host: str
    port: int
    env: str  # the variable that moves it, named in the error when taken


@dataclasses.dataclass(frozen=True)
class UpOptions:
    """Options of ``workbench up`` that components read when building their command.

    ``None`` means "the component's own default".
    """

    devices: int | None = None  # simulated devices
    interval: float | None = None  # seconds between one device's events
    scenario: str | None = None  # simulator scenario(s), comma-separated
    skip: frozenset[str] = frozenset()  # components not to start (e.g. --no-simulator)


HealthCheck = Callable[[Config], str | None]
"""Returns None when healthy, else a short reason. Must answer within a few seconds."""


@dataclasses.dataclass(frozen=True)
class Detail:
    """What a component's ``describe`` may return instead of a plain string: the one-line
    ``text`` of ``workbench status`` plus numbers for ``status --json`` (its ``metrics``)."""

    text: str
    metrics: dict[str, Any] | None = None


def _always(config: Config) -> bool:
    return True


def _no_ports(config: Config) -> list[Port]:
    return []


@dataclasses.dataclass(frozen=True)
class Component:
    """One background process of the stack (or, with ``command=None``, an external service
    the stack depends on and only health-checks)."""

    name: str
    command: Callable[[Config, UpOptions], list[str]] | None
    address: Callable[[Config], str]
    health: HealthCheck
    ports: Callable[[Config], list[Port]] = _no_ports
    enabled: Callable[[Config], bool] = _always
    ready: HealthCheck | None = None  # start-up check before after_healthy; default: health
    after_healthy: Callable[[Config], None] | None = None
    # status detail when healthy (lag, rates): a line, or a Detail with numbers for --json
    describe: Callable[[Config], str | Detail] | None = None
    env: Callable[[Config], dict[str, str]] | None = None
    stop_timeout_s: float = 15.0
    # run by ``down`` (not by restarts) before the process is stopped: what it started
    # outside its own process group, e.g. the hub's users' servers, is stopped too
    before_down: Callable[[Config], None] | None = None
    # how ``restart --rolling`` treats it: "pool" (a WorkerPool parent replaces its workers
    # one at a time), "in-place" (a plain restart: not on the devices' path), or a reason
    # why it cannot be restarted without losing data
    rolling: str = "in-place"


def tcp_health(port: Callable[[Config], int]) -> HealthCheck:
    """Healthy when the port accepts a TCP connection."""

    def check(config: Config) -> str | None:
        try:
            with socket.create_connection((config.host, port(config)), timeout=2.0):
                return None
        except OSError as exc:
            return f"port {port(config)} not accepting connections ({exc.strerror or exc})"

    return check


def http_health(path: str, *, port: Callable[[Config], int]) -> HealthCheck:
    """Healthy when ``GET path`` answers 2xx."""

    def check(config: Config) -> str | None:
        url = f"http://{config.host}:{port(config)}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                status: int = response.status
        except urllib.error.HTTPError as exc:
            return f"GET {url} answered {exc.code}"
        except OSError as exc:
            return f"GET {url} failed ({exc})"
        return None if 200 <= status < 300 else f"GET {url} answered {status}"

    return check
