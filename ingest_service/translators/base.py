"""The translator plug-in interface of the legacy TCP adapter.

A translator turns one legacy protocol's frames into canonical readings. Adding
a protocol is one module, in any installed distribution, that defines
``TRANSLATOR = MyTranslator()``, and one entry point naming it in the
``workbench.translators`` group (``name = "module:TRANSLATOR"``, see
:mod:`workbench.plugins`); the translator has:

* ``name`` — the protocol name devices are provisioned with (``--protocol NAME``),
  also the entry point's name;
* ``first_byte`` — the first byte of every frame of the protocol; the adapter
  reads one byte and hands the connection to the translator that claims it,
  frame by frame (so it must differ between translators);
* :meth:`Translator.read_frame` — read the rest of one frame from the stream;
* :meth:`Translator.decode` — parse a frame into a :class:`LegacyFrame`,
  raising :class:`FrameError` when it is malformed;
* :meth:`Translator.ok` / :meth:`Translator.error` — the bytes sent back.

The adapter does everything else the same way for every protocol: it looks
up the device, checks ``HMAC-SHA256(device key, frame.signed) ==
frame.signature``, checks the device is provisioned for this protocol,
validates the readings like the HTTP gateway does, produces the canonical
event and only then answers :meth:`ok`.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import datetime as dt
from typing import Any, ClassVar

__all__ = ["FrameError", "LegacyFrame", "Translator"]


class FrameError(Exception):
    """A frame the translator cannot parse; ``code`` is HTTP-like (400, 413, ...)."""

    def __init__(self, code: int, reason: str, *, fatal: bool = False) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.fatal = fatal  # the stream is out of sync: close the connection after answering


@dataclasses.dataclass(frozen=True)
class LegacyFrame:
    """One decoded legacy frame."""

    device_id: str
    seq: int
    ts: dt.datetime
    readings: dict[str, Any]
    signed: bytes  # the bytes the signature covers
    signature: bytes  # raw HMAC-SHA256 digest as sent


class Translator(abc.ABC):
    """One legacy protocol."""

    name: ClassVar[str]
    first_byte: ClassVar[int]
    max_frame_bytes: ClassVar[int] = 1024

    @abc.abstractmethod
    async def read_frame(self, reader: asyncio.StreamReader, first: bytes) -> bytes:
        """The whole frame, ``first`` (its first byte, already read) included.

        Raises :class:`FrameError` (``fatal=True`` when the stream cannot be resynchronised)
        and ``asyncio.IncompleteReadError`` at end of stream.
        """

    @abc.abstractmethod
    def decode(self, frame: bytes) -> LegacyFrame:
        """Parse one frame; raise :class:`FrameError` when malformed."""

    def ok(self, seq: int) -> bytes:
        """The acknowledgement of an accepted frame."""
        return f"OK {seq}\n".encode()

    def error(self, code: int, reason: str) -> bytes:
        """The answer to a rejected frame."""
        return f"ERR {code} {reason}\n".encode()
