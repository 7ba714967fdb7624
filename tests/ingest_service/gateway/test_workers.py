"""Several gateway workers on one port (SO_REUSEPORT): sharing, replacement, graceful drain.

Real processes, real sockets, the real broker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.ingest_service.gateway.conftest import LiveGateway, live_gateway, wait_until
from tests.ingest_service.gateway.test_http import consume
from workbench.config import Config


@pytest.fixture
def two_workers(kafka_config: Config) -> Iterator[LiveGateway]:
    with live_gateway(kafka_config, WORKBENCH_GATEWAY_WORKERS="2") as live:
        yield live


def _workers(gw: LiveGateway) -> list[psutil.Process]:
    return psutil.Process(gw.proc.pid).children()


def _health_pid(gw: LiveGateway) -> int:
    # a new connection each time, so the kernel picks a worker each time
    pid: int = httpx.get(f"{gw.url}/healthz", timeout=10).json()["pid"]
    return pid


def _listening_ports(proc: psutil.Process) -> set[int]:
    return {
        c.laddr.port for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN
    }


def _event(seq: int) -> dict[str, object]:
    return {"ts": "2026-11-27T05:30:00Z", "seq": seq, "readings": {"temperature": 20.0 + seq}}


def _accepted_total(gw: LiveGateway) -> float:
    m = re.search(r'^gateway_events_accepted_total\{channel="http"\} (\S+)$', gw.metrics(), re.M)
    assert m, "no accepted counter in /metrics"
    return float(m.group(1))


def test_two_workers_serve_both_ports_and_metrics_add_up(two_workers: LiveGateway):
    gw = two_workers
    workers = _workers(gw)
    assert len(workers) == 2
    ports = {gw.config.gateway_port, gw.config.legacy_port}
    for worker in workers:  # each worker has its own listening socket on both ports
        wait_until(lambda w=worker: ports <= _listening_ports(w), 20)
    seen = {_health_pid(gw) for _ in range(60)}
    assert seen == {w.pid for w in workers}

    n = 40
    for seq in range(n):
        r = httpx.post(  # new connection per request: spread over both workers
            f"{gw.url}/v1/telemetry",
            json=_event(seq),
            headers={"Authorization": gw.token("dev-1")},
            timeout=15,
        )
        assert r.status_code == 202, r.text
    assert _accepted_total(gw) == n  # whichever worker answers sums over both
    assert sorted(e["seq"] for e in consume(gw.config, n)) == list(range(n))


def test_a_second_gateway_on_the_same_ports_is_refused(two_workers: LiveGateway, tmp_path):
    import subprocess
    import sys

    env = {**two_workers.env, "WORKBENCH_HOME": str(tmp_path / "other")}
    done = subprocess.run(
        [sys.executable, "-m", "ingest_service", "gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert f"port {two_workers.config.host}:{two_workers.config.gateway_port}" in done.stderr
    assert "already in use" in done.stderr


def test_a_killed_worker_is_replaced_and_only_its_request_fails(two_workers: LiveGateway):
    gw = two_workers
    outcomes: list[int | str] = []
    running = threading.Event()
    running.set()

    def client() -> None:
        seq = 0
        while running.is_set():
            try:
                r = httpx.post(
                    f"{gw.url}/v1/telemetry",
                    json=_event(seq),
                    headers={"Authorization": gw.token("dev-1")},
                    timeout=15,
                )
                outcomes.append(r.status_code)
            except httpx.TransportError as exc:
                outcomes.append(type(exc).__name__)
            seq += 1

    thread = threading.Thread(target=client)
    thread.start()
    try:
        wait_until(lambda: len(outcomes) >= 20, 30)
        victim = _workers(gw)[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)

        def replaced() -> bool:
            pids = {w.pid for w in _workers(gw)}
            return len(pids) == 2 and victim.pid not in pids

        wait_until(replaced, 20)
        new_pid = ({w.pid for w in _workers(gw)} - {victim.pid}).pop()
        wait_until(lambda: _health_pid(gw) == new_pid, 30)  # the replacement serves
        after = len(outcomes)
        wait_until(lambda: len(outcomes) >= after + 20, 30)
    finally:
        running.clear()
        thread.join(30)
    failures = [o for o in outcomes if o != 202]
    assert len(failures) <= 1, failures  # at most the request the killed worker held
    ok = outcomes.count(202)
    # counters of the dead worker stay in the sum; the in-flight request may have counted
    assert ok <= _accepted_total(gw) <= ok + 1
    assert len(consume(gw.config, ok)) >= ok


def test_sigterm_drains_an_in_flight_batch(two_workers: LiveGateway):
    gw = two_workers
    workers = _workers(gw)
    body = json.dumps({"events": [_event(seq) for seq in range(200)]}).encode()
    head = (
        f"POST /v1/telemetry HTTP/1.1\r\nHost: {gw.config.host}\r\n"
        f"Authorization: {gw.token('dev-1')}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((gw.config.host, gw.config.gateway_port), timeout=30) as sock:
        sock.sendall(head + body[: len(body) // 2])  # the request is now being handled
        time.sleep(0.5)
        os.kill(gw.proc.pid, signal.SIGTERM)

        def refusing() -> bool:  # 1. both workers stopped accepting
            try:
                socket.create_connection((gw.config.host, gw.config.gateway_port), 1).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_until(refusing, 10)
        assert gw.proc.poll() is None  # 2. ... but the in-flight request is not dropped
        sock.sendall(body[len(body) // 2 :])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 202"), answer
    assert answer.endswith(b'{"accepted":200}')
    assert gw.proc.wait(30) == 0  # 3. + 4. flushed and exited
    for worker in workers:
        assert not worker.is_running()
    assert sorted(e["seq"] for e in consume(gw.config, 200)) == list(range(200))
