"""The legacy TCP adapter: frames of any translator plug-in in, canonical events out.

Per connection, frame by frame: read one byte, pick the translator whose
``first_byte`` it is, let it read and decode the frame, then authenticate,
admit, validate and produce exactly like the HTTP gateway, and answer
``ok(seq)`` only after the broker acknowledged. Every refusal is answered with
the translator's ``error(code, reason)`` and counted in ``/metrics``.

Draining (:meth:`LegacyAdapter.drain`): stop listening, close connections
that wait for their next frame, let a frame being handled get its answer,
then close that connection too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import time

from ingest_service.gateway.core import Gateway
from ingest_service.gateway.validation import Problem, validate_readings
from ingest_service.translators import FrameError, Translator, load_translators
from workbench.events import format_ts

__all__ = ["LegacyAdapter"]

logger = logging.getLogger(__name__)

_IDLE_TIMEOUT_S = 300.0


class LegacyAdapter:
    """An asyncio TCP server speaking every loaded translator's protocol."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._server: asyncio.Server | None = None
        self._idle: dict[asyncio.StreamWriter, bool] = {}  # open connections: waiting?
        self._draining = False
        self._closed = asyncio.Event()
        self.translators = load_translators()
        self._by_first = {bytes([t.first_byte]): t for t in self.translators.values()}
        for name in self.translators:
            gateway.metrics.declare_channel(name)

    async def start(
        self, host: str, port: int, *, sock: socket.socket | None = None
    ) -> asyncio.Server:
        """Listen on ``host:port``, or accept from ``sock`` (shared with sibling workers)."""
        if sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=sock, limit=4096)
        else:
            self._server = await asyncio.start_server(self._serve, host, port, limit=4096)
        return self._server

    async def drain(self, timeout: float) -> None:
        """Stop accepting and finish the frames in progress (at most ``timeout`` seconds)."""
        self._draining = True
        if self._server is not None:
            self._server.close()
        for writer, idle in list(self._idle.items()):
            if idle:
                writer.close()
        if self._idle:
            self._closed.clear()
            try:
                await asyncio.wait_for(self._closed.wait(), timeout)
            except TimeoutError:
                logger.warning("%d legacy connection(s) still busy; closing", len(self._idle))
                for writer in list(self._idle):
                    writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self._draining:
            writer.close()
            return
        self._idle[writer] = True
        try:
            while not self._draining:
                try:
                    first = await asyncio.wait_for(reader.read(1), _IDLE_TIMEOUT_S)
                except TimeoutError:
                    break
                if not first:
                    break
                if first in b"\r\n":
                    continue  # tolerate blank lines between FBK1 frames
                self._idle[writer] = False
                keep_open = await self._one(first, reader, writer)
                await writer.drain()
                self._idle[writer] = True
                if not keep_open:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            logger.exception("legacy connection from %s failed", peer)
        finally:
            self._idle.pop(writer, None)
            if not self._idle:
                self._closed.set()
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _one(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Handle one frame; False when the connection must be closed."""
        gw = self.gateway
        translator: Translator | None = self._by_first.get(first)
        started = time.perf_counter()
        if translator is None:
            self._refuse("unknown", Problem(400, "unknown_protocol", "no translator"), writer)
            return False
        protocol = translator.name
        try:
            frame = await translator.read_frame(reader, first)
            decoded = translator.decode(frame)
        except FrameError as exc:
            self._refuse(protocol, Problem(exc.code, exc.reason, str(exc)), writer, translator)
            return not exc.fatal
        try:
            entry = gw.authenticate_frame(
                decoded.device_id, decoded.signed, decoded.signature, protocol
            )
            received = dt.datetime.now(dt.UTC)
            if (decoded.ts - received).total_seconds() > gw.config.gateway_max_future_s:
                raise Problem(422, "invalid", "ts too far in the future")
            readings = validate_readings(decoded.readings)
            records = gw.records(entry, [(format_ts(decoded.ts), decoded.seq, readings)], received)
            await gw.producer.send_all(records)
        except Problem as problem:
            self._refuse(protocol, problem, writer, translator)
            return True
        gw.metrics.accepted.labels(protocol).inc()
        gw.metrics.legacy_frames.labels(protocol, "ok").inc()
        gw.metrics.latency.labels(protocol).observe(time.perf_counter() - started)
        writer.write(translator.ok(decoded.seq))
        return True

    def _refuse(
        self,
        protocol: str,
        problem: Problem,
        writer: asyncio.StreamWriter,
        translator: Translator | None = None,
    ) -> None:
        self.gateway.reject(protocol, problem)
        self.gateway.metrics.legacy_frames.labels(protocol, "err").inc()
        if translator is None:
            writer.write(f"ERR {problem.status} {problem.reason}\n".encode())
        else:
            writer.write(translator.error(problem.status, problem.reason))
