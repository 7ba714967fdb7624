"""The server side of thrift-sasl: SASL PLAIN negotiation, then length-framed Thrift messages.

Negotiation messages are ``status (1 byte) + length (4 bytes, big-endian) + payload``:
the client sends ``START`` with the mechanism name, then ``OK`` (or ``COMPLETE``)
with ``authzid NUL user NUL password``; the server answers ``COMPLETE`` or
``BAD``. After that every Thrift message travels as ``length + bytes`` (PLAIN
has no integrity or privacy layer). A NOSASL client starts directly with a
Thrift binary message (first byte ``0x80``), which is how the two are told apart.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
from collections.abc import Callable
from typing import NoReturn

from thrift.transport.TTransport import TTransportBase, TTransportException

__all__ = [
    "BAD",
    "COMPLETE",
    "ERROR",
    "OK",
    "START",
    "PlainCredentials",
    "SaslFailed",
    "SaslServerTransport",
    "SocketTransport",
    "is_nosasl",
]

START, OK, BAD, ERROR, COMPLETE = 1, 2, 3, 4, 5
_MAX_NEGOTIATION = 64 * 1024
_MAX_FRAME = 256 * 1024 * 1024


class SaslFailed(Exception):
    """The client's SASL negotiation failed (bad mechanism, malformed or refused login)."""


class PlainCredentials:
    """What a SASL PLAIN client sent."""

    def __init__(self, authzid: str, user: str, password: str) -> None:
        self.authzid = authzid
        self.user = user
        self.password = password


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise TTransportException(TTransportException.END_OF_FILE, "connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def is_nosasl(sock: socket.socket) -> bool:
    """Whether the client speaks Thrift without SASL (its first byte is a binary-protocol
    version byte, ``0x80``, where a SASL client sends ``START``)."""
    first = sock.recv(1, socket.MSG_PEEK)
    if not first:
        raise TTransportException(TTransportException.END_OF_FILE, "connection closed")
    return first[0] == 0x80


class SocketTransport(TTransportBase):  # type: ignore[misc]
    """Plain buffered Thrift over an accepted socket (NOSASL)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._rbuf = b""
        self._wbuf = io.BytesIO()

    def isOpen(self) -> bool:
        return True

    def read(self, sz: int) -> bytes:
        if not self._rbuf:
            data = self._sock.recv(max(sz, 65536))
            if not data:
                raise TTransportException(TTransportException.END_OF_FILE, "connection closed")
            self._rbuf = data
        out, self._rbuf = self._rbuf[:sz], self._rbuf[sz:]
        return out

    def write(self, buf: bytes) -> None:
        self._wbuf.write(buf)

    def flush(self) -> None:
        data = self._wbuf.getvalue()
        self._wbuf = io.BytesIO()
        self._sock.sendall(data)

    def close(self) -> None:
        self._sock.close()


class SaslServerTransport(SocketTransport):
    """Length-framed Thrift after a SASL PLAIN negotiation (see the module docstring)."""

    def negotiate(self, check: Callable[[PlainCredentials], str | None]) -> PlainCredentials:
        """Run the PLAIN handshake; ``check`` returns None to accept or the refusal text.

        Raises :class:`SaslFailed` after answering ``BAD`` to the client.
        """
        status, mechanism = self._recv_message()
        if status != START:
            self._fail(f"expected SASL START, got status {status}")
        if mechanism.decode("ascii", "replace").upper() != "PLAIN":
            self._fail(f"SASL mechanism {mechanism!r} is not supported; use PLAIN")
        status, response = self._recv_message()
        if status not in (OK, COMPLETE):
            self._fail(f"expected SASL OK with the PLAIN response, got status {status}")
        parts = response.split(b"\x00")
        if len(parts) != 3:
            self._fail("malformed SASL PLAIN response")
        try:
            creds = PlainCredentials(*(p.decode("utf-8") for p in parts))
        except UnicodeDecodeError:
            self._fail("SASL PLAIN credentials are not UTF-8")
        refusal = check(creds)
        if refusal is not None:
            self._fail(refusal)
        self._send_message(COMPLETE, b"")
        return creds

    def _fail(self, message: str) -> NoReturn:
        with contextlib.suppress(OSError):
            self._send_message(BAD, message.encode())
        raise SaslFailed(message)

    def _recv_message(self) -> tuple[int, bytes]:
        status, length = struct.unpack(">BI", _recv_exact(self._sock, 5))
        if length > _MAX_NEGOTIATION:
            raise SaslFailed(f"SASL message of {length} bytes is too long")
        return status, _recv_exact(self._sock, length) if length else b""

    def _send_message(self, status: int, payload: bytes) -> None:
        self._sock.sendall(struct.pack(">BI", status, len(payload)) + payload)

    def read(self, sz: int) -> bytes:
        if not self._rbuf:
            (length,) = struct.unpack(">I", _recv_exact(self._sock, 4))
            if length > _MAX_FRAME:
                raise TTransportException(
                    TTransportException.SIZE_LIMIT, f"frame of {length} bytes is too large"
                )
            self._rbuf = _recv_exact(self._sock, length)
        out, self._rbuf = self._rbuf[:sz], self._rbuf[sz:]
        return out

    def flush(self) -> None:
        data = self._wbuf.getvalue()
        self._wbuf = io.BytesIO()
        self._sock.sendall(struct.pack(">I", len(data)) + data)
