"""The gateway's listening sockets: bound once by the parent process, inherited by every
worker (:mod:`ingest_service.gateway.workers`), so the workers accept from one shared
queue per port.
"""

from __future__ import annotations

import errno
import os
import socket

from workbench.exceptions import PortInUse

__all__ = ["LISTEN_FDS_ENV", "inherited_sockets", "listen"]

# "<http fd>,<legacy fd>,<mqtt fd>[,<mqtt tls fd>]": how the parent hands its sockets down
LISTEN_FDS_ENV = "WORKBENCH_GATEWAY_LISTEN_FDS"
_BACKLOG = 1024


def listen(host: str, port: int, env: str) -> socket.socket:
    """A listening TCP socket on ``host:port`` that children inherit; ``env`` names the
    setting to change when the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR: a port in TIME_WAIT is free; a listener still makes bind fail
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {host}:{port} is already in use",
                hint=f"stop the other gateway or set {env} to a free port",
            ) from None
        raise
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def inherited_sockets() -> list[socket.socket] | None:
    """The (HTTP, legacy, MQTT[, MQTT over TLS]) listening sockets handed down by the
    parent, if any."""
    fds = os.environ.get(LISTEN_FDS_ENV)
    if not fds:
        return None
    return [socket.socket(fileno=int(fd)) for fd in fds.split(",")]
