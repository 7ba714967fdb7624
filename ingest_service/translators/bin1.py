"""BIN1, a compact binary frame: proof that a protocol is one module.

Layout (big-endian)::

    0xB1 0x01                 magic and version
    u16  body length          at most 512
    body:
      u8   device id length, then the id (ASCII)
      u64  unix time in ms
      u64  seq
      u8   number of readings, then per reading:
           u8 code (1 temperature deci-°C, 2 humidity per-mille, 3 light lux,
                    4 smoke 0/1, 5 intrusion 0/1), i32 value
    32 bytes  HMAC-SHA256 (device key) of everything before it

Answers are the ASCII lines ``OK <seq>`` / ``ERR <code> <reason>``, as in FBK1.

>>> frame = encode_frame("dev-1", b"k" * 32, 1_700_000_000_000, 7, {"smoke": True})
>>> TRANSLATOR.decode(frame).readings
{'smoke': True}
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import struct
from collections.abc import Mapping
from typing import Any

from ingest_service.translators.base import FrameError, LegacyFrame, Translator

__all__ = ["TRANSLATOR", "Bin1", "encode_frame"]

_MAGIC = b"\xb1\x01"
_MAX_BODY = 512
_SIG = 32
_CODES: dict[int, tuple[str, float | None]] = {
    1: ("temperature", 10.0),
    2: ("humidity", 10.0),
    3: ("light", 1.0),
    4: ("smoke", None),
    5: ("intrusion", None),
}
_NAMES = {name: (code, scale) for code, (name, scale) in _CODES.items()}


class Bin1(Translator):
    """The BIN1 binary frame."""

    name = "bin1"
    first_byte = 0xB1
    max_frame_bytes = 4 + _MAX_BODY + _SIG

    async def read_frame(self, reader: asyncio.StreamReader, first: bytes) -> bytes:
        """Read the header, then exactly the announced length."""
        header = await reader.readexactly(3)
        if header[0:1] != _MAGIC[1:]:
            raise FrameError(400, "unknown_version", fatal=True)
        (length,) = struct.unpack(">H", header[1:])
        if length > _MAX_BODY:
            raise FrameError(413, "frame_too_long", fatal=True)
        rest = await reader.readexactly(length + _SIG)
        return first + header + rest

    def decode(self, frame: bytes) -> LegacyFrame:
        """Parse one BIN1 frame."""
        if len(frame) < 4 + _SIG or frame[:2] != _MAGIC:
            raise FrameError(400, "malformed_frame")
        (length,) = struct.unpack(">H", frame[2:4])
        body = frame[4:-_SIG]
        if len(body) != length:
            raise FrameError(400, "malformed_frame")
        try:
            n = body[0]
            device_id = body[1 : 1 + n].decode("ascii")
            unix_ms, seq, count = struct.unpack_from(">QQB", body, 1 + n)
            offset = 1 + n + 17
            readings: dict[str, Any] = {}
            for _ in range(count):
                code, value = struct.unpack_from(">Bi", body, offset)
                offset += 5
                name, scale = _CODES[code]
                if name in readings:
                    raise FrameError(400, "duplicate_reading")
                readings[name] = bool(value) if scale is None else value / scale
        except (IndexError, struct.error, UnicodeDecodeError, KeyError):
            raise FrameError(400, "malformed_frame") from None
        if offset != len(body) or not device_id or seq >= 2**63:
            raise FrameError(400, "malformed_frame")
        try:
            ts = dt.datetime.fromtimestamp(unix_ms / 1000, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise FrameError(422, "invalid_timestamp") from None
        return LegacyFrame(device_id, seq, ts, readings, frame[:-_SIG], frame[-_SIG:])


def encode_frame(
    device_id: str, key: bytes, unix_ms: int, seq: int, readings: Mapping[str, float | bool]
) -> bytes:
    """One signed BIN1 frame, for devices, the simulator and tests."""
    raw_id = device_id.encode("ascii")
    body = bytes([len(raw_id)]) + raw_id + struct.pack(">QQB", unix_ms, seq, len(readings))
    for name, value in readings.items():
        code, scale = _NAMES[name]
        body += struct.pack(">Bi", code, int(value) if scale is None else round(value * scale))
    signed = _MAGIC + struct.pack(">H", len(body)) + body
    return signed + hmac.new(key, signed, hashlib.sha256).digest()


TRANSLATOR = Bin1()
