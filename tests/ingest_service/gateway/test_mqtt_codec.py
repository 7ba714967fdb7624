"""The MQTT door's packet codec: pure logic, no sockets."""

from __future__ import annotations

import asyncio

import mqtt5
import pytest

from ingest_service.gateway import mqtt_codec as codec


def _read(data: bytes, max_size: int = 1024) -> bytes:
    async def go() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(data[1:])
        reader.feed_eof()
        return await codec.read_packet(reader, max_size=max_size, first=data[:1])

    return asyncio.run(go())


def test_a_v5_connect_is_read_by_mqtt5_and_a_v311_one_by_hand():
    v5 = mqtt5.ConnectPacket("d-1", username="u", password=b"tok", keep_alive=30).write()
    assert codec.decode_connect(_read(v5)) == codec.Connect(5, "d-1", "u", b"tok", 30, False, False)
    v311 = bytes([0x10, 21]) + b"\x00\x04MQTT\x04\xc2\x00\x1e\x00\x03d-1\x00\x01u\x00\x01p"
    assert codec.decode_connect(_read(v311)) == codec.Connect(4, "d-1", "u", b"p", 30, True, False)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x10\x0b\x00\x06MQIsdp\x03\x02\x00", "unsupported_protocol_version"),
        (b"\x10\x07\x00\x04MQTT\x06\x02", "unsupported_protocol_version"),
        (b"\x10\x07\x00\x04ABCD\x04\x02", "malformed_packet"),
        (b"\x30\x02\x00\x00", "protocol_error"),
        (b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00", "malformed_packet"),  # reserved flag
        (b"\x10\x05\x00\x04MQ", "malformed_packet"),  # ends early
    ],
)
def test_bad_connects_are_refused_with_a_reason(raw: bytes, reason: str):
    with pytest.raises(codec.PacketError) as caught:
        codec.decode_connect(raw)
    assert caught.value.reason == reason


def test_an_oversized_packet_is_refused_before_its_body_is_read():
    with pytest.raises(codec.PacketError) as caught:
        _read(b"\x30\xff\xff\x03", max_size=1024)
    assert (caught.value.reason, caught.value.code) == ("packet_too_large", 0x95)
    with pytest.raises(codec.PacketError) as caught:
        _read(b"\x30\xff\xff\xff\xff\x01")
    assert caught.value.reason == "malformed_packet"


def test_v311_publish_and_subscribe_decode():
    publish = b"\x32\x09\x00\x03a/b\x00\x07{}"
    packet = codec.decode(publish, 4)
    assert packet == codec.Publish("a/b", b"{}", 1, 7, False)
    subscribe = b"\x82\x06\x00\x05\x00\x01#\x01"
    assert codec.decode(subscribe, 4) == codec.Subscribe(5, ["#"])
    assert codec.decode(b"\xc0\x00", 4) == codec.PingReq()
    assert codec.decode(b"\x10\x00", 4) == codec.Other(1)  # a second CONNECT


def test_answers_in_both_versions():
    assert codec.puback(4, 258) == b"\x40\x02\x01\x02"
    ack, _ = mqtt5.read(memoryview(codec.puback(5, 9, 0x87, reason="no")))
    assert isinstance(ack, mqtt5.PubAckPacket) and int(ack.reason_code) == 0x87
    assert codec.suback(4, 1, [1, 0x87]) == b"\x90\x04\x00\x01\x01\x80"
    assert codec.connack(4, codec.ConnAck.CLIENT_ID_NOT_VALID) == b"\x20\x02\x00\x02"
    assert codec.disconnect(4, 0x87) == b""
