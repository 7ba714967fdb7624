"""The MQTT door over real sockets: IoT Hub style auth, topic isolation, PUBACK only after
Kafka's ack, refusals with reason codes (counted), revocation of a connected device."""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mqtt5
import polars as pl
import pytest
from kafka import KafkaConsumer, TopicPartition

from ingest_service.processor.main import run as run_processor
from tests.conftest import fresh_topic
from tests.ingest_service.gateway.conftest import LiveGateway, live_gateway, post_event
from workbench.config import Config
from workbench.kafka import client_settings
from workbench.lake.tables import table_uri
from workbench.registry import sas_token

V5, V311 = 5, 4


@pytest.fixture(scope="module")
def mqtt_gateway(
    broker_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    """One gateway for the module (each test uses its own devices)."""
    config = fresh_topic(broker_config, tmp_path_factory.mktemp("mqtt"))
    with live_gateway(config) as live:
        yield live


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def _frame(first: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes([first]) + bytes(encoded) + body


class Client:
    """A synchronous MQTT client of one protocol version, packets written by hand (3.1.1)
    or by mqtt5 (5), so every reason code the door sends can be looked at."""

    def __init__(self, gw: LiveGateway, version: int) -> None:
        self.version = version
        self.sock = socket.create_connection((gw.config.host, gw.config.mqtt_port), timeout=20)

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def packet(self) -> bytes:
        """The next packet; b"" when the door closed the connection."""
        try:
            header = self._exact(1)
            length, shift = 0, 0
            while True:
                byte = self._exact(1)
                header += byte
                length |= (byte[0] & 0x7F) << shift
                shift += 7
                if not byte[0] & 0x80:
                    break
            return header + self._exact(length)
        except (EOFError, ConnectionResetError):
            return b""

    def connect(self, client_id: str, password: str | None, username: str | None) -> int:
        """CONNECT; the CONNACK's reason code (3.1.1: its return code)."""
        if self.version == V5:
            self.send(
                mqtt5.ConnectPacket(
                    client_id,
                    username=username,
                    password=None if password is None else password.encode(),
                    clean_start=True,
                    keep_alive=60,
                ).write()
            )
        else:
            flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password else 0)
            body = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x3c" + _string(client_id)
            if username is not None:
                body += _string(username)
            if password is not None:
                body += _string(password)
            self.send(_frame(0x10, body))
        answer = self.packet()
        assert answer[0] == 0x20, answer
        if self.version == V5:
            connack, _ = mqtt5.read(memoryview(answer))
            assert isinstance(connack, mqtt5.ConnAckPacket)
            return int(connack.reason_code)
        return answer[3]

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, packet_id: int = 1) -> None:
        if self.version == V5:
            self.send(
                mqtt5.PublishPacket(
                    topic,
                    payload,
                    qos=mqtt5.QoS(qos),
                    packet_id=packet_id if qos else None,
                ).write()
            )
        else:
            body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
            self.send(_frame(0x30 | (qos << 1), body))

    def subscribe(self, pattern: str, packet_id: int = 7) -> list[int]:
        """SUBSCRIBE one filter at QoS 1; the SUBACK's codes."""
        if self.version == V5:
            self.send(
                mqtt5.SubscribePacket(
                    packet_id, [mqtt5.TopicFilter(pattern, max_qos=mqtt5.QoS.AT_LEAST_ONCE)]
                ).write()
            )
        else:
            self.send(_frame(0x82, struct.pack("!H", packet_id) + _string(pattern) + b"\x01"))
        answer = self.packet()
        assert answer[0] == 0x90, answer
        if self.version == V5:
            suback, _ = mqtt5.read(memoryview(answer))
            assert isinstance(suback, mqtt5.SubAckPacket)
            return [int(c) for c in suback.reason_codes]
        return list(answer[4:])

    def puback(self) -> tuple[int, int]:
        """The next packet as a PUBACK: (packet id, reason code; 0 on 3.1.1)."""
        answer = self.packet()
        assert answer and answer[0] == 0x40, answer
        if self.version == V5:
            ack, _ = mqtt5.read(memoryview(answer))
            assert isinstance(ack, mqtt5.PubAckPacket)
            return ack.packet_id, int(ack.reason_code)
        return struct.unpack("!H", answer[2:4])[0], 0

    def disconnect_code(self) -> int | None:
        """The reason code of the DISCONNECT the door sends before it closes (None: closed
        without one, as on 3.1.1)."""
        answer = self.packet()
        if not answer:
            return None
        assert answer[0] == 0xE0, answer
        packet, _ = mqtt5.read(memoryview(answer))
        assert isinstance(packet, mqtt5.DisconnectPacket)
        assert self.packet() == b""  # then the connection is closed
        return int(packet.reason_code)


def _event(seq: int, **readings: float) -> bytes:
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return json.dumps(
        {"ts": ts, "seq": seq, "readings": readings or {"temperature": 21.5}}
    ).encode()


def _topic(device_id: str) -> str:
    return f"devices/{device_id}/messages/events/"


def _connected(gw: LiveGateway, device_id: str, version: int) -> Client:
    client = Client(gw, version)
    assert client.connect(device_id, gw.token(device_id), device_id) == 0
    return client


def _stored(config: Config, device_id: str, *, wait_for: int, timeout: float = 20.0) -> list[dict]:
    """The events of ``device_id`` on the topic: read until ``wait_for`` of them arrived or
    ``timeout`` passed (then what is there; a test expecting none waits a little)."""
    consumer = KafkaConsumer(**client_settings(config), auto_offset_reset="earliest")
    try:
        parts = [
            TopicPartition(config.topic, p) for p in consumer.partitions_for_topic(config.topic)
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        out: list[dict] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                for r in records:
                    if r.key == device_id.encode():
                        out.append(json.loads(r.value))
            caught_up = all(consumer.position(p) >= ends[p] for p in parts)
            if len(out) >= wait_for and caught_up:
                break
            if caught_up:
                ends = consumer.end_offsets(parts)
        return out
    finally:
        consumer.close()


def _rejected(gw: LiveGateway, status: int, reason: str) -> float:
    pattern = (
        rf'^gateway_rejected_total\{{channel="mqtt",reason="{reason}",status="{status}"\}} (\S+)$'
    )
    m = re.search(pattern, gw.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("version", [V5, V311])
def test_qos1_puback_means_stored_in_kafka(mqtt_gateway: LiveGateway, version: int):
    gw = mqtt_gateway
    device = f"mq-ok-{version}"
    gw.provision(device, room="2.01")
    gw.wait_for_registry()
    client = _connected(gw, device, version)
    try:
        client.publish(_topic(device), _event(1, temperature=20.5), packet_id=11)
        assert client.puback() == (11, 0)
        # QoS 0 and IoT Hub's property bag after the topic are accepted too
        client.publish(_topic(device) + "%24.ct=application%2Fjson", _event(2), qos=0)
        client.publish(_topic(device), _event(3), packet_id=12)
        assert client.puback() == (12, 0)
    finally:
        client.close()
    events = sorted(_stored(gw.config, device, wait_for=3), key=lambda e: e["seq"])
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[0]["readings"] == {"temperature": 20.5}
    assert events[0]["building_id"] == "b-1" and events[0]["room"] == "2.01"
    assert {e["protocol"] for e in events} == {"mqtt"}  # the door it came through


def test_the_lake_says_which_door_an_event_came_through(mqtt_gateway: LiveGateway, tmp_path: Path):
    """One device, one event per door: the stored rows say ``mqtt`` and ``http``."""
    gw = mqtt_gateway
    device = "mq-door"
    gw.provision(device)
    gw.wait_for_registry()
    client = _connected(gw, device, V5)
    try:
        client.publish(_topic(device), _event(1), packet_id=1)
        assert client.puback() == (1, 0)
    finally:
        client.close()
    conn = http.client.HTTPConnection(gw.config.host, gw.config.gateway_port, timeout=20)
    try:
        assert post_event(conn, gw.token(device), _event(2).decode()) == (202, "")
    finally:
        conn.close()
    stop = threading.Event()
    processor = threading.Thread(
        target=run_processor,
        args=(gw.config,),
        kwargs={"stop": stop, "heartbeat": tmp_path / "beat.json", "maintain": False},
        daemon=True,
    )
    processor.start()
    rows: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 90
        while len(rows) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                telemetry = pl.read_delta(table_uri(gw.config, "telemetry"))
            except Exception:  # the processor has not created the table yet
                continue
            mine = telemetry.filter(pl.col("device_id") == device)
            rows = dict(zip(mine["seq"], mine["protocol"], strict=True))
    finally:
        stop.set()
        processor.join(60)
    assert rows == {1: "mqtt", 2: "http"}


@pytest.mark.parametrize("version", [V5, V311])
def test_connect_is_refused_without_the_device_credentials(mqtt_gateway: LiveGateway, version: int):
    gw = mqtt_gateway
    device, other = f"mq-auth-{version}", f"mq-auth-other-{version}"
    gw.provision(device)
    gw.provision(other)
    gw.wait_for_registry()
    bad_user_pw = 0x86 if version == V5 else 4
    not_authorized = 0x87 if version == V5 else 5
    client_id_bad = 0x85 if version == V5 else 2
    good = gw.token(device)
    forged = sas_token(device, gw.keys[other])  # signed with another key
    expired = sas_token(device, gw.keys[device], expiry=int(time.time()) - 60)
    hub_user = f"hub.example.net/{device}/?api-version=2021-04-12"
    cases = [
        (device, good, hub_user, 0),  # IoT Hub's user name form
        (device, forged, device, bad_user_pw),  # bad_signature
        (device, expired, device, bad_user_pw),  # expired
        (device, None, device, bad_user_pw),  # missing_token
        (device, gw.token(other), device, client_id_bad),  # another device's token
        (device, good, "someone-else", bad_user_pw),  # bad_username
        ("mq-nobody", "SharedAccessSignature sr=mq-nobody&se=1&sig=x", "mq-nobody", bad_user_pw),
    ]
    before = {r: _rejected(gw, 401, r) for r in ("bad_signature", "expired", "missing_token")}
    for client_id, password, username, expected in cases:
        client = Client(gw, version)
        try:
            assert client.connect(client_id, password, username) == expected, (
                client_id,
                password,
                username,
            )
            if expected:
                assert client.packet() == b""  # refused: closed
        finally:
            client.close()
    gw.registry.disable(device)
    client = Client(gw, version)
    try:
        assert client.connect(device, good, device) == not_authorized
    finally:
        client.close()
    for reason, count in before.items():
        assert _rejected(gw, 401, reason) == count + 1, reason
    assert _rejected(gw, 403, "device_mismatch") >= 1


def test_topic_isolation_v5_reason_codes(mqtt_gateway: LiveGateway):
    gw = mqtt_gateway
    gw.provision("mq-iso-a")
    gw.provision("mq-iso-b")
    gw.wait_for_registry()
    before = _rejected(gw, 403, "topic_not_authorized")
    client = _connected(gw, "mq-iso-a", V5)
    try:
        client.publish(_topic("mq-iso-b"), _event(1), packet_id=3)
        assert client.puback() == (3, 0x87)  # not authorized, nothing stored
        assert client.subscribe("#") == [0x87]
        assert client.subscribe("devices/mq-iso-b/messages/devicebound/#") == [0x87]
        assert client.subscribe("devices/mq-iso-a/messages/devicebound/#") == [1]
        client.publish(_topic("mq-iso-a"), b'{"seq": 1}', packet_id=4)  # invalid event
        assert client.puback() == (4, 0x99)
        client.publish(_topic("mq-iso-a"), b"not json", packet_id=5)
        assert client.puback() == (5, 0x99)
        client.publish(_topic("mq-iso-a"), _event(9), packet_id=6)  # still served
        assert client.puback() == (6, 0)
        client.publish(_topic("mq-iso-b"), _event(2), qos=0)  # QoS 0: no PUBACK to carry it
        assert client.disconnect_code() == 0x87
    finally:
        client.close()
    assert _rejected(gw, 403, "topic_not_authorized") == before + 2
    assert _rejected(gw, 403, "subscribe_not_authorized") >= 2
    assert _rejected(gw, 422, "invalid") >= 1
    assert _stored(gw.config, "mq-iso-b", wait_for=0, timeout=3) == []
    stored = _stored(gw.config, "mq-iso-a", wait_for=3)
    assert [e["seq"] for e in stored if "rejected" not in e] == [9]
    # its two refused publishes, in its authenticated session, count against its
    # building (the topic refusals are of where it wrote, not of what: not noted)
    notes = [(e["status"], e["building_id"]) for e in stored if "rejected" in e]
    assert sorted(notes) == [(400, "b-1"), (422, "b-1")]


def test_topic_isolation_v311_closes_the_connection(mqtt_gateway: LiveGateway):
    gw = mqtt_gateway
    gw.provision("mq-iso-c")
    gw.provision("mq-iso-d")
    gw.wait_for_registry()
    client = _connected(gw, "mq-iso-c", V311)
    try:
        assert client.subscribe("#") == [0x80]  # 3.1.1's failure code
        client.publish(_topic("mq-iso-d"), _event(1), packet_id=3)
        assert client.packet() == b""  # no reason codes on 3.1.1: closed, no PUBACK
    finally:
        client.close()
    assert _stored(gw.config, "mq-iso-d", wait_for=0, timeout=3) == []


def test_bad_bytes_are_refused_counted_and_the_door_keeps_serving(
    mqtt_gateway: LiveGateway, tmp_path: Path
):
    gw = mqtt_gateway
    gw.provision("mq-bad")
    gw.wait_for_registry()
    counted = {
        (400, "protocol_error"): _rejected(gw, 400, "protocol_error"),
        (400, "malformed_packet"): _rejected(gw, 400, "malformed_packet"),
        (400, "unsupported_protocol_version"): _rejected(gw, 400, "unsupported_protocol_version"),
        (400, "packet_too_large"): _rejected(gw, 400, "packet_too_large"),
    }
    # garbage: not a CONNECT
    client = Client(gw, V5)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert client.packet() == b""
    client.close()
    # a CONNECT whose protocol name is not MQTT
    client = Client(gw, V5)
    client.send(_frame(0x10, b"\x00\x04ABCD\x04\x02\x00\x3c\x00\x01x"))
    assert client.packet() == b""
    client.close()
    # MQTT 3.1 (protocol level 3): CONNACK 1, unacceptable protocol version
    client = Client(gw, V311)
    client.send(_frame(0x10, b"\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01x"))
    assert client.packet() == b"\x20\x02\x00\x01"
    assert client.packet() == b""
    client.close()
    # an oversized packet before CONNECT: closed before its body is read
    client = Client(gw, V5)
    client.send(b"\x10\xff\xff\xff\x7f")
    assert client.packet() == b""
    client.close()
    # an oversized PUBLISH after a good CONNECT: DISCONNECT 0x95 packet too large
    client = _connected(gw, "mq-bad", V5)
    client.publish(_topic("mq-bad"), b"x" * (gw.config.mqtt_max_packet + 10))
    assert client.disconnect_code() == 0x95
    client.close()
    # QoS 2 is refused with 0x9B
    client = _connected(gw, "mq-bad", V5)
    client.publish(_topic("mq-bad"), _event(1), qos=2, packet_id=2)
    assert client.disconnect_code() == 0x9B
    client.close()
    for (status, reason), count in counted.items():
        assert _rejected(gw, status, reason) >= count + 1, reason
    assert _rejected(gw, 400, "malformed_packet") >= counted[(400, "malformed_packet")] + 1
    # and the door still serves
    client = _connected(gw, "mq-bad", V311)
    client.publish(_topic("mq-bad"), _event(5), packet_id=9)
    assert client.puback() == (9, 0)
    client.close()
    log = (gw.config.home / "gateway.log").read_text()
    assert "MQTT unsupported_protocol_version" in log and "MQTT packet_too_large" in log


@pytest.mark.parametrize("action", ["disable", "deprovision", "rotate_key"])
def test_revoked_device_is_disconnected_not_authorized(mqtt_gateway: LiveGateway, action: str):
    gw = mqtt_gateway
    device = f"mq-rev-{action}"
    gw.provision(device)
    gw.wait_for_registry()
    client = _connected(gw, device, V5)
    other = _connected(gw, "dev-1", V311)  # another device's session stays up
    try:
        client.publish(_topic(device), _event(1), packet_id=1)
        assert client.puback() == (1, 0)
        # returns once every gateway worker applied the change: the DISCONNECT is sent by then
        getattr(gw.registry, action)(device)
        assert client.disconnect_code() == 0x87
        other.publish(_topic("dev-1"), _event(1), packet_id=2)
        assert other.puback() == (2, 0)
    finally:
        client.close()
        other.close()
    reason = {"disable": "disabled", "deprovision": "deprovisioned", "rotate_key": "key_rotated"}
    assert _rejected(gw, 403, reason[action]) >= 1


def test_no_puback_until_kafka_acknowledged(kafka_config: Config):
    """A topic the broker does not have: the producer gets no ack, so the door sends no
    PUBACK but DISCONNECT 0x89 server busy (the client re-sends later), and counts it."""
    with live_gateway(
        kafka_config,
        WORKBENCH_TOPIC=f"{kafka_config.topic}-missing",
        WORKBENCH_GATEWAY_ACK_TIMEOUT="2",
    ) as gw:
        client = _connected(gw, "dev-1", V5)
        try:
            client.publish(_topic("dev-1"), _event(1), packet_id=5)
            assert client.disconnect_code() == 0x89  # and no PUBACK came before it
        finally:
            client.close()
        assert _rejected(gw, 503, "broker_unavailable") == 1
