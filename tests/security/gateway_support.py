"""What the gateway security tests share: a live gateway per module, raw-socket HTTP, metrics."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fresh_topic
from tests.ingest_service.gateway.conftest import LiveGateway, live_gateway
from workbench.config import Config


@contextlib.contextmanager
def module_gateway(broker_config: Config, home: Path, **overrides: str) -> Iterator[LiveGateway]:
    """A gateway of its own (fresh topic, lake and home) over the session broker."""
    config = fresh_topic(broker_config, home)
    with live_gateway(config, **overrides) as live:
        yield live


def gateway_fixture(
    label: str, *, devices: Mapping[str, Mapping[str, Any]] | None = None, **overrides: str
) -> Callable[..., Iterator[LiveGateway]]:
    """A module-scoped fixture, to assign to the fixture's name: a gateway of its own with
    the settings ``overrides``, and ``devices`` (device id: ``provision`` arguments)
    provisioned and in the gateway's registry before the first test."""

    @pytest.fixture(scope="module")
    def gateway(
        broker_config: Config, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[LiveGateway]:
        with module_gateway(broker_config, tmp_path_factory.mktemp(label), **overrides) as live:
            for device, provision in (devices or {}).items():
                live.provision(device, **provision)
            if devices:
                live.wait_for_registry()
            yield live

    return gateway


@dataclasses.dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        doc: dict[str, object] = json.loads(self.body)
        return doc


def read_response(sock: socket.socket) -> RawResponse:
    """One HTTP/1.1 response (with Content-Length) from ``sock``."""
    f = sock.makefile("rb")
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection without answering")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = f.read(int(headers.get("content-length", "0")))
    return RawResponse(status, headers, body)


def raw_request(gw: LiveGateway, request: bytes, *, timeout: float = 15) -> RawResponse:
    """Send ``request`` bytes as they are on a fresh connection and read the answer."""
    with socket.create_connection((gw.config.host, gw.config.gateway_port), timeout=timeout) as s:
        s.sendall(request)
        return read_response(s)


def post_bytes(authorization: bytes, body: bytes = b"{}") -> bytes:
    """A telemetry POST whose Authorization header value is ``authorization``, byte for byte."""
    return (
        b"POST /v1/telemetry HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n"
        b"Authorization: %b\r\n\r\n%b" % (len(body), authorization, body)
    )


# Connections a test's own probes had refused for a full door, per gateway: the gateway
# counts those as rejections too, so exact counts add them back in.
OWN_REFUSALS: collections.Counter[str] = collections.Counter()


def metrics(gw: LiveGateway) -> str:
    """``/metrics``, retried while the gateway refuses the connection (a full door)."""
    for _ in range(100):
        try:
            return gw.metrics()
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                OWN_REFUSALS[gw.url] += 1
            time.sleep(0.1)
        except OSError:  # a reset while the door is full
            time.sleep(0.1)
    return gw.metrics()


def counted(text: str, name: str, **labels: str) -> float:
    """The value of ``name{labels}`` in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) : line.rindex("}") + 1]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def rejected(gw: LiveGateway, channel: str, status: int, reason: str) -> float:
    return counted(
        metrics(gw), "gateway_rejected_total", channel=channel, reason=reason, status=str(status)
    )


def is_problem(r: RawResponse) -> bool:
    if not r.headers.get("content-type", "").startswith("application/problem+json"):
        return False
    doc = r.json()
    return doc.get("status") == r.status and isinstance(doc.get("detail"), str)


def get_healthz(gw: LiveGateway) -> int:
    with urllib.request.urlopen(f"{gw.url}/healthz", timeout=10) as r:
        return int(r.status)
