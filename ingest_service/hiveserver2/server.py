"""The threaded HiveServer2 server: accept, authenticate (SASL PLAIN), serve TCLIService.

One thread per connection (HiveServer2 clients keep few, long connections);
statements run on the backend's pool when clients ask for async execution.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from types import FrameType

from TCLIService import TCLIService
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.transport.TTransport import TTransportException

from ingest_service.hiveserver2.handler import Backend, Handler
from ingest_service.hiveserver2.transport import (
    PlainCredentials,
    SaslFailed,
    SaslServerTransport,
    SocketTransport,
    is_nosasl,
)
from workbench.config import Config
from workbench.exceptions import AuthenticationFailed, PortInUse
from workbench.query.client import check_admin_secret, ensure_admin_secret
from workbench.tenancy.principal import Principal

__all__ = ["HiveServer2", "run_hiveserver2"]

logger = logging.getLogger(__name__)


class HiveServer2:
    """A HiveServer2 endpoint on ``host:port`` (default: the config's)."""

    def __init__(self, config: Config, *, host: str | None = None, port: int | None = None) -> None:
        self.config = config
        self.host = host or config.host
        self.port = port if port is not None else config.hive_port
        self.backend = Backend(config)
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Bind and start accepting in a background thread."""
        ensure_admin_secret(self.config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise PortInUse(
                f"cannot listen on {self.host}:{self.port} ({exc.strerror})",
                hint="stop what uses it or set WORKBENCH_HIVE_PORT",
            ) from None
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._sock = sock
        thread = threading.Thread(target=self._accept_loop, name="hs2-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        logger.info("HiveServer2 listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        """Stop accepting, drop connections, close sessions."""
        self._stopping.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        with self._lock:
            for conn in list(self._conns):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        self.backend.close()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, peer = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(
                target=self._serve, args=(conn, peer), name=f"hs2-conn-{peer[1]}", daemon=True
            )
            with self._lock:
                self._conns.add(conn)
            thread.start()

    def _authenticate(self, creds: PlainCredentials) -> Principal | str:
        from workbench.tenancy import authenticate

        if check_admin_secret(self.config, creds.user, creds.password):
            return Principal.system(creds.user)
        try:
            return authenticate(self.config, creds.user, creds.password, door="hive")
        except AuthenticationFailed as exc:
            return str(exc)

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        handler: Handler | None = None
        try:
            conn.settimeout(None)
            if is_nosasl(conn):
                if not self.config.hive_allow_nosasl:
                    logger.warning("NOSASL connection from %s refused", peer[0])
                    self.backend.audit("?", "login:hive", peer[0], "denied", "NOSASL refused")
                    return
                transport: SocketTransport = SocketTransport(conn)
                handler = Handler(self.backend, None)
            else:
                sasl = SaslServerTransport(conn)
                found: list[Principal] = []

                def check(creds: PlainCredentials) -> str | None:
                    outcome = self._authenticate(creds)
                    if isinstance(outcome, str):
                        return outcome
                    found.append(outcome)
                    return None

                try:
                    sasl.negotiate(check)
                except SaslFailed as exc:
                    logger.info("login from %s refused: %s", peer[0], exc)
                    return
                transport = sasl
                handler = Handler(self.backend, found[0])
            processor = TCLIService.Processor(handler)
            protocol = TBinaryProtocol(transport)
            while not self._stopping.is_set():
                processor.process(protocol, protocol)
        except (TTransportException, ConnectionError, OSError):
            pass
        except Exception:
            logger.exception("connection from %s failed", peer[0])
        finally:
            if handler is not None:
                handler.disconnected()
            with self._lock:
                self._conns.discard(conn)
            conn.close()


def run_hiveserver2(config: Config) -> int:
    """``python -m ingest_service hiveserver2``: serve until SIGTERM/SIGINT."""
    server = HiveServer2(config)
    server.start()
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    done.wait()
    logger.info("HiveServer2 stopping")
    server.stop()
    return 0
