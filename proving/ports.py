"""Free TCP ports on loopback, for the scratch stacks, clusters and tests the proving code
starts.

A port handed out here is taken only when its component binds it, which may be seconds
later. A port the kernel picks for ``bind(0)`` comes from its ephemeral range, the range
it also takes every outgoing connection's local port from (a Java broker's, a client's,
another test's): in between, one of those could take it, and the component then failed
to start (``PortInUse`` in a CI run, from a drill's scratch stack). So ports are drawn
from below that range, where the kernel never hands out a port on its own:

* each pytest-xdist worker draws from its own slice of it, so two workers never draw the
  same port;
* a process never hands out one port twice;
* a port is handed out only if it can be bound right now.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
from pathlib import Path

__all__ = ["free_port", "port_range"]

# Above the ports machines' own services commonly listen on (and the workbench's
# defaults, 1883-10001), below the kernel's ephemeral range.
_LOWEST = 20_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")

_given: set[int] = set()
_lock = threading.Lock()
_random = random.Random()  # its own: a test that seeds the global one does not steer it


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 elsewhere, where
    the BSDs and macOS start at 49152 or above)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_range() -> range:
    """The ports this process draws from: its pytest-xdist worker's slice of the ports
    between 20000 and the ephemeral range (the whole of it outside pytest-xdist).

    >>> r = port_range(); 20_000 <= r.start < r.stop <= _ephemeral_start()
    True
    """
    start, stop = _LOWEST, _ephemeral_start()
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if match and workers > 1:
        width = (stop - start) // workers
        start += int(match.group(1)) % workers * width
        stop = start + width
    return range(start, stop)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody holds right now, outside the kernel's
    ephemeral range, and not handed out before by this process."""
    ports = port_range()
    if len(ports) < 100:  # an ephemeral range that starts low: let the kernel pick
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(1000):
        port = _random.randrange(ports.start, ports.stop)
        with _lock:
            if port in _given or not _bindable(port):
                continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free TCP port between {ports.start} and {ports.stop - 1}")
