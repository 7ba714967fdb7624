"""The legacy TCP adapter: frames of any translator plug-in in, canonical events out.

Per connection, frame by frame: read one byte, pick the translator whose
``first_byte`` it is, let it read and decode the frame, then authenticate,
admit, validate and produce exactly like the HTTP gateway, and answer
``ok(seq)`` only after the broker acknowledged. Every refusal is answered with
the translator's ``error(code, reason)`` and counted in ``/metrics``.

Frames carry no nonce, so two rules stand in for one (:mod:`ingest_service.gateway.replay`):
a frame's ``ts`` must be within ``WORKBENCH_LEGACY_MAX_AGE`` behind the gateway clock
(``ERR 422 stale``), besides the HTTP door's rule (not before 2000, not more than
``WORKBENCH_GATEWAY_MAX_FUTURE`` ahead: ``ERR 422 invalid``); and an exact copy of an
accepted frame inside that window is refused with ``ERR 409 replay`` (to a device
retrying after a lost ``OK``, it means: already stored).

A frame must arrive whole within ``WORKBENCH_GATEWAY_READ_TIMEOUT`` of its first byte
(``ERR 408 read_timeout``, then the connection is closed); a connection waiting for its
next frame may stay idle for :data:`_IDLE_TIMEOUT_S`. Beyond
``WORKBENCH_GATEWAY_MAX_CONNECTIONS`` open connections a new one gets
``ERR 503 too_many_connections`` and is closed.

Draining (:meth:`LegacyAdapter.drain`): stop listening, close connections
that wait for their next frame, let a frame being handled get its answer,
then close that connection too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time

from ingest_service.gateway.core import Gateway
from ingest_service.gateway.doors import ConnectionCount, StreamDoor
from ingest_service.gateway.replay import ReplayGuard, fingerprint
from ingest_service.gateway.validation import Problem, check_frame_ts, validate_readings
from ingest_service.translators import FrameError, LegacyFrame, Translator, load_translators
from workbench.events import format_ts
from workbench.registry.records import DeviceEntry

__all__ = ["LegacyAdapter"]

logger = logging.getLogger(__name__)

_IDLE_TIMEOUT_S = 300.0
_FULL_LOG_EVERY_S = 60.0
_LEASE_MARGIN_S = 2.0  # as the drain: a frame is answered within the ack timeout + 2 s


class LegacyAdapter(StreamDoor):
    """An asyncio TCP server speaking every loaded translator's protocol."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        config = gateway.config
        # a file: sibling workers and the next start of the gateway see the same memory
        self.replays = ReplayGuard(
            config.run_dir / "gateway-replay", slots=config.legacy_replay_slots
        )
        self._connections = ConnectionCount(gateway, "legacy")
        self._full_logged = 0.0
        self._idle: dict[asyncio.StreamWriter, bool] = {}  # open connections: waiting?
        self._draining = False
        self._closed = asyncio.Event()
        self.translators = load_translators()
        self._by_first = {bytes([t.first_byte]): t for t in self.translators.values()}
        for name in self.translators:
            gateway.metrics.declare_channel(name)

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

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self._draining:
            writer.close()
            return
        if self._connections.full():
            problem = self._connections.refuse("legacy")
            writer.write(f"ERR {problem.status} {problem.reason}\n".encode())
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()
            return
        self._connections.opened()
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
            self._connections.closed()
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
        timeout = gw.config.gateway_read_timeout
        try:
            async with asyncio.timeout(timeout):
                frame = await translator.read_frame(reader, first)
            decoded = translator.decode(frame)
        except FrameError as exc:
            self._refuse(protocol, Problem(exc.code, exc.reason, str(exc)), writer, translator)
            return not exc.fatal
        except TimeoutError:  # the stream is out of step: answer, then close
            problem = Problem(
                408,
                "read_timeout",
                f"the frame did not arrive within {timeout:g} s (WORKBENCH_GATEWAY_READ_TIMEOUT)",
            )
            self._refuse(protocol, problem, writer, translator)
            return False
        claimed: int | None = None
        sender: DeviceEntry | None = None  # authenticated: its refusals count
        try:
            entry = sender = await gw.authenticate_frame(
                decoded.device_id, decoded.signed, decoded.signature, protocol
            )
            received = dt.datetime.now(dt.UTC)
            check_frame_ts(
                decoded.ts,
                now=received,
                max_future_s=gw.config.gateway_max_future_s,
                max_age_s=gw.config.legacy_max_age,
            )
            readings = validate_readings(decoded.readings)
            claimed = self._claim(decoded, received)
            records = gw.records(
                entry,
                [(format_ts(decoded.ts), decoded.seq, readings)],
                received,
                protocol=protocol,
            )
            await gw.producer.send_all(records)
            max_age_ms = int(gw.config.legacy_max_age * 1000)
            self.replays.confirm(
                claimed, until_ms=_ms(decoded.ts) + max_age_ms, now_ms=_ms(dt.datetime.now(dt.UTC))
            )
        except Problem as problem:
            if claimed is not None:  # not stored: the device's resend must pass
                self.replays.release(claimed, now_ms=_ms(dt.datetime.now(dt.UTC)))
            self._refuse(protocol, problem, writer, translator, sender)
            return True
        except BaseException:
            if claimed is not None:
                self.replays.release(claimed, now_ms=_ms(dt.datetime.now(dt.UTC)))
            raise
        gw.metrics.accepted.labels(protocol).inc()
        gw.metrics.legacy_frames.labels(protocol, "ok").inc()
        gw.metrics.latency.labels(protocol).observe(time.perf_counter() - started)
        writer.write(translator.ok(decoded.seq))
        return True

    def _claim(self, frame: LegacyFrame, now: dt.datetime) -> int:
        """Claim ``frame`` in the replay memory while it is produced; its fingerprint, or
        raise 409 (an exact replay), or 503 (a copy is being produced, or no room)."""
        fp = fingerprint(frame.device_id, frame.signature)
        # a claim outlives the longest a produce may take, and lapses if this worker dies
        lease_ms = int((self.gateway.config.gateway_ack_timeout + _LEASE_MARGIN_S) * 1000)
        claim = self.replays.claim(fp, lease_until_ms=_ms(now) + lease_ms, now_ms=_ms(now))
        if claim == "replay":
            raise Problem(
                409,
                "replay",
                f"this exact frame was accepted already (seq {frame.seq}); it is not stored twice",
            )
        if claim == "pending":
            raise Problem(
                503,
                "replay_pending",
                "the same frame is being stored right now; retry to learn its outcome",
                retry_after=1,
            )
        if claim == "full":
            if time.monotonic() - self._full_logged > _FULL_LOG_EVERY_S:
                self._full_logged = time.monotonic()
                logger.warning(
                    "legacy replay memory full around a frame of %s: frames are refused (503) "
                    "until older ones turn stale; raise WORKBENCH_LEGACY_REPLAY_SLOTS",
                    frame.device_id,
                )
            raise Problem(
                503,
                "replay_memory_full",
                "the gateway cannot remember this frame to refuse its replays; retry later",
                retry_after=1,
            )
        return fp

    def close(self) -> None:
        """Release the replay memory."""
        self.replays.close()

    def _refuse(
        self,
        protocol: str,
        problem: Problem,
        writer: asyncio.StreamWriter,
        translator: Translator | None = None,
        sender: DeviceEntry | None = None,
    ) -> None:
        self.gateway.reject(protocol, problem, sender)
        self.gateway.metrics.legacy_frames.labels(protocol, "err").inc()
        if translator is None:
            writer.write(f"ERR {problem.status} {problem.reason}\n".encode())
        else:
            writer.write(translator.error(problem.status, problem.reason))


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)
