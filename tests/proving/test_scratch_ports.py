"""A scratch stack whose port is taken between picking it and binding it starts on others.

Tests run on two workers: a port found free when a stack is made can be bound by the
other worker's Java before the stack starts (a CI run lost a drill to that)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from proving.scratch import ScratchStack
from workbench.exceptions import PortInUse
from workbench.stack import supervisor

pytestmark = pytest.mark.integration


def _hold(port: int) -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder


def test_a_port_taken_before_the_first_start_is_swapped_and_after_it_is_named(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    stack = ScratchStack(home=tmp_path / "home", report=said.append)
    taken = int(stack.env["WORKBENCH_KAFKA_PORT"])
    holder = _hold(taken)
    try:
        stack.up(["broker", "kafka"])
        moved = int(stack.env["WORKBENCH_KAFKA_PORT"])
        assert moved != taken
        assert stack.config.kafka_port == moved
        assert any(f"{taken} is already in use" in line for line in said), said
        with socket.create_connection(("127.0.0.1", moved), timeout=5):
            pass
    finally:
        holder.close()
    try:
        # once started, the stack's ports are known to its users: a restart keeps them,
        # and a taken one is named
        supervisor.down(stack.config)
        holder = _hold(moved)
        with pytest.raises(PortInUse, match=f"{moved} is already in use"):
            stack.up(["broker", "kafka"])
        holder.close()
    finally:
        stack.close()
