"""Replay protection on the legacy doors (FBK1, BIN1): a freshness window on ``ts`` and
refusal of exact replays inside it.

Finding 9 of the security review: legacy frames carry no expiry or nonce, so an exact
replay got ``OK`` (only the processor dead-lettered it, inside its dedup window), and a
frame dated 1970 got ``OK`` where the HTTP door refuses timestamps before 2000.
Real gateway, two worker processes (a replay must not slip through the other worker),
real sockets, the real broker.
"""

from __future__ import annotations

import base64
import socket
import time

import pytest

from ingest_service.translators import bin1, fbk1
from tests.ingest_service.gateway.conftest import LiveGateway
from tests.ingest_service.gateway.test_http import consume
from tests.security.gateway_support import gateway_fixture, rejected

pytestmark = pytest.mark.integration


gateway = gateway_fixture(
    "gateway-replay",
    devices={
        "fbk-1": {"protocol": "fbk1"},
        "bin-1": {"protocol": "bin1", "device_type": "smoke"},
        "fbk-2": {"protocol": "fbk1"},
    },
    WORKBENCH_GATEWAY_WORKERS="2",
    WORKBENCH_LEGACY_MAX_AGE="600",
)


def _answers(gw: LiveGateway, frames: list[bytes]) -> list[str]:
    with socket.create_connection((gw.config.host, gw.config.legacy_port), timeout=15) as s:
        f = s.makefile("rb")
        out = []
        for frame in frames:
            s.sendall(frame)
            out.append(f.readline().decode().strip())
        return out


def _key(gw: LiveGateway, device: str) -> bytes:
    return base64.b64decode(gw.keys[device])


def _now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.parametrize("protocol", ["fbk1", "bin1"])
def test_an_exact_replay_is_refused_on_any_connection_and_counted(
    gateway: LiveGateway, protocol: str
):
    if protocol == "fbk1":
        device = "fbk-1"
        frame = fbk1.encode_frame(device, _key(gateway, device), _now_ms(), 7, temperature=21.5)
    else:
        device = "bin-1"
        frame = bin1.encode_frame(device, _key(gateway, device), _now_ms(), 7, {"smoke": True})
    before = rejected(gateway, protocol, 409, "replay")
    assert _answers(gateway, [frame, frame]) == ["OK 7", "ERR 409 replay"]
    # fresh connections, which the kernel spreads over both workers
    for _ in range(8):
        assert _answers(gateway, [frame]) == ["ERR 409 replay"]
    assert rejected(gateway, protocol, 409, "replay") == before + 9


def test_only_the_accepted_frame_reaches_the_topic_and_new_frames_still_pass(
    gateway: LiveGateway,
):
    key = _key(gateway, "fbk-2")
    now = _now_ms()
    first = fbk1.encode_frame("fbk-2", key, now, 1, temperature=20.0)
    answers = _answers(
        gateway,
        [
            first,
            first,
            fbk1.encode_frame("fbk-2", key, now, 1, temperature=20.1),  # other content: signed anew
            fbk1.encode_frame("fbk-2", key, now + 1, 2, temperature=20.0),
            first.replace(first[-65:-1], first[-65:-1].upper()),  # the same MAC, spelt otherwise
        ],
    )
    assert answers == ["OK 1", "ERR 409 replay", "OK 1", "OK 2", "ERR 409 replay"]
    events = [e for e in consume(gateway.config, 100, timeout=5) if e["device_id"] == "fbk-2"]
    assert sorted((e["seq"], e["readings"]["temperature"]) for e in events) == [
        (1, 20.0),
        (1, 20.1),
        (2, 20.0),
    ]


def test_frame_timestamps_follow_the_http_rule_and_the_freshness_window(gateway: LiveGateway):
    key = _key(gateway, "fbk-1")
    now = _now_ms()
    before_stale = rejected(gateway, "fbk1", 422, "stale")
    before_invalid = rejected(gateway, "fbk1", 422, "invalid")

    def frame(unix_ms: int, seq: int) -> bytes:
        return fbk1.encode_frame("fbk-1", key, unix_ms, seq, humidity=40.0)

    answers = _answers(
        gateway,
        [
            frame(0, 101),  # 1970: the HTTP door refuses anything before 2000
            frame(946_684_799_000, 102),  # 1999-12-31T23:59:59Z
            frame(now - 700_000, 103),  # older than the 600 s window
            frame(now + 7_200_000, 104),  # two hours ahead (WORKBENCH_GATEWAY_MAX_FUTURE 3600)
            frame(now - 500_000, 105),  # late, but inside the window
        ],
    )
    assert answers == [
        "ERR 422 invalid",
        "ERR 422 invalid",
        "ERR 422 stale",
        "ERR 422 invalid",
        "OK 105",
    ]
    assert rejected(gateway, "fbk1", 422, "invalid") == before_invalid + 3
    assert rejected(gateway, "fbk1", 422, "stale") == before_stale + 1
    bin_key = _key(gateway, "bin-1")
    assert _answers(gateway, [bin1.encode_frame("bin-1", bin_key, 0, 9, {"smoke": False})]) == [
        "ERR 422 invalid"
    ]
