"""A live gateway (subprocess, real sockets) on free ports over the session broker."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from proving.processes import stop_process
from tests.conftest import isolated_env
from workbench.config import Config
from workbench.kafka import external_env
from workbench.registry import Registry, sas_token
from workbench.tenancy.principal import Principal


@dataclasses.dataclass
class LiveGateway:
    config: Config
    env: dict[str, str]
    registry: Registry
    keys: dict[str, str]
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.config.gateway_port}"

    def token(self, device_id: str, **kw: Any) -> str:
        return sas_token(device_id, self.keys[device_id], **kw)

    def provision(self, device_id: str, **kw: Any) -> str:
        kw.setdefault("building", "b-1")
        kw.setdefault("device_type", "environment")
        self.keys[device_id] = self.registry.provision(device_id, **kw).key
        return self.keys[device_id]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def registry_version(self) -> int | None:
        """The registry version the gateway serves (with several workers: all of them)."""
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as r:
            health = json.loads(r.read())
        version: int | None = health.get("registry_version_all", health["registry_version"])
        return version

    def wait_for_registry(self, timeout: float = 10.0) -> None:
        """Until the gateway serves the registry's current version."""
        target = self.registry.version("devices")
        wait_until(lambda: self.registry_version() == target, timeout)


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.1)


def start_gateway(config: Config, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest_service", "gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(config.home / "gateway.log").open("wb"),
    )
    url = f"http://{config.host}:{config.gateway_port}/healthz"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise AssertionError(
                "gateway exited: " + (config.home / "gateway.log").read_text()[-2000:]
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("gateway not healthy within 30s")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the gateway and make sure none of its workers outlives it."""
    try:
        workers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    stop_process(proc, timeout_s=20)
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    for worker in alive:
        worker.kill()


@contextlib.contextmanager
def live_gateway(kafka_config: Config, **overrides: str) -> Iterator[LiveGateway]:
    """A gateway on free ports; tenant t-1, building b-1 and device dev-1 provisioned."""
    kafka_config.home.mkdir(parents=True, exist_ok=True)
    settings = {
        **external_env(kafka_config),
        "WORKBENCH_TOPIC": kafka_config.topic,
        "WORKBENCH_LAKE": kafka_config.lake,
        "WORKBENCH_REGISTRY_POLL": "0.3",
        "WORKBENCH_GATEWAY_MAX_BODY": "65536",
        "WORKBENCH_GATEWAY_MAX_BATCH": "1000",
        "WORKBENCH_LOG_LEVEL": "INFO",
    }
    env = isolated_env(kafka_config.home, **{**settings, **overrides})
    config = Config.from_env(env)
    registry = Registry(config, principal=Principal.system("test"))
    registry.add_tenant("t-1")
    registry.add_building("b-1", tenant="t-1")
    live = LiveGateway(config, env, registry, {}, None)  # type: ignore[arg-type]
    live.provision("dev-1", floor=3, room="3.12")
    live.proc = start_gateway(config, env)
    try:
        yield live
    finally:
        stop(live.proc)


@pytest.fixture
def gateway(kafka_config: Config) -> Iterator[LiveGateway]:
    """A gateway with the default number of workers (WORKBENCH_GATEWAY_WORKERS)."""
    with live_gateway(kafka_config) as live:
        yield live


def post_event(conn: http.client.HTTPConnection, token: str, body: str) -> tuple[int, str]:
    """POST one event body on ``conn``: (status, the problem's reason; empty for 202)."""
    conn.request(
        "POST",
        "/v1/telemetry",
        body=body,
        headers={"Authorization": token, "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    text = response.read().decode()
    return response.status, "" if response.status == 202 else json.loads(text).get("reason", "")
