"""The Flight door's same-host path over a real Unix socket and real shared memory,
against a real Delta lake: the result the gRPC path gives, in the same scope, with the
same refusals and access log, read where the door wrote it."""

from __future__ import annotations

import fcntl
import gc
import mmap
import os
import socket
import struct
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from tests.conftest import free_port
from tests.workbench.query.hiveserver2.lake import USERS, HiveLake, running_server
from tests.workbench.query.test_flight import logged
from workbench.exceptions import QueryFailed, QueryRefused
from workbench.lake.tables import table_uri
from workbench.query import local_door
from workbench.query.flight import flight_read
from workbench.query.hiveserver2 import HiveServer2
from workbench.query.local_door import (
    LocalDoorUnavailable,
    bulk_read,
    local_read,
    release_buffers,
    socket_name,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(lake: HiveLake):
    """The door, keeping none of its own mappings: the files mapped in this process are
    then the client's (test_the_door_maps_a_file_once_while_it_is_written_into_again
    keeps them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local_door, "_DOOR_KEEP", 0)
        with running_server(lake.config) as srv:
            yield srv


def local(server: HiveServer2, user: str, sql: str, password: str | None = None):
    password = USERS[user][2] if password is None else password
    return local_read(sql, port=server.flight_port, user=user, password=password)


def grpc(server: HiveServer2, user: str, sql: str, password: str | None = None):
    password = USERS[user][2] if password is None else password
    return flight_read(sql, host="127.0.0.1", port=server.flight_port, user=user, password=password)


def mapped_results() -> int:
    """How many result files this process has mapped now (the door's are unmapped
    before it answers: these are the client's)."""
    return Path("/proc/self/maps").read_text().count("memfd:workbench-result")


def mapped_files() -> set[str]:
    """The inodes of the result files this process has mapped now."""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return {line.split()[4] for line in lines if "memfd:workbench-result" in line}


@pytest.fixture
def no_kept_files():
    """No result file kept from an earlier test, nor left for a later one."""
    gc.collect()
    release_buffers()
    assert mapped_results() == 0
    yield
    gc.collect()
    release_buffers()


def test_an_analyst_reads_their_tenants_rows_from_shared_memory(
    server, lake: HiveLake, no_kept_files
) -> None:
    sql = "SELECT device_id, ts, temperature FROM telemetry ORDER BY device_id, ts"
    table = local(server, "ann", sql)
    # the columns are read where the door wrote them: the result file is mapped here
    assert mapped_results() == 1
    got = pl.from_arrow(table)
    truth = pl.read_delta(table_uri(lake.config, "telemetry")).filter(
        pl.col("tenant_id") == "t-0001"
    )
    assert got.height == truth.height > 0
    assert got.equals(pl.from_arrow(grpc(server, "ann", sql)))
    other = local(server, "ann", "SELECT count(*) AS n FROM telemetry WHERE tenant_id = 't-0002'")
    assert other.to_pylist() == [{"n": 0}]
    del table, got, other
    # kept for the next reads once no frame refers to them, and let go on request
    assert mapped_results() == 2
    assert release_buffers() > 0
    assert mapped_results() == 0


def test_a_result_is_written_over_only_once_nothing_refers_to_it(
    server, lake: HiveLake, no_kept_files
) -> None:
    order = "ORDER BY device_id, ts"
    warm = f"SELECT device_id, temperature FROM telemetry WHERE temperature > 20 {order}"
    cold = f"SELECT device_id, temperature FROM telemetry WHERE temperature <= 20 {order}"
    first = pl.from_arrow(local(server, "ann", warm))
    second = pl.from_arrow(local(server, "ann", cold))
    truths = [pl.from_arrow(grpc(server, "ann", sql)) for sql in (warm, cold)]
    # a frame in use keeps its file: the second read was written elsewhere
    assert mapped_results() == 2
    assert first.equals(truths[0]) and second.equals(truths[1])
    assert first.height > 0 and second.height > 0
    sliced = first.slice(10, 100)  # shares the columns' memory
    del first
    gc.collect()
    third = pl.from_arrow(local(server, "ann", cold))
    assert mapped_results() == 3  # the slice still refers to the first file
    assert sliced.equals(truths[0].slice(10, 100))
    del sliced
    gc.collect()
    fourth = pl.from_arrow(local(server, "ann", warm))
    # written into a file freed by the first frame: no new one
    assert mapped_results() == 3
    assert second.equals(truths[1]) and third.equals(truths[1]) and fourth.equals(truths[0])


def test_kept_files_stay_within_the_limits(
    server, no_kept_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql = "SELECT device_id, ts FROM telemetry"
    frames = [pl.from_arrow(local(server, "ann", sql)) for _ in range(3)]
    assert mapped_results() == 3
    del frames
    gc.collect()
    assert mapped_results() == 2  # at most two idle files
    monkeypatch.setattr(local_door, "_KEEP_BYTES", 1)
    pl.from_arrow(local(server, "ann", sql))  # taken, given back: past the bytes to keep
    gc.collect()
    assert mapped_results() == 0


def test_a_forked_process_never_offers_its_parents_files(
    server, no_kept_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql = "SELECT device_id, ts FROM telemetry"
    frames = [pl.from_arrow(local(server, "ann", sql)) for _ in range(2)]
    del frames[0]  # one idle file, one a frame refers to
    gc.collect()
    before = mapped_files()
    assert len(before) == 2
    parent = os.getpid()
    monkeypatch.setattr(local_door.os, "getpid", lambda: parent + 1)  # as in a forked child
    # the idle file is the parent's to offer: the child closes its copy, gets a new one
    child = pl.from_arrow(local(server, "ann", sql))
    after = mapped_files()
    assert len(after) == 2 and len(after - before) == 1 and child.equals(frames[0])
    del frames  # the parent's frame's copy goes: its file is not kept either
    gc.collect()
    assert mapped_results() == 1


def test_the_door_maps_a_file_once_while_it_is_written_into_again(
    server, no_kept_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_door, "_DOOR_KEEP", 4)
    made: list[int] = []
    mapping = local_door._Mapping

    def counted(fd: int) -> local_door._Mapping:
        made.append(fd)
        return mapping(fd)

    monkeypatch.setattr(local_door, "_Mapping", counted)
    warm = "SELECT device_id, temperature FROM telemetry WHERE temperature > 20"
    cold = "SELECT device_id, temperature FROM telemetry WHERE temperature <= 20"
    truths = {sql: pl.from_arrow(grpc(server, "ann", sql)) for sql in (warm, cold)}
    frames = [pl.from_arrow(local(server, "ann", sql)) for sql in (warm, cold)]
    assert len(made) == 2  # two new files
    # read while both frames live: a third file; from then on each read is written into
    # the file the frame before last let go
    for _ in range(3):
        frames = [frames[1], pl.from_arrow(local(server, "ann", warm))]
    frames = [frames[1], pl.from_arrow(local(server, "ann", cold))]
    assert len(made) == 3  # mapped by the door once each
    assert frames[0].equals(truths[warm]) and frames[1].equals(truths[cold])
    # the door's mappings are let go past their time, the client's files stay
    client = mapped_files()
    assert len(client) == 3  # two for the frames, one idle
    assert Path("/proc/self/maps").read_text().count("memfd:workbench-result") == 6
    monkeypatch.setattr(local_door, "_DOOR_KEEP_S", 0.0)
    server.local._mappings.trim()
    lines = Path("/proc/self/maps").read_text().count("memfd:workbench-result")
    assert lines == 3 and mapped_files() == client


def test_an_answer_larger_than_its_file_is_refused_not_read(no_kept_files) -> None:
    """The client reads only within the file it was handed: a door claiming more bytes
    (a bug, or another version) gets an error, not a read past the mapping."""
    import threading

    port = free_port()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_name(port))
    listener.listen(1)

    def stand_in() -> None:
        conn, _ = listener.accept()
        with conn:
            local_door._receive(conn, 1 << 20)
            small = os.memfd_create("workbench-result", os.MFD_CLOEXEC)
            os.ftruncate(small, 4096)
            local_door._send(conn, {"ok": True, "bytes": 1 << 24}, [small])
            os.close(small)

    thread = threading.Thread(target=stand_in, daemon=True)
    thread.start()
    try:
        with pytest.raises(QueryFailed, match="does not match the file it came with"):
            local_read("SELECT 1", port=port, user="ann", password="x")
    finally:
        thread.join(10)
        listener.close()
    assert mapped_results() == 0  # the file it came with is closed


def _ask_with(server: HiveServer2, fd: int) -> tuple[dict, list[int]]:
    """The door's answer to ann's statement, offering ``fd`` to write into."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_name(server.flight_port))
        request = {"user": "ann", "password": USERS["ann"][2], "sql": "SELECT 7 AS seven"}
        local_door._send(sock, request, [fd])
        return local_door._receive(sock, 1 << 20)


def _memfd(size: int, seals: int = 0) -> int:
    fd = os.memfd_create("offered", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def _untouched(fd: int) -> bool:
    with mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ) as mapped:
        return mapped[:] == bytes(len(mapped))


def test_the_door_writes_only_into_a_file_that_cannot_shrink_under_it(server) -> None:
    sealed = _memfd(1 << 20, fcntl.F_SEAL_SHRINK)
    read_only = os.open(f"/proc/self/fd/{sealed}", os.O_RDONLY | os.O_CLOEXEC)
    offers = {
        # a file its owner could cut short while the door writes: SIGBUS in the door
        "may shrink": _memfd(1 << 20),
        "too small": _memfd(64, fcntl.F_SEAL_SHRINK),
        "opened read-only": read_only,
        "not a memory file": os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC),
    }
    try:
        for why, fd in offers.items():
            answer, fds = _ask_with(server, fd)
            assert answer["ok"] and len(fds) == 1, why  # a file of the door's instead
            with mmap.mmap(fds[0], answer["bytes"], prot=mmap.PROT_READ) as mapped:
                got = pa.ipc.open_stream(mapped[:]).read_all()
            os.close(fds[0])
            assert got.to_pylist() == [{"seven": 7}], why
        for fd in (offers["may shrink"], offers["too small"], sealed):
            assert _untouched(fd)
        answer, fds = _ask_with(server, sealed)  # one that will do: written into, no file
        assert answer["ok"] and fds == []
        with mmap.mmap(sealed, answer["bytes"], prot=mmap.PROT_READ) as mapped:
            assert pa.ipc.open_stream(mapped[:]).read_all().to_pylist() == [{"seven": 7}]
    finally:
        for fd in (*offers.values(), sealed):
            os.close(fd)


@pytest.mark.parametrize("path", [local, grpc], ids=["shared memory", "grpc"])
def test_refusals_and_failures_say_the_same_on_both_paths(server, path) -> None:
    with pytest.raises(
        QueryRefused, match="the Flight door refused: invalid user name or password"
    ):
        path(server, "bob", "SELECT 1", password="not-bobs")
    with pytest.raises(QueryRefused, match=r"rita \(viewer\) may not query"):
        path(server, "rita", "SELECT 1")
    with pytest.raises(QueryRefused, match="table function READ_PARQUET is refused"):
        path(server, "ann", "SELECT * FROM read_parquet('/etc/passwd')")
    with pytest.raises(QueryFailed, match="table 'users' not found"):
        path(server, "ann", "SELECT * FROM users")
    # gRPC carries the statement as a Flight ticket; the local door as a statement
    empty = "the ticket is empty" if path is grpc else "the statement is empty"
    with pytest.raises(QueryFailed, match=empty):
        path(server, "ann", "   ")


def test_reads_are_in_the_access_log(server, lake: HiveLake) -> None:
    marker = "SELECT 'local-door-marker-7' AS m"
    assert local(server, "ann", marker).to_pylist() == [{"m": "local-door-marker-7"}]
    hits = logged(lake, (pl.col("action") == "query") & (pl.col("target") == marker))
    entry = hits.row(0, named=True)
    # logged as a read through the shared-memory door, not through gRPC
    assert (entry["user"], entry["outcome"], entry["detail"]) == ("ann", "ok", "local: rows=1")


def test_a_bad_request_is_dropped_and_the_door_keeps_serving(server) -> None:
    for garbage in (b"\xff\xff\xff\xff", struct.pack(">I", 5) + b"[1,2]", b"\x00"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(socket_name(server.flight_port))
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(30)
            sock.recv(4096)  # answered or closed, never hung
    assert local(server, "ann", "SELECT 1 AS one").to_pylist() == [{"one": 1}]


def test_bulk_read_takes_the_same_host_path_and_falls_back_to_grpc(server, no_kept_files) -> None:
    password = USERS["ann"][2]
    table = bulk_read(
        "SELECT 1 AS one", host="127.0.0.1", port=server.flight_port, user="ann", password=password
    )
    assert mapped_results() == 1 and table.to_pylist() == [{"one": 1}]
    # the machine's own address (or name) is this machine too: shared memory again, not
    # gRPC, which the door serves on 127.0.0.1 only
    import psutil

    own = next(
        (
            a.address
            for addresses in psutil.net_if_addrs().values()
            for a in addresses
            if a.family == socket.AF_INET and not a.address.startswith("127.")
        ),
        socket.gethostname(),
    )
    again = bulk_read(
        "SELECT 2 AS two", host=own, port=server.flight_port, user="ann", password=password
    )
    assert mapped_results() == 2 and again.to_pylist() == [{"two": 2}]
    nowhere = free_port()
    with pytest.raises(LocalDoorUnavailable):
        local_read("SELECT 1", port=nowhere, user="ann", password=password)
    # no door on this machine for that port: Flight is tried, and says there is none
    with pytest.raises(QueryFailed, match=rf"no Flight door at 127\.0\.0\.1:{nowhere}"):
        bulk_read("SELECT 1", host="127.0.0.1", port=nowhere, user="ann", password=password)
