"""The Arrow Flight door: HiveQL results as Arrow record batches, for dataframe-sized reads.

HiveServer2 hands a result over row by row in Thrift (about 100k rows/s through
pyhive); this door hands the same result over as Arrow IPC on gRPC, the columns as
they are in memory, so a notebook kernel pulls millions of rows into polars at the
speed of the scan.

It is the HiveServer2 door's twin, not a second way in: it runs in the same process
(``WORKBENCH_FLIGHT_PORT``), checks each call's ``authorization: Basic`` header with
the same check (password, admin secret, or the hub's API token of that very user;
trusted :data:`LOGIN_CACHE_S` seconds, so a revoked token or a disabled user is
refused at most that long after), and runs the
statement in a :class:`~workbench.query.engine.QuerySession` of that principal: the
same parser, the same scoped views, the same row, byte, time and memory caps, and
the same access log (``query`` entries with ``flight:`` details). The ticket is the
HiveQL statement in UTF-8; nothing else is served.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.flight as fl

from workbench.config import Config
from workbench.exceptions import AccessDenied, QueryFailed, QueryRefused, WorkbenchError
from workbench.query.engine import QuerySession
from workbench.tenancy.principal import Principal

__all__ = ["LOGIN_CACHE_S", "FlightDoor", "LoginRefused", "flight_read"]

logger = logging.getLogger(__name__)

Authenticate = Callable[[str, str, str], "Principal | str"]
"""``authenticate(user, password, peer)``: the principal, or why the login is refused."""

LOGIN_CACHE_S = 10.0
"""Seconds the door trusts a checked login before checking it again (one password
check per bulk read would cost more than a small read): a user disabled, or a hub
token revoked, is refused at most this long after."""


class LoginRefused(QueryRefused):
    """The door refused the login itself (not a statement)."""


# idle query sessions kept for reuse, in all: a session costs a DuckDB database and
# its tables' Delta logs, and building one per call would cost more than a small read
_IDLE_SESSIONS = 16


class _Caller(fl.ServerMiddleware):  # type: ignore[misc]
    """The credentials a call carried (checked by the handler, which knows the peer)."""

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.password = password


class _Credentials(fl.ServerMiddlewareFactory):  # type: ignore[misc]
    """Refuses a call without well-formed Basic credentials before any handler runs."""

    def start_call(self, info: Any, headers: dict[str, list[str]]) -> _Caller:
        values = headers.get("authorization") or []
        scheme, _, encoded = (values[0] if values else "").partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise fl.FlightUnauthenticatedError(
                "no credentials: send 'authorization: Basic base64(user:password)' "
                "(in a hub kernel, the hub's API token stands for the password)"
            )
        try:
            text = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            text = ""
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise fl.FlightUnauthenticatedError(
                "malformed Basic credentials: expected base64 of 'user:password'"
            )
        return _Caller(user, password)


class FlightDoor(fl.FlightServerBase):  # type: ignore[misc]
    """``do_get(ticket=HiveQL)``: the statement's result as an Arrow stream, in the
    caller's scope.

    ``audit(principal, action, target, outcome, detail)`` receives each statement as an
    access-log entry (``query``, the statement, ``flight: ...``), as the HiveServer2
    door's sessions report theirs.
    """

    def __init__(
        self,
        config: Config,
        authenticate: Authenticate,
        *,
        audit: Callable[[Principal, str, str, str, str], None] | None = None,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        self.config = config
        self.host = host or config.host
        super().__init__(
            f"grpc+tcp://{self.host}:{config.flight_port if port is None else port}",
            middleware={"login": _Credentials()},
        )
        self._authenticate = authenticate
        self._logins: dict[str, tuple[Principal, float]] = {}
        self._audit = audit
        self._lock = threading.Lock()
        # idle sessions by the user and the path they serve (their log entries name it)
        self._idle: collections.OrderedDict[int, tuple[Principal, str, QuerySession]] = (
            collections.OrderedDict()
        )
        self._running: dict[str, int] = {}
        self._closed = False

    # --- logins: checked on the first call, then trusted LOGIN_CACHE_S seconds ----------

    def _principal(self, user: str, password: str, address: str) -> Principal:
        key = hashlib.sha256(f"{user}\0{password}".encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._logins.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        outcome = self._authenticate(user, password, address)
        if isinstance(outcome, str):
            raise LoginRefused(outcome)
        with self._lock:
            for stale in [k for k, (_, until) in self._logins.items() if until <= now]:
                del self._logins[stale]
            self._logins[key] = (outcome, now + LOGIN_CACHE_S)
        return outcome

    # --- sessions: one per running statement, reused when idle --------------------------

    @contextlib.contextmanager
    def _session(self, principal: Principal, via: str) -> Iterator[QuerySession]:
        cap = self.config.hive_max_concurrent_per_user
        with self._lock:
            if self._running.get(principal.user, 0) >= cap:
                raise QueryFailed(
                    f"{principal.user} already runs {cap} statements, the most one user may "
                    "(WORKBENCH_HIVE_MAX_CONCURRENT_PER_USER); wait for one to finish"
                )
            self._running[principal.user] = self._running.get(principal.user, 0) + 1
            key = next(
                (k for k, (p, v, _) in self._idle.items() if p == principal and v == via), None
            )
            found = self._idle.pop(key)[2] if key is not None else None
        session = None
        try:
            session = found or QuerySession(
                self.config, principal, audit=functools.partial(self._report, via)
            )
            yield session
        finally:
            spare: QuerySession | None = None
            with self._lock:
                self._running[principal.user] -= 1
                if not self._running[principal.user]:
                    del self._running[principal.user]
                if session is not None and not self._closed:
                    self._idle[id(session)] = (principal, via, session)
                    if len(self._idle) > _IDLE_SESSIONS:
                        spare = self._idle.popitem(last=False)[1][2]
                elif session is not None:
                    spare = session
            if spare is not None:
                spare.close()

    def _report(
        self, via: str, principal: Principal, hiveql: str, outcome: str, detail: str
    ) -> None:
        if self._audit is not None:
            self._audit(principal, "query", hiveql, outcome, f"{via}: {detail}")

    # --- the one call served ------------------------------------------------------------

    def run(
        self,
        user: str,
        password: str,
        address: str,
        hiveql: str,
        *,
        polars_types: bool = False,
        via: str = "flight",
    ) -> pa.Table:
        """The result of ``hiveql`` as the user these credentials log in, whatever carried
        them (gRPC here, the same-host socket of :mod:`workbench.query.local_door`);
        ``polars_types`` as :meth:`QuerySession.execute` takes it. ``via`` names the path
        in the access log's detail (``flight: rows=N``, ``local: rows=N``) and in the
        refusal of an empty statement.

        Raises :class:`LoginRefused` (the login), :class:`QueryRefused` or
        :class:`AccessDenied` (the statement) and :class:`QueryFailed`."""
        principal = self._principal(user, password, address)
        hiveql = hiveql.strip()
        if not hiveql:
            what = "ticket" if via == "flight" else "statement"
            raise QueryFailed(f"the {what} is empty: send a HiveQL statement")
        with self._session(principal, via) as session:
            return session.execute(hiveql, polars_types=polars_types).table

    def do_get(self, context: Any, ticket: fl.Ticket) -> fl.RecordBatchStream:
        """Run the ticket's statement as the caller; stream its result."""
        caller: _Caller = context.get_middleware("login")
        # gRPC names the peer "ipv4:127.0.0.1:50512"; the throttle counts by address
        peer = context.peer()
        address = peer.partition(":")[2].rpartition(":")[0].strip("[]") or peer
        try:
            hiveql = ticket.ticket.decode("utf-8")
        except UnicodeDecodeError:
            raise fl.FlightServerError(
                "the ticket is not UTF-8 text: send a HiveQL statement"
            ) from None
        try:
            table = self.run(caller.user, caller.password, address, hiveql)
        except LoginRefused as exc:
            raise fl.FlightUnauthenticatedError(str(exc)) from None
        except (QueryRefused, AccessDenied) as exc:
            raise fl.FlightUnauthorizedError(str(exc)) from None
        except (QueryFailed, WorkbenchError) as exc:
            raise fl.FlightServerError(str(exc)) from None
        return fl.RecordBatchStream(table)

    def close_sessions(self) -> None:
        """Close the idle sessions; sessions in use close when their statement ends."""
        with self._lock:
            self._closed = True
            idle = [s for _, _, s in self._idle.values()]
            self._idle.clear()
        for session in idle:
            session.close()


def flight_read(
    hiveql: str, *, host: str, port: int, user: str, password: str, timeout_s: float = 600.0
) -> pa.Table:
    """The result of ``hiveql`` from the Flight door at ``host:port``, as ``user``.

    Raises :class:`QueryRefused` when the door refuses the login or the statement, and
    :class:`QueryFailed` when the statement fails or the door cannot be reached.
    """
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    options = fl.FlightCallOptions(
        headers=[(b"authorization", f"Basic {token}".encode())], timeout=timeout_s
    )
    client = fl.FlightClient(f"grpc+tcp://{host}:{port}")
    try:
        return client.do_get(fl.Ticket(hiveql.encode()), options).read_all()
    except (fl.FlightUnauthenticatedError, fl.FlightUnauthorizedError) as exc:
        raise QueryRefused(f"the Flight door refused: {_detail(exc)}") from None
    except fl.FlightUnavailableError:
        raise QueryFailed(
            f"no Flight door at {host}:{port}",
            hint="is HiveServer2 running ('workbench status')? WORKBENCH_FLIGHT_PORT names it",
        ) from None
    except fl.FlightError as exc:
        raise QueryFailed(f"the Flight door: {_detail(exc)}") from None
    finally:
        client.close()


def _detail(exc: BaseException) -> str:
    """The server's message, without gRPC's wrapping (``... Detail: ...``)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for prefix in (
        "Flight returned unauthenticated error, with message: ",
        "Flight returned unauthorized error, with message: ",
        "Flight returned internal error, with message: ",
    ):
        text = text.removeprefix(prefix)
    return text.split(". gRPC client debug context")[0].split(". Detail:")[0]
