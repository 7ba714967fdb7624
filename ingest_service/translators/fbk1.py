"""FBK1, the reference legacy line protocol (docs/gateway.md).

One ASCII line per reading::

    FBK1|<device_id>|<unix_ms>|<seq>|T=<deci-°C>|H=<per-mille>|L=<lux>|<sig>

``<sig>`` is the hex HMAC-SHA256 (device key bytes) of everything before the
last ``|``. T, H and L are each optional (at least one is required), in any
order: ``T=215`` is 21.5 °C, ``H=402`` is 40.2 %RH, ``L=310`` is 310 lux.
Answers: ``OK <seq>`` or ``ERR <code> <reason>``.

>>> frame = encode_frame("dev-1", b"k" * 32, 1_700_000_000_000, 7, temperature=21.5)
>>> frame[:33]
b'FBK1|dev-1|1700000000000|7|T=215|'
>>> TRANSLATOR.decode(frame.rstrip()).readings
{'temperature': 21.5}
"""

from __future__ import annotations

import asyncio
import binascii
import datetime as dt
import hashlib
import hmac
import re
from typing import Any

from ingest_service.translators.base import FrameError, LegacyFrame, Translator

__all__ = ["TRANSLATOR", "Fbk1", "encode_frame"]

_INT = re.compile(r"^-?\d{1,15}$")
_FIELDS = {"T": ("temperature", 10.0), "H": ("humidity", 10.0), "L": ("light", 1.0)}


class Fbk1(Translator):
    """The FBK1 line protocol."""

    name = "fbk1"
    first_byte = ord("F")
    max_frame_bytes = 512

    async def read_frame(self, reader: asyncio.StreamReader, first: bytes) -> bytes:
        """Read up to and including ``\\n``."""
        try:
            rest = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise FrameError(413, "line_too_long", fatal=True) from None
        frame = first + rest
        if len(frame) > self.max_frame_bytes:
            raise FrameError(413, "line_too_long")
        return frame

    def decode(self, frame: bytes) -> LegacyFrame:
        """Parse one FBK1 line."""
        try:
            line = frame.rstrip(b"\r\n").decode("ascii")
        except UnicodeDecodeError:
            raise FrameError(400, "not_ascii") from None
        signed, sep, sig_hex = line.rpartition("|")
        parts = signed.split("|")
        if not sep or len(parts) < 5 or parts[0] != "FBK1":
            raise FrameError(400, "malformed_frame")
        _, device_id, unix_ms, seq, *fields = parts
        if not device_id or not _INT.match(unix_ms) or not seq.isdigit() or len(seq) > 18:
            raise FrameError(400, "malformed_frame")
        try:
            signature = binascii.unhexlify(sig_hex)
        except (binascii.Error, ValueError):
            raise FrameError(400, "malformed_signature") from None
        readings: dict[str, Any] = {}
        for field in fields:
            key, eq, value = field.partition("=")
            if key not in _FIELDS or not eq or not _INT.match(value) or _FIELDS[key][0] in readings:
                raise FrameError(400, "malformed_reading")
            name, scale = _FIELDS[key]
            readings[name] = int(value) / scale
        try:
            ts = dt.datetime.fromtimestamp(int(unix_ms) / 1000, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise FrameError(422, "invalid_timestamp") from None
        return LegacyFrame(device_id, int(seq), ts, readings, signed.encode(), signature)


def encode_frame(
    device_id: str,
    key: bytes,
    unix_ms: int,
    seq: int,
    *,
    temperature: float | None = None,
    humidity: float | None = None,
    light: float | None = None,
) -> bytes:
    """One signed FBK1 line (with ``\\n``), for devices, the simulator and tests."""
    parts = ["FBK1", device_id, str(unix_ms), str(seq)]
    if temperature is not None:
        parts.append(f"T={round(temperature * 10)}")
    if humidity is not None:
        parts.append(f"H={round(humidity * 10)}")
    if light is not None:
        parts.append(f"L={round(light)}")
    signed = "|".join(parts)
    sig = hmac.new(key, signed.encode(), hashlib.sha256).hexdigest()
    return f"{signed}|{sig}\n".encode()


TRANSLATOR = Fbk1()
