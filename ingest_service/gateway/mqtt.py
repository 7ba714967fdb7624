"""The MQTT door: devices connect as to Azure IoT Hub and publish telemetry (3.1.1 and 5).

**Connecting** (IoT Hub's scheme, so its device SDKs and any MQTT client work): client
id = device id, password = the device's SAS token (the one the HTTP door takes),
username = the device id or IoT Hub's ``{host}/{device_id}/?api-version=…``. The token
is checked exactly as on HTTP (:meth:`Gateway.authenticate`); a refusal is a CONNACK with
the reason code (MQTT 5) or return code (3.1.1) and the connection is closed.

**Publishing**: on ``devices/{device_id}/messages/events/`` (anything after it, IoT
Hub's property bag, is ignored), a JSON payload as the HTTP door's body (one event or
``{"events": [...]}``), with the same validation, registry stamping and Kafka producer.
A QoS 1 PUBACK is sent **only after Kafka acknowledged** every record of the publish:
QoS 1 means "stored in Kafka". PUBACKs leave in the order the publishes came (MQTT
4.6.0-2) while several are produced at once (at most :data:`RECEIVE_MAX` per
connection, the Receive Maximum the CONNACK announces).

**Refusals**, each counted in ``gateway_rejected_total{channel="mqtt"}`` and logged:

* a publish the door refuses for good (another device's topic, an invalid event): on
  MQTT 5 a PUBACK with the reason code (QoS 1) or a DISCONNECT with it (QoS 0); on
  3.1.1, which has no reason codes, the connection is closed. Nothing is stored.
* a publish that could not be stored *now* (broker unavailable, overload): DISCONNECT
  ``0x89`` server busy / ``0x97`` quota exceeded (3.1.1: closed) and no PUBACK, so the
  client re-sends it after reconnecting; the processor's ``(device_id, seq)``
  de-duplication stores a re-sent event once.
* a subscription to anything but the device's own cloud-to-device topic
  (``devices/{id}/messages/devicebound/#``, granted but never delivered to): a SUBACK
  failure (``0x87`` not authorized; 3.1.1 ``0x80``).
* bytes that are no MQTT, a packet larger than ``WORKBENCH_MQTT_MAX_PACKET``, a protocol
  level other than 3.1.1/5, QoS 2, retained messages, topic aliases: the reason code
  in a DISCONNECT (MQTT 5) or CONNACK, then the connection is closed.

**Revocation**: when the registry view changes (:attr:`Gateway.change_listeners`), a
connected device that is disabled, de-provisioned or whose key was rotated gets
DISCONNECT ``0x87`` not authorized (3.1.1: closed) before this worker reports the
version applied, so the revoking command returns only once it is cut off. A session
also ends when its SAS token expires, and a second connection of the same device to
the same worker takes over the first (``0x8E``).

**Draining** (a rolling restart): stop accepting, stop reading each connection, let the
publishes being produced get their PUBACKs, then DISCONNECT ``0x8B`` server shutting
down; unacknowledged publishes are re-sent by the clients to the next worker.

Sessions are not persisted (CONNACK session present = 0): QoS 1 re-sending is the
client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import socket
import ssl
import time
from typing import Any

from ingest_service.gateway import mqtt_codec as codec
from ingest_service.gateway.core import Gateway
from ingest_service.gateway.doors import ConnectionCount, StreamDoor
from ingest_service.gateway.mqtt_session import RECEIVE_MAX, Reply, Session, admit
from ingest_service.gateway.validation import Problem, validate_body
from workbench.registry.feed import Changes

__all__ = ["RECEIVE_MAX", "MqttDoor"]

logger = logging.getLogger(__name__)

_LOG_EVERY_S = 10.0  # one log line per refusal reason per this many seconds
_EVENTS_TOPIC = re.compile(r"^devices/([^/]+)/messages/events/")

# what a gateway Problem becomes: (MQTT 5 reason code, final?) — a final refusal is
# answered in a PUBACK (QoS 1); one that may pass later disconnects so the client re-sends
_PUBLISH_CODES = {
    400: (0x99, True),  # payload format invalid
    403: (0x87, True),  # not authorized
    413: (0x97, True),  # quota exceeded (a batch too large)
    422: (0x99, True),
    429: (0x97, False),
    503: (0x89, False),  # server busy
}


class MqttDoor(StreamDoor):
    """The MQTT listener of one gateway worker."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self._connections = ConnectionCount(gateway, "mqtt")
        self._connections.limit = self.config.mqtt_max_connections
        self._sessions: dict[str, Session] = {}
        self._open: set[asyncio.Task[None]] = set()
        self._draining = False
        self._logged: dict[str, float] = {}
        self._tls_server: asyncio.Server | None = None
        gateway.metrics.declare_channel("mqtt")
        gateway.change_listeners.append(self.registry_changed)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    async def start_tls(
        self, host: str, port: int, context: ssl.SSLContext, *, sock: socket.socket | None
    ) -> None:
        """Also listen for MQTT over TLS (see :mod:`ingest_service.gateway.tls`). The loop
        does the handshake before :meth:`serve` sees the connection: a handshake started
        on a plain stream would lose the bytes it had already read."""
        where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
        self._tls_server = await asyncio.start_server(
            self.serve,
            limit=4096,
            ssl=context,
            ssl_handshake_timeout=self.config.gateway_read_timeout,
            **where,
        )

    async def drain(self, timeout: float) -> None:
        """Stop accepting; answer what was read, then DISCONNECT 0x8B every session."""
        self._draining = True
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        for session in list(self._sessions.values()):
            session.drain()
        if self._open:
            _done, pending = await asyncio.wait(list(self._open), timeout=timeout)
            if pending:
                logger.warning("%d MQTT connection(s) still busy; closing", len(pending))
                for task in pending:
                    task.cancel()

    # --- refusals ---------------------------------------------------------------------------

    def refused(
        self, problem: Problem, peer: object, device: str | None = None, *, session: bool = False
    ) -> None:
        """Count and log a refusal; ``session``: ``device`` is the authenticated session's
        (its refusals count against its building)."""
        entry = self.gateway.devices.get(device) if session and device else None
        self.gateway.reject("mqtt", problem, entry)
        now = time.monotonic()
        if now - self._logged.get(problem.reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[problem.reason] = now
            logger.info(
                "MQTT %s from %s%s: %s",
                problem.reason,
                peer,
                f" ({device})" if device else "",
                problem.detail,
            )

    # --- registry changes ---------------------------------------------------------------

    def registry_changed(self, changes: Changes) -> None:
        """Disconnect every session whose device the registry no longer admits."""
        if changes.resync:
            affected = list(self._sessions)
        else:
            affected = [d for d in (*changes.devices, *changes.deleted) if d in self._sessions]
        for device_id in affected:
            session = self._sessions.get(device_id)
            if session is None:
                continue
            refusal = self.gateway.session_refusal(device_id, session.key_version)
            if refusal is None:
                continue
            why = refusal.reason
            detail = f"device {device_id!r}: {why.replace('_', ' ')}; the session is closed"
            self.refused(Problem(403, why, detail), "registry", device_id)
            session.kick(0x87, detail)

    # --- one connection ---------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        if self._draining:
            writer.close()
            return
        if self._connections.full():
            problem = Problem(
                503,
                "too_many_connections",
                f"this gateway worker already serves {self._connections.limit} MQTT "
                "connections (WORKBENCH_MQTT_MAX_CONNECTIONS)",
            )
            self.refused(problem, peer)
            writer.close()
            return
        self._connections.opened()
        self._open.add(task)
        try:
            await self._connection(reader, writer, peer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("MQTT connection from %s failed", peer)
        finally:
            self._open.discard(task)
            self._connections.closed()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        config = self.config
        timeout = config.gateway_read_timeout
        try:
            async with asyncio.timeout(timeout):
                first = await reader.read(1)
                if not first:
                    return  # a port probe (the supervisor's health check): not a refusal
                if first != b"\x10":  # no CONNECT: do not wait for a length of garbage
                    raise codec.PacketError(
                        "protocol_error",
                        0x82,
                        f"the first packet must be CONNECT, not byte {first[0]:#04x}",
                    )
                raw = await codec.read_packet(reader, max_size=config.mqtt_max_packet, first=first)
            connect = codec.decode_connect(raw)
        except TimeoutError:
            problem = Problem(408, "read_timeout", f"no CONNECT within {timeout:g} s of connecting")
            self.refused(problem, peer)
            return
        except codec.PacketError as exc:
            self.refused(Problem(400, exc.reason, exc.detail), peer)
            if exc.reason == "unsupported_protocol_version":  # answered in 3.1.1's form
                writer.write(codec.connack(4, codec.ConnAck.UNSUPPORTED_PROTOCOL_VERSION))
            return
        session = await self._admit(connect, writer, peer)
        if session is None:
            await writer.drain()
            return
        old = self._sessions.get(session.device_id)
        if old is not None:
            old.kick(0x8E, "another connection of this device took the session over")
        self._sessions[session.device_id] = session
        session.reading = asyncio.current_task()
        if self._draining:  # connected while the worker began draining: send it on
            session.drain()
        writing = asyncio.create_task(self._write(session), name="mqtt-write")
        try:
            await self._read(session, reader, peer)
        except asyncio.CancelledError:
            if not session.draining or session.closed:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await session.replies.put(
                Reply(codec.disconnect(session.version, 0x8B, reason="server shutting down"), True)
            )
        except (asyncio.IncompleteReadError, ConnectionError):
            await session.replies.put(Reply(b"", True))
        finally:
            session.reading = None  # from here on, only the writer closes the connection
            if self._sessions.get(session.device_id) is session:
                del self._sessions[session.device_id]
            if session.expiry is not None:
                session.expiry.cancel()
            if session.closed:
                writing.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await writing

    async def _admit(
        self, connect: codec.Connect, writer: asyncio.StreamWriter, peer: object
    ) -> Session | None:
        """The session of an authenticated CONNECT (CONNACK sent), or None (refusal sent)."""
        return await admit(self, connect, writer, peer)

    async def _read(self, session: Session, reader: asyncio.StreamReader, peer: object) -> None:
        """Read packets until the device disconnects or breaks a rule (then queue the
        reply that closes the connection)."""
        config = self.config
        version = session.version
        # MQTT 3.1.2.10: no packet for 1.5 x the keep alive the client chose ends it
        idle = 1.5 * session.keep_alive if session.keep_alive else None
        while True:
            try:
                async with asyncio.timeout(idle):
                    first = await reader.read(1)
            except TimeoutError:
                self.refused(
                    Problem(408, "keep_alive_timeout", "no packet within 1.5 x keep alive"),
                    peer,
                    session.device_id,
                )
                await session.replies.put(
                    Reply(codec.disconnect(version, 0x8D, reason="keep alive timeout"), True)
                )
                return
            if not first:
                await session.replies.put(Reply(b"", True))
                return
            try:
                async with asyncio.timeout(config.gateway_read_timeout):
                    raw = await codec.read_packet(
                        reader, max_size=config.mqtt_max_packet, first=first
                    )
                packet = codec.decode(raw, version)
            except TimeoutError:
                problem = Problem(408, "read_timeout", "a packet did not arrive whole in time")
                await self._close_with(session, problem, 0x81, peer)
                return
            except codec.PacketError as exc:
                await self._close_with(
                    session, Problem(400, exc.reason, exc.detail), exc.code, peer
                )
                return
            if isinstance(packet, codec.Publish):
                if not await self._publish(session, packet, peer):
                    return
            elif isinstance(packet, codec.Subscribe):
                await session.replies.put(self._subscribe(session, packet, peer))
            elif isinstance(packet, codec.Unsubscribe):
                data = codec.unsuback(version, packet.packet_id, len(packet.filters))
                await session.replies.put(Reply(data))
            elif isinstance(packet, codec.PingReq):
                await session.replies.put(Reply(codec.pingresp()))
            elif isinstance(packet, codec.Disconnect):
                await session.replies.put(Reply(b"", True))
                return
            elif isinstance(packet, codec.PubAck):
                pass  # nothing is ever sent to a device at QoS 1: ignore
            else:
                problem = Problem(
                    400,
                    "protocol_error",
                    f"packet type {packet.kind} is not accepted from a device here",
                )
                await self._close_with(session, problem, 0x82, peer)
                return

    async def _close_with(
        self, session: Session, problem: Problem, code: int, peer: object
    ) -> None:
        self.refused(problem, peer, session.device_id)
        reason = problem.detail[:200]
        await session.replies.put(
            Reply(codec.disconnect(session.version, code, reason=reason), True)
        )

    async def _publish(self, session: Session, packet: codec.Publish, peer: object) -> bool:
        """Queue the publish's answer; False when the connection is to be closed."""
        unsupported = None
        if packet.qos == 2:
            unsupported = (0x9B, "qos_not_supported", "QoS 2 is not supported (at most 1)")
        elif packet.retain:
            unsupported = (0x9A, "retain_not_supported", "retained messages are not supported")
        elif packet.topic_alias is not None:
            unsupported = (0x94, "topic_alias_invalid", "topic aliases are not supported")
        if unsupported is not None:
            code, reason, detail = unsupported
            await self._close_with(session, Problem(400, reason, detail), code, peer)
            return False
        if not packet.topic.startswith(session.topic):
            other = _EVENTS_TOPIC.match(packet.topic)
            if other is not None:
                problem = Problem(
                    403,
                    "topic_not_authorized",
                    f"{session.device_id!r} may not publish on {other.group(1)!r}'s topic",
                )
            else:
                problem = Problem(
                    403,
                    "topic_not_authorized",
                    f"publish telemetry on {session.topic!r}, not {packet.topic[:100]!r}",
                )
            reply = self._refuse_publish(session, packet, problem, peer)
            await session.replies.put(reply)
            return not reply.close
        await session.replies.put(asyncio.ensure_future(self._store(session, packet, peer)))
        return True

    def _refuse_publish(
        self, session: Session, packet: codec.Publish, problem: Problem, peer: object
    ) -> Reply:
        """Count and log a refused publish; its answer: a PUBACK with the reason code
        (MQTT 5, QoS 1, a final refusal), else the DISCONNECT that closes."""
        self.refused(problem, peer, session.device_id, session=True)
        code, final = _PUBLISH_CODES.get(problem.status, (0x80, True))
        reason = problem.detail[:200]
        if session.version == 5 and final and packet.qos == 1 and packet.packet_id is not None:
            return Reply(codec.puback(5, packet.packet_id, code, reason=reason))
        return Reply(codec.disconnect(session.version, code, reason=reason), True)

    async def _store(self, session: Session, packet: codec.Publish, peer: object) -> Reply:
        """Validate and produce one publish; its PUBACK (or the reply that closes)."""
        gw = self.gateway
        started = time.perf_counter()
        try:
            if gw.session_refusal(session.device_id, session.key_version) is not None:
                raise Problem(403, "not_authorized", "the device's credentials were revoked")
            entry = gw.devices.get(session.device_id)
            assert entry is not None  # admitted just above
            received = dt.datetime.now(dt.UTC)
            valid = validate_body(
                packet.payload,
                device_id=session.device_id,
                now=received,
                max_future_s=self.config.gateway_max_future_s,
                max_batch=self.config.gateway_max_batch,
            )
            await gw.producer.send_all(gw.records(entry, valid, received, protocol="mqtt"))
        except Problem as problem:
            return self._refuse_publish(session, packet, problem, peer)
        gw.metrics.accepted.labels("mqtt").inc(len(valid))
        gw.metrics.latency.labels("mqtt").observe(time.perf_counter() - started)
        if packet.qos == 0 or packet.packet_id is None:
            return Reply(b"")
        return Reply(codec.puback(session.version, packet.packet_id))

    def _subscribe(self, session: Session, packet: codec.Subscribe, peer: object) -> Reply:
        codes = []
        for pattern in packet.filters:
            if pattern == session.own_c2d:
                codes.append(1)
                continue
            codes.append(0x87)
            self.refused(
                Problem(
                    403,
                    "subscribe_not_authorized",
                    f"a device may subscribe only to {session.own_c2d!r}, not {pattern[:100]!r}",
                ),
                peer,
                session.device_id,
            )
        return Reply(codec.suback(session.version, packet.packet_id, codes))

    async def _write(self, session: Session) -> None:
        """Send the replies in the order their packets came; close after a closing one."""
        writer = session.writer
        while True:
            item = await session.replies.get()
            reply = item if isinstance(item, Reply) else await item
            if session.closed:
                return
            if reply.data:
                writer.write(reply.data)
                await writer.drain()
            if reply.close:
                session.closed = True
                writer.close()
                if session.reading is not None and not session.draining:
                    session.reading.cancel()  # stop reading a connection being closed
                return
