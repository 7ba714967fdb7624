"""Read-your-writes at every door: a registry command's effect is in force at every gateway
worker, HTTP and legacy, the moment the command returns.

Real processes, real sockets, a real Delta registry of 100,000 devices, the real broker.
The gateway polls only every 60 s here, so nothing passes by the poll: what is tested is
the door's own registry read (grants) and the revoking commands' wait for every worker.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from ingest_service.translators import fbk1
from tests.conftest import run_cli
from tests.ingest_service.gateway.conftest import (
    LiveGateway,
    live_gateway,
    post_event,
    wait_until,
)
from workbench.config import Config
from workbench.registry import sas_token
from workbench.registry.views import live_views

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLEET = 100_000  # devices imported besides the ones the loop provisions
LOOP = 10  # devices provisioned, used, disabled, rotated... one after the other


@pytest.fixture
def fleet_gateway(kafka_config: Config, tmp_path: Path) -> Iterator[LiveGateway]:
    with live_gateway(
        kafka_config,
        WORKBENCH_GATEWAY_WORKERS="2",
        WORKBENCH_REGISTRY_POLL="60",
        # the keep-alive connections pinned to each worker idle while a CLI runs: a loaded
        # host may take longer than the default 15 s to start one
        WORKBENCH_GATEWAY_READ_TIMEOUT="300",
    ) as live:
        csv = tmp_path / "fleet.csv"
        lines = ["device_id,building_id,device_type"]
        lines += [f"fleet-{n:06d},b-1,environment" for n in range(FLEET)]
        csv.write_text("\n".join(lines) + "\n")
        done = run_cli(live.env, "devices", "import", str(csv), "--quiet", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["inserted"] == FLEET
        # the import returned: every worker holds the fleet (the import waits like a revocation)
        views = Path(live.config.run_dir, "registry-views").glob("*.json")
        assert {json.loads(v.read_text())["version"] for v in views} == {
            live.registry.version("devices")
        }
        yield live


def _worker_of(gw: LiveGateway, local_port: int, door_port: int) -> int:
    """The pid of the gateway worker holding the server end of our connection."""
    for worker in psutil.Process(gw.proc.pid).children():
        for conn in worker.net_connections(kind="tcp"):
            ours = conn.raddr and conn.raddr.port == local_port
            if ours and conn.laddr and conn.laddr.port == door_port:
                return worker.pid
    raise AssertionError(f"no worker holds the connection from port {local_port}")


def _one_connection_per_worker(
    gw: LiveGateway, door_port: int, make: Callable[[], tuple[Any, int]]
) -> dict[int, Any]:
    """A connection (``make()``, returning (connection, local port)) to each worker."""
    pids = {w.pid for w in psutil.Process(gw.proc.pid).children()}
    held: dict[int, Any] = {}
    for _ in range(400):
        conn, port = make()
        pid = _worker_of(gw, port, door_port)
        if pid in held:
            conn.close()
        else:
            held[pid] = conn
        if set(held) == pids:
            return held
    raise AssertionError(f"could not reach every worker: {sorted(held)} of {sorted(pids)}")


class Http:
    """One keep-alive HTTP connection to each worker."""

    def __init__(self, gw: LiveGateway) -> None:
        self.gw = gw
        self.conns = self._connect()

    def _connect(self) -> dict[int, http.client.HTTPConnection]:
        def make() -> tuple[http.client.HTTPConnection, int]:
            conn = http.client.HTTPConnection(
                self.gw.config.host, self.gw.config.gateway_port, timeout=15
            )
            conn.connect()
            assert conn.sock is not None
            return conn, conn.sock.getsockname()[1]

        return _one_connection_per_worker(self.gw, self.gw.config.gateway_port, make)

    def post_everywhere(self, token: str, seq: int) -> dict[int, tuple[int, str]]:
        """POST one event through every worker: {pid: (status, reason)}."""
        body = json.dumps(
            {"ts": "2026-11-27T05:30:00Z", "seq": seq, "readings": {"temperature": 20.0}}
        )
        answers = {}
        for pid, conn in self.conns.items():
            answers[pid] = post_event(conn, token, body)
        return answers


class Legacy:
    """One FBK1 connection to each worker."""

    def __init__(self, gw: LiveGateway) -> None:
        def make() -> tuple[socket.socket, int]:
            sock = socket.create_connection((gw.config.host, gw.config.legacy_port), timeout=15)
            return sock, sock.getsockname()[1]

        self.conns: dict[int, socket.socket] = _one_connection_per_worker(
            gw, gw.config.legacy_port, make
        )
        self.files = {pid: s.makefile("rb") for pid, s in self.conns.items()}

    def send_everywhere(self, device: str, key: str, seq: int) -> dict[int, str]:
        answers = {}
        for n, (pid, sock) in enumerate(self.conns.items()):
            ms = int(time.time() * 1000) + n  # another frame per worker: no replay refusal
            sock.sendall(fbk1.encode_frame(device, base64.b64decode(key), ms, seq, temperature=1.0))
            answers[pid] = self.files[pid].readline().decode().strip()
        return answers


def _all(answers: dict[int, tuple[int, str]], status: int) -> bool:
    return all(code == status for code, _ in answers.values())


def test_every_worker_answers_a_registry_command_at_once(fleet_gateway: LiveGateway):
    gw = fleet_gateway
    registry = gw.registry
    doors = Http(gw)
    legacy = Legacy(gw)
    assert len(doors.conns) == len(legacy.conns) == 2
    seq = 0
    for n in range(LOOP):
        device = f"ryw-{n}"
        seq += 1
        # 1. provisioned: accepted by every worker from the first request
        if n % 4 == 0:  # the CLI, a separate process, as an operator would
            done = run_cli(
                gw.env, "devices", "provision", device, "--building", "b-1",
                "--type", "environment", "--json",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            key = json.loads(done.stdout)["key"]
        else:
            key = registry.provision(device, building="b-1", device_type="environment").key
        answers = doors.post_everywhere(sas_token(device, key), seq)
        assert _all(answers, 202), f"{device} just provisioned: {answers}"

        # 2. disabled: refused by every worker the moment disable returns
        if n % 4 == 1:
            done = run_cli(gw.env, "devices", "disable", device)
            assert done.returncode == 0, done.stderr
        else:
            registry.disable(device)
        answers = doors.post_everywhere(sas_token(device, key, ttl_s=600), seq)
        assert set(answers.values()) == {(403, "disabled")}, f"{device} disabled: {answers}"

        # 3. enabled again: accepted at once
        registry.enable(device)
        assert _all(doors.post_everywhere(sas_token(device, key, ttl_s=601), seq), 202)

        # 4. key rotated: the old key refused, the new one accepted, both at once
        new_key = registry.rotate_key(device).key
        old = doors.post_everywhere(sas_token(device, key, ttl_s=602), seq)
        assert set(old.values()) == {(401, "bad_signature")}, f"{device} old key: {old}"
        assert _all(doors.post_everywhere(sas_token(device, new_key), seq), 202)

        # 5. de-provisioned: refused at once
        registry.deprovision(device)
        gone = doors.post_everywhere(sas_token(device, new_key, ttl_s=603), seq)
        assert set(gone.values()) == {(403, "deprovisioned")}, f"{device} gone: {gone}"

    # the legacy door, the same promise
    for n in range(LOOP // 2):
        device = f"ryw-legacy-{n}"
        key = registry.provision(
            device, building="b-1", device_type="environment", protocol="fbk1"
        ).key
        seq += 1
        assert set(legacy.send_everywhere(device, key, seq).values()) == {f"OK {seq}"}
        registry.disable(device)
        seq += 1
        refused = legacy.send_everywhere(device, key, seq)
        assert set(refused.values()) == {"ERR 403 disabled"}, refused

    # every worker read the registry by change: the 100,000 devices were loaded once
    metrics = gw.metrics()
    assert "gateway_registry_resyncs_total 0.0" in metrics
    held = FLEET + 1 + LOOP + LOOP // 2  # the fleet, dev-1, the loop's devices
    assert f"gateway_registry_devices {held:.1f}" in metrics


def test_a_worker_that_cannot_apply_a_revocation_is_named(kafka_config: Config):
    """A stopped worker (SIGSTOP) cannot apply: disable commits, then fails naming it."""
    with live_gateway(
        kafka_config,
        WORKBENCH_GATEWAY_WORKERS="2",
        WORKBENCH_REGISTRY_POLL="60",
        WORKBENCH_REGISTRY_APPLY_TIMEOUT="1",
    ) as gw:
        wait_until(lambda: gw.registry_version() is not None, 20)
        # the doors are the processes with a view file (the gateway's parent has other
        # children too, such as the legacy door's shared replay memory)
        wait_until(lambda: len(live_views(gw.config)) == 2, 20)
        workers = [psutil.Process(view.pid) for view in live_views(gw.config)]
        stuck = workers[0]
        stuck.suspend()
        try:
            done = run_cli(gw.env, "devices", "disable", "dev-1")
        finally:
            stuck.resume()
        assert done.returncode == 1, (done.stderr, live_views(gw.config))
        assert f"(pid {stuck.pid})" in done.stderr
        assert "disable of dev-1 is committed" in done.stderr
        assert workers[1].pid != stuck.pid and f"(pid {workers[1].pid})" not in done.stderr
        # run again once the worker is back: it waits for it and succeeds
        again = run_cli(gw.env, "devices", "disable", "dev-1")
        assert again.returncode == 0, again.stderr
