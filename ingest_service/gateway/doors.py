"""What keeps a door usable under slow or greedy clients: connection caps and read timeouts.

Each worker serves at most ``WORKBENCH_GATEWAY_MAX_CONNECTIONS`` connections per door
(HTTP, legacy TCP). One more is answered at once and closed: on HTTP with ``503``
problem+json and ``Retry-After: 1``, on the legacy door with ``ERR 503
too_many_connections``; both counted in ``gateway_rejected_total`` and the open ones in
``gateway_open_connections``.

On HTTP, ``WORKBENCH_GATEWAY_READ_TIMEOUT`` bounds how long a connection may wait for
its next complete request head (from connecting, or from the previous answer): a client
that trickles or stalls a request line or headers, or just holds the connection open,
is disconnected after it. A body that stalls is answered ``408`` (see
:mod:`ingest_service.gateway.http`); a stalled legacy frame gets ``ERR 408
read_timeout`` (:mod:`ingest_service.gateway.legacy`).

The HTTP door is aiohttp's request handler with three changes, which is why it has its
own site (listening socket) and protocol factory: it counts its connection, it answers
HTTP parse errors (bytes aiohttp cannot read as a request) as problem+json counted in
``gateway_unreadable_requests_total`` instead of a plain-text page, and the factory
refuses connections beyond the cap.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from http import HTTPStatus
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod

from ingest_service.gateway.core import Gateway
from ingest_service.gateway.http import problem_response
from ingest_service.gateway.validation import Problem

__all__ = ["ConnectionCount", "HttpSite"]

logger = logging.getLogger(__name__)

_REFUSAL_LINGER_S = 2.0  # keep reading a refused client's request so it gets the 503, not RST
_MAX_DETAIL = 300


class StreamDoor:
    """A door over plain TCP streams (the legacy and MQTT doors): one task per connection
    (:meth:`serve`), listening on its own port or on a socket shared with sibling
    workers."""

    _server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one connection until it ends."""
        raise NotImplementedError

    async def start(
        self, host: str, port: int, *, sock: socket.socket | None = None
    ) -> asyncio.Server:
        """Listen on ``host:port``, or accept from ``sock`` (shared with sibling workers)."""
        if sock is not None:
            self._server = await asyncio.start_server(self.serve, sock=sock, limit=4096)
        else:
            self._server = await asyncio.start_server(self.serve, host, port, limit=4096)
        return self._server


class ConnectionCount:
    """The open connections of one door in this worker, against the cap."""

    def __init__(self, gateway: Gateway, door: str) -> None:
        self.gateway = gateway
        self.door = door
        self.limit = gateway.config.gateway_max_connections
        self.open = 0
        self._gauge = gateway.metrics.connections.labels(door)

    def full(self) -> bool:
        """True when one more connection would exceed the cap."""
        return self.open >= self.limit

    def opened(self) -> None:
        self.open += 1
        self._gauge.inc()

    def closed(self) -> None:
        self.open -= 1
        self._gauge.dec()

    def refuse(self, channel: str) -> Problem:
        """Count one refused connection; the problem to answer it with."""
        problem = Problem(
            503,
            "too_many_connections",
            f"this gateway worker already serves {self.limit} {self.door} connections "
            "(WORKBENCH_GATEWAY_MAX_CONNECTIONS); retry later",
            retry_after=1,
        )
        self.gateway.reject(channel, problem)
        return problem


def _raw_response(problem: Problem) -> bytes:
    """``problem`` as a whole HTTP/1.1 response that closes the connection."""
    body = orjson.dumps(problem.body())
    head = (
        f"HTTP/1.1 {problem.status} {HTTPStatus(problem.status).phrase}\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {problem.retry_after or 1}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Refused(asyncio.Protocol):
    """A connection beyond the cap: answered at once, its input drained briefly, closed."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio subclasses
        transport.write(self._response)
        if transport.can_write_eof():
            transport.write_eof()
        # closing with the client's request unread would reset the connection and could
        # destroy the answer before the client reads it
        self._timer = asyncio.get_running_loop().call_later(_REFUSAL_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request of a refused client is not read

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _Handler(web.RequestHandler):
    """aiohttp's request handler, counted, and answering parse errors as problem+json."""

    def __init__(self, manager: web.Server, *, count: ConnectionCount, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._count = count
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._count.opened()
        self._counted = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._count.closed()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer is under way: aiohttp drops the line
            return super().handle_error(request, status, exc, message)
        metrics = self._count.gateway.metrics
        if status >= 500:
            logger.error("HTTP request from %s failed", request.remote, exc_info=exc)
            problem = Problem(status, "internal_error", "the gateway failed; see its log")
            self._count.gateway.reject("http", problem)
        else:
            log = logger.debug if isinstance(exc, BadHttpMethod) else logger.info
            detail = message or (str(exc) if exc is not None else HTTPStatus(status).phrase)
            log("unreadable HTTP request from %s: %s", request.remote, detail)
            detail = " ".join(detail.split())[:_MAX_DETAIL]
            problem = Problem(status, "malformed_http", f"not a readable HTTP request: {detail}")
            # apart from gateway_rejected_total: internet noise must not drown device refusals
            metrics.unreadable.labels(str(status)).inc()
        response = problem_response(problem)
        response.force_close()
        return response


class HttpSite(web.BaseSite):
    """The HTTP door: ``sock`` (inherited from the parent) or a new socket on host:port."""

    def __init__(
        self,
        runner: web.AppRunner,
        gateway: Gateway,
        *,
        sock: socket.socket | None,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._gateway = gateway
        self._sock = sock
        self._count = ConnectionCount(gateway, "http")

    @property
    def name(self) -> str:
        config = self._gateway.config
        return f"http://{config.host}:{config.gateway_port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        count = self._count
        read_timeout = self._gateway.config.gateway_read_timeout

        def protocol() -> asyncio.BaseProtocol:
            if count.full():
                return _Refused(_raw_response(count.refuse("http")))
            # keepalive_timeout: aiohttp closes a connection still waiting for a complete
            # request head that long after connecting or answering, however it trickles
            return _Handler(
                server, count=count, loop=loop, keepalive_timeout=read_timeout, access_log=None
            )

        config = self._gateway.config
        if self._sock is not None:
            self._server = await loop.create_server(
                protocol, sock=self._sock, backlog=self._backlog
            )
        else:
            self._server = await loop.create_server(
                protocol, config.host, config.gateway_port, backlog=self._backlog
            )
