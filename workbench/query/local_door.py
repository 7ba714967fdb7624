"""The Flight door's same-host path: a result handed over in shared memory.

Over gRPC on loopback, a million rows of five columns took 2.4 times as long as reading
them straight from the lake, before any login or scope: every byte is copied into the
socket, out of it, and once more into the client's frame. When the notebook kernel and
the door are on one machine, the door instead writes the result once, as an Arrow IPC
stream, into an anonymous memory file (``memfd``) and passes the file's descriptor over
a Unix socket (``SCM_RIGHTS``). The client maps the file and reads the columns where
they lie.

It is the same door, not another one: the same credentials (password, admin secret, or
the hub's token of that very user), logins trusted for the same
:data:`~workbench.query.flight.LOGIN_CACHE_S`, the same sessions, scope, caps and
access log (:meth:`FlightDoor.run <workbench.query.flight.FlightDoor.run>`). The login
throttle counts by the connecting process's uid, which the kernel reports
(``SO_PEERCRED``) and cannot forge.

The socket lives in Linux's abstract namespace (``\\0workbench-query-<flight port>``):
no file, so a hub user's OS account needs no access to the workbench's folders. Any
local process may connect, as any may connect to the Flight port, and must log in.

The wire, both ways a 4-byte big-endian length and a JSON object: the request
``{"user", "password", "sql"}``; the answer ``{"ok": true, "bytes": N}`` with the
descriptor attached, or ``{"ok": false, "refused": true | false, "message"}`` (what
Flight would have said).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import socket
import struct
import threading
from typing import Any

import pyarrow as pa

from workbench.exceptions import AccessDenied, QueryFailed, QueryRefused, WorkbenchError
from workbench.query.flight import FlightDoor, flight_read

__all__ = ["LocalDoor", "LocalDoorUnavailable", "bulk_read", "local_read", "socket_name"]

logger = logging.getLogger(__name__)

# a request is credentials and one statement: far below this
_MAX_REQUEST = 1 << 20
# a client has this long to send its request
_REQUEST_TIMEOUT_S = 10.0
# connections served at once; one more is answered "busy" at once
_MAX_CONNECTIONS = 64
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class LocalDoorUnavailable(QueryFailed):
    """No door listens on this machine's socket (the door is elsewhere, or down)."""


def socket_name(flight_port: int) -> bytes:
    """The door's abstract socket address: one per Flight port, so two workbenches on
    one machine keep apart."""
    return f"\0workbench-query-{flight_port}".encode()


def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    body = json.dumps(message).encode()
    frame = struct.pack(">I", len(body)) + body
    if fds:
        socket.send_fds(sock, [frame], fds)
    else:
        sock.sendall(frame)


def _receive(sock: socket.socket, limit: int) -> tuple[dict[str, Any], list[int]]:
    """One framed JSON object, and the descriptors that came with its first bytes."""
    data, fds, _, _ = socket.recv_fds(sock, 65536, 1)
    try:
        while len(data) < 4:
            more = sock.recv(4 - len(data))
            if not more:
                raise ConnectionError("the peer closed the connection mid-message")
            data += more
        (size,) = struct.unpack(">I", data[:4])
        if size > limit:
            raise ValueError(f"a message of {size} bytes (at most {limit})")
        body = bytearray(data[4:])
        while len(body) < size:
            more = sock.recv(size - len(body))
            if not more:
                raise ConnectionError("the peer closed the connection mid-message")
            body += more
        message = json.loads(bytes(body))
        if not isinstance(message, dict):
            raise ValueError("the message is not a JSON object")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return message, list(fds)


def _to_memfd(table: pa.Table) -> tuple[int, int]:
    """``table`` as an Arrow IPC stream in a new memory file: (descriptor, size)."""
    fd = os.memfd_create("workbench-result", os.MFD_CLOEXEC)
    try:
        # pyarrow's file writer (one write per buffer, no Python copy) on the memfd
        with pa.OSFile(f"/proc/self/fd/{fd}", "wb") as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            size = sink.tell()
    except BaseException:
        os.close(fd)
        raise
    return fd, size


class LocalDoor:
    """Serves ``door``'s statements on this machine's abstract Unix socket for
    ``port`` (the Flight port)."""

    def __init__(self, door: FlightDoor, port: int) -> None:
        self.door = door
        self.name = socket_name(port)
        self._sock: socket.socket | None = None
        self._slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        self._stopping = threading.Event()

    def start(self) -> None:
        """Listen (raises OSError when the name is taken) and serve from a thread."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.name)
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        threading.Thread(target=self._accept, name="local-door", daemon=True).start()

    def stop(self) -> None:
        """Stop accepting; statements being served finish."""
        self._stopping.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed by stop()
            if not self._slots.acquire(blocking=False):
                with conn:
                    _send(conn, _refusal(False, "the door serves too many reads; try again"))
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(_REQUEST_TIMEOUT_S)
                pid, uid, _ = struct.unpack(
                    "3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                )
                try:
                    request, fds = _receive(conn, _MAX_REQUEST)
                except (OSError, ValueError) as exc:
                    logger.info("local door: a bad request from pid %d: %s", pid, exc)
                    return
                for fd in fds:  # a request carries none
                    os.close(fd)
                conn.settimeout(None)
                self._answer(conn, request, f"uid:{uid}")
        except OSError as exc:  # the client went away
            logger.debug("local door: %s", exc)
        finally:
            self._slots.release()

    def _answer(self, conn: socket.socket, request: dict[str, Any], address: str) -> None:
        user, password, sql = (request.get(k) for k in ("user", "password", "sql"))
        if not all(isinstance(v, str) for v in (user, password, sql)):
            _send(conn, _refusal(False, "send user, password and sql, each a string"))
            return
        assert isinstance(user, str) and isinstance(password, str) and isinstance(sql, str)
        try:
            table = self.door.run(user, password, address, sql, polars_types=True)
        except (QueryRefused, AccessDenied) as exc:  # LoginRefused among them
            _send(conn, _refusal(True, str(exc)))
            return
        except WorkbenchError as exc:
            _send(conn, _refusal(False, str(exc)))
            return
        except Exception:
            logger.exception("local door: the statement failed unexpectedly")
            _send(conn, _refusal(False, "internal error: see the HiveServer2 log"))
            return
        try:
            fd, size = _to_memfd(table)
        except (OSError, pa.ArrowException) as exc:  # out of memory for the copy, say
            logger.exception("local door: cannot hand over a result")
            _send(conn, _refusal(False, f"cannot hand over the result here ({exc}); try gRPC"))
            return
        try:
            _send(conn, {"ok": True, "bytes": size}, [fd])
        finally:
            os.close(fd)


def _refusal(refused: bool, message: str) -> dict[str, Any]:
    return {"ok": False, "refused": refused, "message": message}


def local_read(
    hiveql: str, *, port: int, user: str, password: str, timeout_s: float = 600.0
) -> pa.Table:
    """The result of ``hiveql`` from the door on this machine (Flight port ``port``), as
    ``user``, mapped from shared memory.

    The rows are :func:`flight_read`'s; a result polars read from the lake keeps polars'
    own Arrow types (``string_view`` for strings, where Flight sends ``string``), so
    ``polars.from_arrow`` copies nothing. Raises :class:`LocalDoorUnavailable` when no
    door listens here, and :class:`QueryRefused` or :class:`QueryFailed` as
    :func:`flight_read` does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(socket_name(port))
        except (FileNotFoundError, ConnectionRefusedError):
            raise LocalDoorUnavailable(f"no door on this machine for port {port}") from None
        _send(sock, {"user": user, "password": password, "sql": hiveql})
        try:
            answer, fds = _receive(sock, _MAX_REQUEST)
        except (OSError, ValueError) as exc:
            raise QueryFailed(f"the door's answer was cut short ({exc})") from None
    if not answer.get("ok"):
        for fd in fds:
            os.close(fd)
        message = str(answer.get("message"))
        if answer.get("refused"):
            raise QueryRefused(f"the Flight door refused: {message}")
        raise QueryFailed(f"the Flight door: {message}")
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise QueryFailed("the door's answer came without its result")
    (fd,) = fds
    try:
        mapped = mmap.mmap(fd, int(answer["bytes"]), prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    # the table's buffers are slices of the mapping, which they keep alive
    return pa.ipc.open_stream(pa.py_buffer(mapped)).read_all()


def bulk_read(
    hiveql: str, *, host: str, port: int, user: str, password: str, timeout_s: float = 600.0
) -> pa.Table:
    """The result of ``hiveql`` through the Flight door at ``host:port``: in shared memory
    when the door is on this machine, over gRPC otherwise."""
    if host in _LOOPBACK:
        with contextlib.suppress(LocalDoorUnavailable):
            return local_read(hiveql, port=port, user=user, password=password, timeout_s=timeout_s)
    return flight_read(
        hiveql, host=host, port=port, user=user, password=password, timeout_s=timeout_s
    )
