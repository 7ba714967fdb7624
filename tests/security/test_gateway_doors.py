"""Read timeouts and connection caps on both gateway doors (HTTP and legacy TCP).

Finding 8 of the security review: a client sending a partial request and stalling kept
its connection (and a slot) open indefinitely; nothing capped the connections per door.
Every test here uses real sockets against a real gateway process.
"""

from __future__ import annotations

import base64
import socket
import time

import pytest

from ingest_service.translators import fbk1
from tests.ingest_service.gateway.conftest import LiveGateway, wait_until
from tests.security.gateway_support import (
    OWN_REFUSALS,
    counted,
    gateway_fixture,
    is_problem,
    metrics,
    read_response,
    rejected,
)

pytestmark = pytest.mark.integration

_CLIENT_PATIENCE_S = 30.0  # far beyond the gateways' read timeout: only a hang reaches it


# A gateway that gives a started request or frame 1 s to arrive.
quick = gateway_fixture(
    "gateway-quick",
    devices={"legacy-1": {"protocol": "fbk1"}},
    WORKBENCH_GATEWAY_WORKERS="1",
    WORKBENCH_GATEWAY_READ_TIMEOUT="1",
)


# A gateway that serves at most 2 connections per door.
capped = gateway_fixture(
    "gateway-capped", WORKBENCH_GATEWAY_WORKERS="1", WORKBENCH_GATEWAY_MAX_CONNECTIONS="2"
)


def _connect(gw: LiveGateway, port: int) -> socket.socket:
    s = socket.create_connection((gw.config.host, port), timeout=_CLIENT_PATIENCE_S)
    return s


def _closed_by_server(s: socket.socket) -> bytes:
    """Everything the server still sends, up to its closing the connection."""
    out = b""
    try:
        while chunk := s.recv(4096):
            out += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server kept the stalled connection open (got {out!r})") from None
    return out


def test_http_partial_headers_are_cut_off(quick: LiveGateway):
    with _connect(quick, quick.config.gateway_port) as s:
        s.sendall(b"POST /v1/telemetry HTTP/1.1\r\nHost: gateway\r\nAuthoriz")
        _closed_by_server(s)
    with _connect(quick, quick.config.gateway_port) as s:  # a connection that sends nothing
        _closed_by_server(s)


def test_http_stalled_body_gets_408_and_is_counted(quick: LiveGateway):
    before = rejected(quick, "http", 408, "read_timeout")
    token = quick.token("dev-1").encode()
    with _connect(quick, quick.config.gateway_port) as s:
        s.sendall(
            b"POST /v1/telemetry HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b'Content-Length: 200\r\nAuthorization: %b\r\n\r\n{"ts": ' % token
        )
        answer = read_response(s)
        assert answer.status == 408 and is_problem(answer), answer
        assert answer.json()["reason"] == "read_timeout"
        _closed_by_server(s)
    assert rejected(quick, "http", 408, "read_timeout") == before + 1


@pytest.mark.parametrize(
    ("channel", "partial"),
    [("fbk1", b"FBK1|legacy-1|17000"), ("bin1", b"\xb1\x01\x00\x20dev")],
)
def test_legacy_partial_frame_is_cut_off_and_counted(
    quick: LiveGateway, channel: str, partial: bytes
):
    before = rejected(quick, channel, 408, "read_timeout")
    with _connect(quick, quick.config.legacy_port) as s:
        s.sendall(partial)
        assert _closed_by_server(s) == b"ERR 408 read_timeout\n"
    assert rejected(quick, channel, 408, "read_timeout") == before + 1


def test_an_idle_legacy_connection_is_not_a_stalled_frame(quick: LiveGateway):
    key = base64.b64decode(quick.keys["legacy-1"])
    with _connect(quick, quick.config.legacy_port) as s:
        time.sleep(2.5)  # longer than the read timeout, but no frame was started
        s.sendall(fbk1.encode_frame("legacy-1", key, int(time.time() * 1000), 1, light=5))
        assert s.makefile("rb").readline() == b"OK 1\n"


def _served_http(gw: LiveGateway) -> socket.socket:
    """A keep-alive connection the gateway has answered once (so it holds a slot)."""
    for _ in range(50):
        s = _connect(gw, gw.config.gateway_port)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        status = read_response(s).status
        if status == 200:
            return s
        if status == 503:
            OWN_REFUSALS[gw.url] += 1
        s.close()  # a slot still held by an earlier client's closing connection
        time.sleep(0.1)
    raise AssertionError("no HTTP slot became free")


def _served_legacy(gw: LiveGateway) -> socket.socket:
    for _ in range(50):
        s = _connect(gw, gw.config.legacy_port)
        s.sendall(b"FBK1|nobody\n")
        if s.makefile("rb").readline() == b"ERR 400 malformed_frame\n":
            return s
        s.close()
        time.sleep(0.1)
    raise AssertionError("no legacy slot became free")


def test_http_connections_beyond_the_cap_get_503_problem(capped: LiveGateway):
    before = rejected(capped, "http", 503, "too_many_connections")
    own_before = OWN_REFUSALS[capped.url]
    held = [_served_http(capped), _served_http(capped)]
    try:
        with _connect(capped, capped.config.gateway_port) as extra:
            answer = read_response(extra)  # answered before it even sends a request
            assert answer.status == 503 and is_problem(answer), answer
            assert answer.json()["reason"] == "too_many_connections"
            assert int(answer.headers["retry-after"]) >= 1
            _closed_by_server(extra)
    finally:
        for s in held:
            s.close()
    after = rejected(capped, "http", 503, "too_many_connections")
    # the one extra connection, plus any probe of ours that met the door still full
    assert after == before + 1 + (OWN_REFUSALS[capped.url] - own_before)
    _served_http(capped).close()  # the slots come back once the clients left


def test_legacy_connections_beyond_the_cap_get_err_503(capped: LiveGateway):
    before = rejected(capped, "legacy", 503, "too_many_connections")
    held = [_served_legacy(capped), _served_legacy(capped)]
    try:
        with _connect(capped, capped.config.legacy_port) as extra:
            assert _closed_by_server(extra) == b"ERR 503 too_many_connections\n"
        wait_until(
            lambda: counted(metrics(capped), "gateway_open_connections", door="legacy") == 2, 10
        )
    finally:
        for s in held:
            s.close()
    assert rejected(capped, "legacy", 503, "too_many_connections") == before + 1
    _served_legacy(capped).close()


def test_bytes_that_are_not_http_get_a_counted_400_problem(quick: LiveGateway):
    def unreadable() -> float:
        return counted(metrics(quick), "gateway_unreadable_requests_total", status="400")

    before = unreadable()
    with _connect(quick, quick.config.gateway_port) as s:
        s.sendall(b"HELLO GARBAGE\r\n\r\n")
        answer = read_response(s)
    assert answer.status == 400 and is_problem(answer), answer
    assert answer.json()["reason"] == "malformed_http"
    assert unreadable() == before + 1
