"""MQTT packets as the gateway's MQTT door reads and writes them (3.1.1 and 5).

Framing (fixed header, remaining length, the size cap) is read here, so that an
oversized packet is refused before its body is read. MQTT 5 packets are parsed and
written by ``mqtt5`` (a strict sans-I/O codec in Rust, by aiomqtt's maintainer); MQTT
3.1.1, which ``mqtt5`` does not speak, has no properties and the door needs only the
packets a device sends (CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT)
and the server's short answers, written out below.

>>> raw = bytes([0x10, 16]) + b"\\x00\\x04MQTT\\x04\\xc2\\x00\\x3c\\x00\\x01d\\x00\\x01u\\x00\\x01p"
>>> decode_connect(raw)
Connect(version=4, client_id='d', username='u', password=b'p', keep_alive=60, clean=True, \
will=False)
>>> connack(4, ConnAck.NOT_AUTHORIZED)
b' \\x02\\x00\\x05'
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import struct

import mqtt5

__all__ = [
    "ConnAck",
    "Connect",
    "Disconnect",
    "Other",
    "Packet",
    "PacketError",
    "PingReq",
    "PubAck",
    "Publish",
    "Subscribe",
    "Unsubscribe",
    "connack",
    "decode",
    "decode_connect",
    "disconnect",
    "frame",
    "pingresp",
    "puback",
    "read_packet",
    "string",
    "suback",
    "unsuback",
]

CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 1, 3, 8, 10, 12, 14


class PacketError(Exception):
    """Bytes that are no acceptable MQTT packet: ``reason`` for the metrics, ``code`` the
    MQTT 5 reason code a DISCONNECT (or CONNACK) carries."""

    def __init__(self, reason: str, code: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.code = code
        self.detail = detail


def _malformed(detail: str) -> PacketError:
    return PacketError("malformed_packet", 0x81, detail)


class ConnAck(enum.IntEnum):
    """CONNACK reason codes (MQTT 5 values; :func:`connack` maps them for 3.1.1)."""

    SUCCESS = 0x00
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_ID_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89


# 3.1.1's six CONNACK return codes (section 3.2.2.3)
_CONNACK_311 = {
    ConnAck.SUCCESS: 0,
    ConnAck.UNSUPPORTED_PROTOCOL_VERSION: 1,
    ConnAck.CLIENT_ID_NOT_VALID: 2,
    ConnAck.SERVER_UNAVAILABLE: 3,
    ConnAck.SERVER_BUSY: 3,
    ConnAck.BAD_USER_NAME_OR_PASSWORD: 4,
    ConnAck.NOT_AUTHORIZED: 5,
}


@dataclasses.dataclass(frozen=True)
class Connect:
    version: int  # 4 (3.1.1) or 5
    client_id: str
    username: str | None
    password: bytes | None
    keep_alive: int
    clean: bool
    will: bool


@dataclasses.dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int | None
    retain: bool
    topic_alias: int | None = None


@dataclasses.dataclass(frozen=True)
class Subscribe:
    packet_id: int
    filters: list[str]


@dataclasses.dataclass(frozen=True)
class Unsubscribe:
    packet_id: int
    filters: list[str]


@dataclasses.dataclass(frozen=True)
class PingReq:
    pass


@dataclasses.dataclass(frozen=True)
class Disconnect:
    pass


@dataclasses.dataclass(frozen=True)
class PubAck:
    """A device acknowledging a publish (the door never sends one: it delivers nothing)."""

    packet_id: int


@dataclasses.dataclass(frozen=True)
class Other:
    """A packet a device may not send to this door (a second CONNECT, QoS 2 flow, AUTH…)."""

    kind: int


Packet = Publish | Subscribe | Unsubscribe | PingReq | Disconnect | PubAck | Other
"""What a device may send after its CONNECT (a second CONNECT is :class:`Other`)."""


async def read_packet(reader: asyncio.StreamReader, *, max_size: int, first: bytes) -> bytes:
    """The whole packet whose first byte is ``first`` (already read), remaining length and
    body read from ``reader``; :class:`PacketError` when it is larger than ``max_size``
    bytes (nothing more is read then) or its length is malformed."""
    length = 0
    header = bytearray(first)
    for shift in (0, 7, 14, 21):
        byte = (await reader.readexactly(1))[0]
        header.append(byte)
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    else:
        raise _malformed("the remaining length is longer than 4 bytes")
    if len(header) + length > max_size:
        raise PacketError(
            "packet_too_large",
            0x95,
            f"a packet of {len(header) + length} bytes; at most {max_size} are read "
            "(WORKBENCH_MQTT_MAX_PACKET)",
        )
    return bytes(header) + await reader.readexactly(length)


def _header_length(raw: bytes) -> int:
    i = 1
    while raw[i] & 0x80:
        i += 1
    return i + 1


class _Reader:
    """A cursor over one 3.1.1 packet's variable header and payload."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def left(self) -> int:
        return len(self.data) - self.at

    def u8(self) -> int:
        if self.left() < 1:
            raise _malformed("the packet ends early")
        self.at += 1
        return self.data[self.at - 1]

    def u16(self) -> int:
        if self.left() < 2:
            raise _malformed("the packet ends early")
        (value,) = struct.unpack_from("!H", self.data, self.at)
        self.at += 2
        return int(value)

    def binary(self) -> bytes:
        n = self.u16()
        if self.left() < n:
            raise _malformed("a string runs past the end of the packet")
        self.at += n
        return self.data[self.at - n : self.at]

    def text(self) -> str:
        raw = self.binary()
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("a string is not UTF-8") from None
        if "\x00" in value:
            raise _malformed("a string holds U+0000")
        return value


def decode_connect(raw: bytes) -> Connect:
    """The CONNECT packet ``raw`` (a whole packet); raise :class:`PacketError` when it is
    none, or of a protocol level other than 4 (3.1.1) and 5."""
    if raw[0] >> 4 != CONNECT:
        raise PacketError(
            "protocol_error", 0x82, f"the first packet must be CONNECT, not type {raw[0] >> 4}"
        )
    body = _Reader(raw[_header_length(raw) :])
    name = body.binary()
    level = body.u8()
    if name not in (b"MQTT", b"MQIsdp"):
        raise _malformed(f"protocol name {name[:16]!r} is not MQTT")
    if level == 5 and name == b"MQTT":
        try:
            packet, _ = mqtt5.read(memoryview(raw))
        except (ValueError, IndexError) as exc:
            raise _malformed(f"MQTT 5 CONNECT: {exc}") from None
        assert isinstance(packet, mqtt5.ConnectPacket)
        return Connect(
            5,
            packet.client_id,
            packet.username,
            packet.password,
            packet.keep_alive,
            packet.clean_start,
            packet.will is not None,
        )
    if level != 4 or name != b"MQTT":
        raise PacketError(
            "unsupported_protocol_version",
            0x84,
            f"protocol level {level} ({name.decode(errors='replace')}); "
            "this door speaks MQTT 3.1.1 (4) and 5",
        )
    flags = body.u8()
    if flags & 0x01:
        raise _malformed("the reserved CONNECT flag is set")
    keep_alive = body.u16()
    client_id = body.text()
    will = bool(flags & 0x04)
    if will:
        body.text()
        body.binary()
    username = body.text() if flags & 0x80 else None
    password = body.binary() if flags & 0x40 else None
    if body.left():
        raise _malformed("bytes after the CONNECT payload")
    return Connect(4, client_id, username, password, keep_alive, bool(flags & 0x02), will)


def decode(raw: bytes, version: int) -> Packet:
    """A packet after CONNECT, on a connection of protocol ``version`` (4 or 5)."""
    kind = raw[0] >> 4
    if version == 5:
        return _decode5(raw, kind)
    flags = raw[0] & 0x0F
    body = _Reader(raw[_header_length(raw) :])
    if kind == PUBLISH:
        qos = (flags >> 1) & 0x03
        if qos == 3:
            raise _malformed("PUBLISH with QoS 3")
        topic = body.text()
        packet_id = body.u16() if qos else None
        return Publish(topic, body.data[body.at :], qos, packet_id, bool(flags & 0x01))
    if kind in (SUBSCRIBE, UNSUBSCRIBE):
        if flags != 0x02:
            raise _malformed("SUBSCRIBE/UNSUBSCRIBE fixed header flags must be 0010")
        packet_id = body.u16()
        filters = []
        while body.left():
            filters.append(body.text())
            if kind == SUBSCRIBE:
                body.u8()
        if not filters:
            raise _malformed("a SUBSCRIBE/UNSUBSCRIBE names no topic filter")
        return (Subscribe if kind == SUBSCRIBE else Unsubscribe)(packet_id, filters)
    if kind == PINGREQ:
        return PingReq()
    if kind == DISCONNECT:
        return Disconnect()
    if kind == 4:
        return PubAck(body.u16())
    return Other(kind)


def _decode5(raw: bytes, kind: int) -> Packet:
    if kind not in (PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT, 4):
        return Other(kind)
    try:
        packet, _ = mqtt5.read(memoryview(raw))
    except (ValueError, IndexError) as exc:
        raise _malformed(str(exc)) from None
    if isinstance(packet, mqtt5.PublishPacket):
        return Publish(
            packet.topic,
            packet.payload,
            int(packet.qos),
            packet.packet_id,
            packet.retain,
            packet.topic_alias,
        )
    if isinstance(packet, mqtt5.SubscribePacket):
        return Subscribe(packet.packet_id, [f.pattern for f in packet.topic_filters])
    if isinstance(packet, mqtt5.UnsubscribePacket):
        return Unsubscribe(packet.packet_id, list(packet.patterns))
    if isinstance(packet, mqtt5.PingReqPacket):
        return PingReq()
    if isinstance(packet, mqtt5.PubAckPacket):
        return PubAck(packet.packet_id)
    return Disconnect()


def connack(
    version: int,
    code: ConnAck,
    *,
    reason: str | None = None,
    receive_max: int = 65535,
    max_packet: int | None = None,
) -> bytes:
    """A CONNACK; on 3.1.1 the reason code becomes the nearest of its six return codes."""
    if version != 5:
        return bytes([0x20, 0x02, 0x00, _CONNACK_311.get(code, 3)])
    return mqtt5.ConnAckPacket(
        reason_code=mqtt5.ConnAckReasonCode(int(code)),
        reason_str=reason,
        receive_max=receive_max,
        max_qos=mqtt5.QoS.AT_LEAST_ONCE,
        retain_available=False,
        max_packet_size=max_packet,
        wildcard_subscription_available=False,
        subscription_id_available=False,
        shared_subscription_available=False,
    ).write()


def puback(version: int, packet_id: int, code: int = 0, *, reason: str | None = None) -> bytes:
    """A PUBACK (3.1.1 has no reason code: only success is ever sent there)."""
    if version != 5:
        return struct.pack("!BBH", 0x40, 0x02, packet_id)
    return mqtt5.PubAckPacket(
        packet_id, reason_code=mqtt5.PubAckReasonCode(code), reason_str=reason
    ).write()


def suback(version: int, packet_id: int, codes: list[int]) -> bytes:
    """A SUBACK: per filter 0-2 (granted QoS) or a failure (0x80 on 3.1.1, the MQTT 5
    code on 5)."""
    if version != 5:
        payload = struct.pack("!H", packet_id) + bytes(c if c < 0x80 else 0x80 for c in codes)
        return frame(0x90, payload)
    return mqtt5.SubAckPacket(packet_id, [mqtt5.SubAckReasonCode(c) for c in codes]).write()


def unsuback(version: int, packet_id: int, count: int) -> bytes:
    if version != 5:
        return struct.pack("!BBH", 0xB0, 0x02, packet_id)
    return mqtt5.UnsubAckPacket(
        packet_id, [mqtt5.UnsubAckReasonCode.NO_SUBSCRIPTION_EXISTED] * count
    ).write()


def pingresp() -> bytes:
    return b"\xd0\x00"


def disconnect(version: int, code: int, *, reason: str | None = None) -> bytes:
    """The server's DISCONNECT on MQTT 5; nothing on 3.1.1, where the server just closes."""
    if version != 5:
        return b""
    return mqtt5.DisconnectPacket(
        reason_code=mqtt5.DisconnectReasonCode(code), reason_str=reason
    ).write()


def string(text: str) -> bytes:
    """An MQTT UTF-8 string: its length in two bytes, then the bytes."""
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def frame(first: int, payload: bytes) -> bytes:
    """A packet: the fixed header's first byte, the remaining length (MQTT's variable
    length integer), then ``payload``."""
    length = len(payload)
    encoded = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes([first]) + bytes(encoded) + payload
