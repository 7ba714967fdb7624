"""The MQTT door's sessions and how one is admitted: a CONNECT authenticated as on Azure
IoT Hub (client id = device id, password = the device's SAS token, username = the device
id or ``{host}/{device_id}/?api-version=…``), or refused with the reason code."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ingest_service.gateway import mqtt_codec as codec
from ingest_service.gateway.validation import Problem
from workbench.exceptions import InvalidToken
from workbench.registry.keys import parse_sas_token

if TYPE_CHECKING:
    from ingest_service.gateway.mqtt import MqttDoor

__all__ = ["CONNECT_CODES", "RECEIVE_MAX", "Reply", "Session", "admit"]

RECEIVE_MAX = 64
"""QoS 1 publishes a connection may have awaiting their PUBACK (announced in CONNACK)."""
USERNAME = re.compile(r"^[^/]+/([^/]+)/(\?.*)?$")
CONNECT_CODES = {
    401: codec.ConnAck.BAD_USER_NAME_OR_PASSWORD,
    403: codec.ConnAck.NOT_AUTHORIZED,
    503: codec.ConnAck.SERVER_UNAVAILABLE,
}


@dataclasses.dataclass
class Reply:
    """What a connection writes next: bytes, and whether it closes after them."""

    data: bytes
    close: bool = False


class Session:
    """One device's connection after a successful CONNECT."""

    def __init__(
        self,
        door: MqttDoor,
        connect: codec.Connect,
        device_id: str,
        key_version: int,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.door = door
        self.version = connect.version
        self.device_id = device_id
        self.key_version = key_version
        self.keep_alive = connect.keep_alive
        self.writer = writer
        self.topic = f"devices/{device_id}/messages/events/"
        self.own_c2d = f"devices/{device_id}/messages/devicebound/#"
        self.replies: asyncio.Queue[Awaitable[Reply] | Reply] = asyncio.Queue(RECEIVE_MAX)
        self.reading: asyncio.Task[None] | None = None
        self.draining = False
        self.closed = False
        self.expiry: asyncio.TimerHandle | None = None

    def kick(self, code: int, reason: str) -> None:
        """Cut the session off now: DISCONNECT ``code`` (MQTT 5), close."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.write(codec.disconnect(self.version, code, reason=reason))
        self.writer.close()
        if self.reading is not None:
            self.reading.cancel()

    def drain(self) -> None:
        """Stop reading; what was read still gets its answer (see the module docstring)."""
        self.draining = True
        if self.reading is not None:
            self.reading.cancel()


async def admit(
    door: MqttDoor, connect: codec.Connect, writer: asyncio.StreamWriter, peer: object
) -> Session | None:
    """The session of an authenticated CONNECT (CONNACK sent), or None (refusal sent)."""
    version = connect.version

    def refuse(code: codec.ConnAck, problem: Problem) -> None:
        door.refused(problem, peer, connect.client_id or None)
        reason = problem.detail if version == 5 else None
        writer.write(codec.connack(version, code, reason=reason))

    if not connect.password:
        refuse(
            codec.ConnAck.BAD_USER_NAME_OR_PASSWORD,
            Problem(401, "missing_token", "send the device's SAS token as the password"),
        )
        return None
    now = time.time()
    try:
        token_text = connect.password.decode()
        entry = await door.gateway.authenticate(token_text, now=now)
    except UnicodeDecodeError:
        refuse(
            codec.ConnAck.BAD_USER_NAME_OR_PASSWORD,
            Problem(401, "malformed_token", "the password is not a UTF-8 SAS token"),
        )
        return None
    except Problem as problem:
        code = CONNECT_CODES.get(problem.status, codec.ConnAck.UNSPECIFIED_ERROR)
        refuse(code, problem)
        return None
    if connect.client_id != entry.device_id:
        refuse(
            codec.ConnAck.CLIENT_ID_NOT_VALID,
            Problem(
                403,
                "device_mismatch",
                f"client id {connect.client_id!r} is not the token's device {entry.device_id!r}",
            ),
        )
        return None
    user = connect.username
    match = USERNAME.match(user or "")
    if user != entry.device_id and (match is None or match.group(1) != entry.device_id):
        refuse(
            codec.ConnAck.BAD_USER_NAME_OR_PASSWORD,
            Problem(
                401,
                "bad_username",
                f"user name {user!r}: use the device id or "
                f"'{{host}}/{entry.device_id}/?api-version=…'",
            ),
        )
        return None
    session = Session(door, connect, entry.device_id, entry.key_version, writer)
    with contextlib.suppress(InvalidToken):
        expiry = parse_sas_token(token_text).expiry
        session.expiry = asyncio.get_running_loop().call_later(
            max(0.0, expiry - now),
            session.kick,
            0x87,
            "the SAS token expired; reconnect with a new one",
        )
    writer.write(
        codec.connack(
            version,
            codec.ConnAck.SUCCESS,
            receive_max=RECEIVE_MAX,
            max_packet=door.config.mqtt_max_packet,
        )
    )
    return session
