"""Ports for scratch stacks come from below the kernel's ephemeral range, one slice per
pytest-xdist worker, never twice, and never one somebody holds."""

from __future__ import annotations

import socket

import pytest

from proving import ports
from proving.ports import free_port, port_range


def test_ports_are_below_the_range_the_kernel_hands_out_itself() -> None:
    start = ports._ephemeral_start()
    with socket.socket() as sock:  # the premise: bind(0) draws from the ephemeral range
        sock.bind(("127.0.0.1", 0))
        assert sock.getsockname()[1] >= start
    given = [free_port() for _ in range(300)]
    assert len(set(given)) == 300  # never twice
    assert all(20_000 <= p < start for p in given)
    for port in given[:20]:  # free when handed out, and still free now
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_somebody_holds_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        draws = iter([taken, taken, 20_999])
        monkeypatch.setattr(ports, "port_range", lambda: range(20_000, 33_000))
        monkeypatch.setattr(ports._random, "randrange", lambda *_: next(draws))
        monkeypatch.setattr(ports, "_given", set())
        assert free_port() == 20_999


def test_each_xdist_worker_draws_from_its_own_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_ephemeral_start", lambda: 32_768)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    slices = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        slices.append(port_range())
    assert slices == [range(20_000, 26_384), range(26_384, 32_768)]
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert port_range() == range(20_000, 32_768)
