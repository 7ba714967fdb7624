"""The threaded HiveServer2 server: accept, authenticate (SASL PLAIN), serve TCLIService.

One thread per connection (HiveServer2 clients keep few, long connections), so
connections are capped in total (``WORKBENCH_HIVE_MAX_CONNECTIONS``, logged in or
not) and per user (``WORKBENCH_HIVE_MAX_CONNECTIONS_PER_USER``), and a client gets
``HANDSHAKE_TIMEOUT`` seconds to log in. Statements run on the backend's pool when
clients ask for async execution.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import pyarrow as pa
from TCLIService import TCLIService
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.transport.TTransport import TTransportException

from workbench.config import Config
from workbench.exceptions import AuthenticationFailed, NotFound, PortInUse, SparkUnavailable
from workbench.query.client import check_admin_secret, ensure_admin_secret
from workbench.query.flight import FlightDoor
from workbench.query.hiveserver2.handler import Handler
from workbench.query.hiveserver2.sessions import Backend
from workbench.query.hiveserver2.transport import (
    PlainCredentials,
    SaslFailed,
    SaslServerTransport,
    SocketTransport,
    is_nosasl,
)
from workbench.query.local_door import LocalDoor
from workbench.tenancy.principal import Principal

if TYPE_CHECKING:
    from workbench.query.spark import SparkEngine

__all__ = ["HANDSHAKE_TIMEOUT", "HiveServer2", "engine_error_file", "run_hiveserver2"]

logger = logging.getLogger(__name__)

# seconds a new connection has to finish its SASL login; one that never does would
# otherwise hold its thread, and a place under the connection cap, for good
HANDSHAKE_TIMEOUT = 30.0


def _peer_gone(conn: socket.socket) -> bool:
    """Whether the client has closed or reset ``conn`` (what it sent stays unread)."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # nothing to read: still there
    except OSError:
        return True


class HiveServer2:
    """A HiveServer2 endpoint on ``host:port`` (default: the config's)."""

    def __init__(
        self,
        config: Config,
        *,
        host: str | None = None,
        port: int | None = None,
        flight_port: int | None = None,
        spark: SparkEngine | None = None,
    ) -> None:
        """``spark``: a running Spark engine to use (tests share one); without it,
        ``WORKBENCH_HIVE_ENGINE=spark`` starts one in :meth:`start`."""
        self.config = config
        self._own_spark = False
        self.host = host or config.host
        self.port = port if port is not None else config.hive_port
        self.flight_port = flight_port if flight_port is not None else config.flight_port
        self.backend = Backend(config)
        self.flight: FlightDoor | None = None
        self.local: LocalDoor | None = None
        self.backend.spark = spark
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._per_user: dict[str, int] = {}  # logged-in connections per user
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the engine (Spark: raises SparkUnavailable), bind and start accepting in a
        background thread."""
        ensure_admin_secret(self.config)
        if self.config.hive_engine == "spark" and self.backend.spark is None:
            from workbench.query.spark_connect import start_engine

            self.backend.spark = start_engine(self.config)
            self._own_spark = True
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
        try:
            self.flight = self._start_flight()
        except BaseException:
            sock.close()
            raise
        thread = threading.Thread(target=self._accept_loop, name="hs2-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        logger.info(
            "HiveServer2 listening on %s:%d, its Arrow Flight door on %d",
            self.host,
            self.port,
            self.flight_port,
        )

    def _start_flight(self) -> FlightDoor:
        """The Arrow Flight twin of this door: same logins, sessions, scope and log."""

        def login(user: str, password: str, peer: str) -> Principal | str:
            return self._authenticate(PlainCredentials("", user, password), peer, door="flight")

        try:
            door = FlightDoor(
                self.config,
                login,
                audit=self.backend.audit,
                host=self.host,
                port=self.flight_port,
            )
        except (OSError, pa.ArrowException) as exc:
            raise PortInUse(
                f"cannot serve Arrow Flight on {self.host}:{self.flight_port} ({exc})",
                hint="stop what uses it or set WORKBENCH_FLIGHT_PORT",
            ) from None
        self.flight_port = door.port
        thread = threading.Thread(target=door.serve, name="flight-serve", daemon=True)
        thread.start()
        self._threads.append(thread)
        # the same door for kernels on this machine, the result in shared memory
        local = LocalDoor(door, self.flight_port)
        try:
            local.start()
        except OSError as exc:  # Flight still serves them, copying through the socket
            logger.warning("no same-host path to the Flight door (%s): reads go over gRPC", exc)
        else:
            self.local = local
        return door

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
        if self.local is not None:
            self.local.stop()
        if self.flight is not None:
            self.flight.shutdown()
            self.flight.close_sessions()
        for thread in self._threads:
            thread.join(timeout=5)
        self.backend.close()
        if self._own_spark and self.backend.spark is not None:
            self.backend.spark.stop()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, peer = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                crowded = len(self._conns) >= self.config.hive_max_connections
                self._conns.add(conn)
            thread = threading.Thread(
                target=self._serve,
                args=(conn, peer, crowded),
                name=f"hs2-conn-{peer[1]}",
                daemon=True,
            )
            thread.start()

    def _authenticate(
        self, creds: PlainCredentials, peer: str, *, door: str = "hive"
    ) -> Principal | str:
        from workbench.hub import verify_hub_token
        from workbench.tenancy import authenticate

        if check_admin_secret(self.config, creds.user, creds.password):
            return Principal.system(creds.user)
        if verify_hub_token(self.config, creds.user, creds.password):
            # a notebook kernel of the hub: the token stands for the user's password
            return self._hub_user(creds.user, peer, door)
        try:
            return authenticate(self.config, creds.user, creds.password, door=door, source=peer)
        except AuthenticationFailed as exc:
            return str(exc)

    def _hub_user(self, user: str, peer: str, door: str) -> Principal | str:
        """The principal of hub user ``user``, whose token the hub vouched for, while the
        user store still has them active."""
        from workbench.tenancy import UserStore

        try:
            found = UserStore(self.config).get(user)
        except NotFound:
            found = None
        if found is None or found.status != "active":
            refusal = f"user {user!r} is unknown or disabled"
            self.backend.audit(user, f"login:{door}", peer, "denied", f"hub token: {refusal}")
            return refusal
        return found.principal()

    def _admit(self, principal: Principal, peer: tuple[str, int]) -> str | None:
        """Count a logged-in connection of ``principal``, or the refusal beyond the cap."""
        cap = self.config.hive_max_connections_per_user
        with self._lock:
            held = self._per_user.get(principal.user, 0)
            if held < cap:
                self._per_user[principal.user] = held + 1
                return None
        refusal = (
            f"{principal.user} already holds {held} HiveServer2 connections, the most one "
            f"user may (WORKBENCH_HIVE_MAX_CONNECTIONS_PER_USER={cap}); close idle ones "
            "and retry"
        )
        logger.warning("login of %s from %s refused: %s", principal.user, peer[0], refusal)
        self.backend.audit(principal, "login:hive", peer[0], "denied", refusal)
        return refusal

    def _release(self, principal: Principal) -> None:
        with self._lock:
            left = self._per_user.get(principal.user, 0) - 1
            if left > 0:
                self._per_user[principal.user] = left
            else:
                self._per_user.pop(principal.user, None)

    def _refuse_crowded(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """Turn a connection beyond the total cap away, telling a SASL client why."""
        refusal = (
            f"the HiveServer2 endpoint has {self.config.hive_max_connections} connections "
            "open, the most it serves (WORKBENCH_HIVE_MAX_CONNECTIONS); retry later"
        )
        logger.warning("connection from %s refused: %s", peer[0], refusal)
        if is_nosasl(conn):
            return
        with contextlib.suppress(SaslFailed):
            SaslServerTransport(conn).negotiate(lambda creds: refusal)

    def _serve(self, conn: socket.socket, peer: tuple[str, int], crowded: bool = False) -> None:
        handler: Handler | None = None
        admitted: list[Principal] = []
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            if crowded:
                self._refuse_crowded(conn, peer)
                return
            if is_nosasl(conn):
                if not self.config.hive_allow_nosasl:
                    logger.warning("NOSASL connection from %s refused", peer[0])
                    self.backend.audit("?", "login:hive", peer[0], "denied", "NOSASL refused")
                    return
                transport: SocketTransport = SocketTransport(conn)
                handler = Handler(self.backend, None, peer_gone=lambda: _peer_gone(conn))
            else:
                sasl = SaslServerTransport(conn)
                found: list[Principal] = []

                def check(creds: PlainCredentials) -> str | None:
                    outcome = self._authenticate(creds, peer[0])
                    if isinstance(outcome, str):
                        return outcome
                    refusal = self._admit(outcome, peer)
                    if refusal is not None:
                        return refusal
                    admitted.append(outcome)
                    found.append(outcome)
                    return None

                try:
                    sasl.negotiate(check)
                except SaslFailed as exc:
                    logger.info("login from %s refused: %s", peer[0], exc)
                    return
                transport = sasl
                handler = Handler(self.backend, found[0], peer_gone=lambda: _peer_gone(conn))
            conn.settimeout(None)
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
            for principal in admitted:
                self._release(principal)
            with self._lock:
                self._conns.discard(conn)
            conn.close()


def engine_error_file(config: Config) -> Path:
    """Where the endpoint leaves the reason its engine did not start."""
    return config.run_dir / "hiveserver2-engine.error"


def run_hiveserver2(config: Config) -> int:
    """``python -m workbench.query.hiveserver2``: serve until SIGTERM/SIGINT."""
    server = HiveServer2(config)
    # `workbench status` shows why the engine did not start (the port alone cannot)
    failed = engine_error_file(config)
    failed.unlink(missing_ok=True)
    try:
        server.start()
    except SparkUnavailable as exc:
        failed.parent.mkdir(parents=True, exist_ok=True)
        failed.write_text(f"{exc}\n")
        raise
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    done.wait()
    logger.info("HiveServer2 stopping")
    server.stop()
    return 0
