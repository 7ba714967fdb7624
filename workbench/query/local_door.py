"""The Flight door's same-host path: a result handed over in shared memory.

Over gRPC on loopback, a million rows of five columns took 2.4 times as long as reading
them straight from the lake, before any login or scope: every byte is copied into the
socket, out of it, and once more into the client's frame. When the notebook kernel and
the door are on one machine, the door instead writes the result once, as an Arrow IPC
stream, into an anonymous memory file (``memfd``) and passes the file's descriptor over
a Unix socket (``SCM_RIGHTS``). The client maps the file and reads the columns where
they lie.

A memory file's fresh pages are most of what is left: the kernel hands out and zeroes
each 4 KiB page on first touch, 45 ms of a 50 MB result on these machines, against
10 ms to write the same stream into pages already there. So the client keeps the files
it was given, mapped, once no frame refers to them any more, and offers one with its
next request; the door writes into it when the result fits, and makes a larger one
when it does not.

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
``{"user", "password", "sql"}``, with the descriptor of a memory file to fill attached
or not; the answer ``{"ok": true, "bytes": N}`` (the result's first N bytes of that file,
or of a new one whose descriptor is attached), or ``{"ok": false, "refused": true |
false, "message"}`` (what Flight would have said). A door that offers no file, or one
that ignores the offer, still gets or gives a correct answer.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import mmap
import os
import socket
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from workbench.exceptions import AccessDenied, QueryFailed, QueryRefused, WorkbenchError
from workbench.query.flight import FlightDoor, flight_read

__all__ = [
    "LocalDoor",
    "LocalDoorUnavailable",
    "bulk_read",
    "local_read",
    "release_buffers",
    "socket_name",
]

logger = logging.getLogger(__name__)

# a request is credentials and one statement: far below this
_MAX_REQUEST = 1 << 20
# a client has this long to send its request
_REQUEST_TIMEOUT_S = 10.0
# connections served at once; one more is answered "busy" at once
_MAX_CONNECTIONS = 64
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# a new memory file has this much room beyond its result, so that the next, slightly
# larger result of the same statement still fits (pages never written cost nothing)
_HEADROOM = 1 / 8
_ROUND = 1 << 20
# a client keeps at most this many memory files no result refers to, and this many bytes
_KEEP_IDLE = 2
_KEEP_BYTES = 512 << 20
# the door keeps its mappings of the files it wrote last, for the next write into the same
# file: at most this many, this many bytes, this long unused
_DOOR_KEEP = 4
_DOOR_KEEP_BYTES = 512 << 20
_DOOR_KEEP_S = 30.0
# madvise(2): fault in a range's pages, writable (Linux 5.14; Python 3.11 lacks the name)
_MADV_POPULATE_WRITE = 23


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


def _stream_size(table: pa.Table) -> int:
    """The bytes of ``table`` as an Arrow IPC stream (counted, nothing copied)."""
    sink = pa.MockOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return int(sink.size())


def _new_file(size: int) -> int:
    """A memory file with room for ``size`` bytes and more, sealed against shrinking."""
    fd = os.memfd_create("workbench-result", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        room = size + int(size * _HEADROOM)
        os.ftruncate(fd, -(-room // _ROUND) * _ROUND)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fits(fd: int, size: int) -> bool:
    """Whether a client's file may take ``size`` bytes: a memory file of that size or
    more that cannot shrink. (A file cut short under the door's writes would kill the
    door with SIGBUS; a file that is not a memory file has no seals to ask for.)"""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        return bool(seals & fcntl.F_SEAL_SHRINK) and os.fstat(fd).st_size >= size
    except OSError:
        return False


class _Mapping:
    """A writable mapping of a whole memory file, so that any later result that fits
    the file fits the mapping. Writable only if the descriptor was opened for writing,
    so a client cannot have the door write where it could not."""

    def __init__(self, fd: int) -> None:
        self.size = os.fstat(fd).st_size
        self.mapping = mmap.mmap(fd, self.size, flags=mmap.MAP_SHARED)
        self.busy = True
        self.used_at = time.monotonic()

    def populate(self, size: int) -> None:
        """Fault in the pages of the first ``size`` bytes at once: one by one as the
        stream is written they cost twice as much (a write() into the file, four times)."""
        with contextlib.suppress(OSError):  # before Linux 5.14: faulted in as written
            self.mapping.madvise(_MADV_POPULATE_WRITE, 0, size)  # the kernel rounds up


class _Mappings:
    """The door's mappings of the files it wrote last, kept for the next write into the
    same file: a client offers the file of its last result but one, and mapping it again
    costs more (5 ms of 50 MB: the page tables) than the copy saved by the mapping being
    there. Kept while no more than :data:`_DOOR_KEEP` files and :data:`_DOOR_KEEP_BYTES`,
    and for :data:`_DOOR_KEEP_S` after their last write; a kept mapping holds its file's
    memory even after its client closed it, until then.

    A file is known by its device and inode: a number no other live file has, and this
    file stays alive while it is mapped here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: collections.OrderedDict[tuple[int, int], _Mapping] = collections.OrderedDict()

    @contextlib.contextmanager
    def of(self, fd: int, size: int) -> Iterator[mmap.mmap]:
        """A mapping of ``fd`` of at least ``size`` bytes, for this thread alone."""
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        with self._lock:
            held = self._kept.get(key)
            if held is not None and not held.busy and held.size >= size:
                held.busy = True
                self._kept.move_to_end(key)
            else:
                held = None
        if held is None:
            held = _Mapping(fd)
            held.populate(size)
            with self._lock:
                old = self._kept.get(key)
                if old is None or not old.busy:  # else the same file, twice at once
                    self._kept[key] = held
                    self._kept.move_to_end(key)
                    if old is not None:
                        old.mapping.close()
        try:
            yield held.mapping
        finally:
            with self._lock:
                held.busy = False
                held.used_at = time.monotonic()
                if self._kept.get(key) is not held:
                    held.mapping.close()
                self._trim()

    def trim(self) -> None:
        """Unmap what is kept past its time."""
        with self._lock:
            self._trim()

    def close(self) -> None:
        """Unmap everything kept (a mapping being written is unmapped after its write)."""
        with self._lock:
            for key, held in list(self._kept.items()):
                del self._kept[key]
                if not held.busy:
                    held.mapping.close()

    def _trim(self) -> None:
        now = time.monotonic()
        count = len(self._kept)
        total = sum(m.size for m in self._kept.values())
        for key, held in list(self._kept.items()):  # oldest first
            within = count <= _DOOR_KEEP and total <= _DOOR_KEEP_BYTES
            if held.busy or (within and now - held.used_at < _DOOR_KEEP_S):
                continue
            del self._kept[key]
            held.mapping.close()
            count -= 1
            total -= held.size


def _write_stream(table: pa.Table, into: pa.Buffer) -> None:
    # its own frame, so that nothing refers to the mapping once it returns
    with pa.ipc.new_stream(pa.FixedSizeBufferWriter(into), table.schema) as writer:
        writer.write_table(table)


class LocalDoor:
    """Serves ``door``'s statements on this machine's abstract Unix socket for
    ``port`` (the Flight port)."""

    def __init__(self, door: FlightDoor, port: int) -> None:
        self.door = door
        self.name = socket_name(port)
        self._sock: socket.socket | None = None
        self._slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        self._stopping = threading.Event()
        self._mappings = _Mappings()

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
        threading.Thread(target=self._sweep, name="local-door-sweep", daemon=True).start()

    def _sweep(self) -> None:
        while not self._stopping.wait(_DOOR_KEEP_S / 3):
            self._mappings.trim()
        self._mappings.close()

    def stop(self) -> None:
        """Stop accepting; statements being served finish. Kept mappings are let go."""
        self._stopping.set()
        self._mappings.close()
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
                offered, extra = (fds[0], fds[1:]) if fds else (None, [])
                for fd in extra:  # a request carries one at most
                    os.close(fd)
                try:
                    conn.settimeout(None)
                    self._answer(conn, request, f"uid:{uid}", offered)
                finally:
                    if offered is not None:
                        os.close(offered)
        except OSError as exc:  # the client went away
            logger.debug("local door: %s", exc)
        finally:
            self._slots.release()

    def _answer(
        self, conn: socket.socket, request: dict[str, Any], address: str, offered: int | None
    ) -> None:
        user, password, sql = (request.get(k) for k in ("user", "password", "sql"))
        if not all(isinstance(v, str) for v in (user, password, sql)):
            _send(conn, _refusal(False, "send user, password and sql, each a string"))
            return
        assert isinstance(user, str) and isinstance(password, str) and isinstance(sql, str)
        try:
            table = self.door.run(user, password, address, sql, polars_types=True, via="local")
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
        new: int | None = None  # a memory file of the door's, when the offer will not do
        try:
            size = _stream_size(table)
            if (
                offered is None
                or not _fits(offered, size)
                or not self._written(table, offered, size)
            ):
                new = _new_file(size)
                self._write(table, new, size)
        except (OSError, pa.ArrowException) as exc:  # out of memory for the copy, say
            if new is not None:
                os.close(new)
            logger.exception("local door: cannot hand over a result")
            _send(conn, _refusal(False, f"cannot hand over the result here ({exc}); try gRPC"))
            return
        try:
            _send(conn, {"ok": True, "bytes": size}, None if new is None else [new])
        finally:
            if new is not None:
                os.close(new)

    def _write(self, table: pa.Table, fd: int, size: int) -> None:
        """``table`` as an Arrow IPC stream into the first ``size`` bytes of ``fd``."""
        with self._mappings.of(fd, size) as mapping:
            _write_stream(table, pa.py_buffer(mapping))

    def _written(self, table: pa.Table, fd: int, size: int) -> bool:
        """Whether ``table`` could be written into a client's file (not when the client
        opened it read-only, say)."""
        try:
            self._write(table, fd, size)
        except OSError as exc:
            logger.info("local door: the client's memory file will not take a result: %s", exc)
            return False
        return True


def _refusal(refused: bool, message: str) -> dict[str, Any]:
    return {"ok": False, "refused": refused, "message": message}


class _File:
    """A memory file of the door's that this process keeps mapped, to take results in."""

    def __init__(self, fd: int) -> None:
        """Takes ``fd`` over: closed here when it cannot be mapped."""
        self.fd = fd
        self.pid = os.getpid()
        try:
            self.size = os.fstat(fd).st_size
            self.mapping = mmap.mmap(fd, self.size, prot=mmap.PROT_READ)
        except BaseException:
            os.close(fd)
            raise
        self.view: pa.Buffer | None = pa.py_buffer(self.mapping)

    def close(self) -> None:
        self.view = None  # the mapping's one export: then it may close
        self.mapping.close()
        os.close(self.fd)


class _Lease:
    """Referred to by every column of one result: when the last goes, the file is free."""

    __slots__ = ("__weakref__",)


# files no result refers to, the most recently freed last. A result's file comes back
# from whichever thread drops its last column, at any moment, even from a garbage
# collection run while this very thread holds the lock: so it is queued first, without
# a lock, and settled by whoever holds the lock then or next.
_idle: collections.deque[_File] = collections.deque()
_returned: collections.deque[_File] = collections.deque()
_lock = threading.Lock()


def _lock_anew_in_child() -> None:
    # a thread of the parent may have held the lock at the fork: none holds it here
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_lock_anew_in_child)


def _settle() -> None:
    """With the lock held: the returned files join the idle ones, and the oldest beyond
    :data:`_KEEP_IDLE` files or :data:`_KEEP_BYTES` are unmapped and closed. So are the
    files a forked process inherited: the same memory as its parent's, which the
    parent offers again whenever its own frames let go of it."""
    while _returned:
        file = _returned.popleft()
        if file.pid == os.getpid():
            _idle.append(file)
        else:  # a forked child's copy of its parent's file: the parent may reuse it
            file.close()
    for file in [f for f in _idle if f.pid != os.getpid()]:
        _idle.remove(file)
        file.close()
    while len(_idle) > _KEEP_IDLE or sum(f.size for f in list(_idle)) > _KEEP_BYTES:
        _idle.popleft().close()


def _give_back(file: _File) -> None:
    """Keep ``file`` for a next read (or close it, past the limits)."""
    _returned.append(file)
    if _lock.acquire(blocking=False):
        try:
            _settle()
        finally:
            _lock.release()


def _take() -> _File | None:
    """The largest idle file, the likeliest to fit the next result."""
    with _lock:
        _settle()
        if not _idle:
            return None
        largest = max(list(_idle), key=lambda f: f.size)
        _idle.remove(largest)
        return largest


def release_buffers() -> int:
    """Unmap and close the memory files kept for the next reads; the bytes let go.
    (A file that a result still refers to comes back when the result goes.)"""
    with _lock:
        _settle()
        freed = sum(f.size for f in _idle)
        while _idle:
            _idle.popleft().close()
    return freed


def _lend(file: _File, size: int) -> pa.Buffer:
    """The first ``size`` bytes of ``file``, as a buffer whose last slice's end gives the
    file back."""
    assert file.view is not None
    lease = _Lease()
    weakref.finalize(lease, _give_back, file).atexit = False
    return pa.foreign_buffer(file.view.address, size, base=lease)


def local_read(
    hiveql: str, *, port: int, user: str, password: str, timeout_s: float = 600.0
) -> pa.Table:
    """The result of ``hiveql`` from the door on this machine (Flight port ``port``), as
    ``user``, mapped from shared memory.

    The rows are :func:`flight_read`'s; a result polars read from the lake keeps polars'
    own Arrow types (``string_view`` for strings, where Flight sends ``string``), so
    ``polars.from_arrow`` copies nothing. The columns lie in a memory file that is
    written again by a later read only once none of them is referred to any more.
    Raises :class:`LocalDoorUnavailable` when no door listens here, and
    :class:`QueryRefused` or :class:`QueryFailed` as :func:`flight_read` does."""
    offer = _take()
    try:
        answer, fds = _ask(hiveql, port, user, password, timeout_s, offer)
    except BaseException:
        if offer is not None:
            _give_back(offer)
        raise
    file = offer
    try:
        if not answer.get("ok"):
            message = str(answer.get("message"))
            if answer.get("refused"):
                raise QueryRefused(f"the Flight door refused: {message}")
            raise QueryFailed(f"the Flight door: {message}")
        if fds:  # a file of the door's: the offer did not do, or there was none
            file = _File(fds.pop(0))
        size = int(answer["bytes"])
        # past the file's end the columns would be read from unmapped memory
        if fds or file is None or not 0 < size <= file.size:
            raise QueryFailed("the door's answer does not match the file it came with")
    except BaseException:
        for fd in fds:
            os.close(fd)
        if file is not None and file is not offer:
            file.close()
        if offer is not None:
            _give_back(offer)
        raise
    if offer is not None and file is not offer:
        _give_back(offer)
    # the table's buffers are slices of the lent buffer, which they keep alive
    return pa.ipc.open_stream(_lend(file, size)).read_all()


def _ask(
    hiveql: str, port: int, user: str, password: str, timeout_s: float, offer: _File | None
) -> tuple[dict[str, Any], list[int]]:
    """Send the statement (offering ``offer`` to write into) and take the answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(socket_name(port))
        except (FileNotFoundError, ConnectionRefusedError):
            raise LocalDoorUnavailable(f"no door on this machine for port {port}") from None
        request = {"user": user, "password": password, "sql": hiveql}
        _send(sock, request, None if offer is None else [offer.fd])
        try:
            return _receive(sock, _MAX_REQUEST)
        except (OSError, ValueError) as exc:
            raise QueryFailed(f"the door's answer was cut short ({exc})") from None


def _on_this_machine(host: str) -> bool:
    """Whether ``host`` names this machine: a loopback name or address, the host name,
    or an address of one of its interfaces (a door bound to the host's own address is
    reached in shared memory too; a name that only resolves elsewhere is not tried)."""
    import psutil

    if host in _LOOPBACK or host.startswith("127.") or host == socket.gethostname():
        return True
    return any(
        address.address.split("%")[0] == host
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
    )


def bulk_read(
    hiveql: str, *, host: str, port: int, user: str, password: str, timeout_s: float = 600.0
) -> pa.Table:
    """The result of ``hiveql`` through the Flight door at ``host:port``: in shared memory
    when the door is on this machine, over gRPC otherwise."""
    if _on_this_machine(host):
        with contextlib.suppress(LocalDoorUnavailable):
            return local_read(hiveql, port=port, user=user, password=password, timeout_s=timeout_s)
    return flight_read(
        hiveql, host=host, port=port, user=user, password=password, timeout_s=timeout_s
    )
