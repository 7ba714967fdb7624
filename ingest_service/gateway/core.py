"""What the HTTP gateway and the legacy adapter share: authenticate, check, enrich, produce."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from ingest_service.gateway.devices import DeviceCache, DeviceEntry
from ingest_service.gateway.metrics import GatewayMetrics
from ingest_service.gateway.producer import AsyncProducer
from ingest_service.gateway.validation import Problem
from workbench.config import Config
from workbench.events import encode_event, format_ts
from workbench.exceptions import InvalidToken
from workbench.registry.keys import parse_sas_token, verify_sas_token

__all__ = ["Gateway"]


class Gateway:
    """The gateway's state: registry view, producer and metrics."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.devices = DeviceCache(config)
        self.producer = AsyncProducer(config)
        self.metrics = GatewayMetrics()
        self.metrics.declare_channel("http")

    def _device(self, device_id: str) -> DeviceEntry:
        entry = self.devices.get(device_id)
        if entry is None:
            raise Problem(403, "unknown_device", f"device {device_id!r} is not provisioned")
        return entry

    def _admit(self, entry: DeviceEntry, protocol: str) -> None:
        if entry.status != "provisioned":
            raise Problem(403, entry.status, f"device {entry.device_id!r} is {entry.status}")
        if entry.protocol != protocol:
            raise Problem(
                403,
                "protocol_mismatch",
                f"device {entry.device_id!r} is provisioned for {entry.protocol}, not {protocol}",
            )

    def authenticate(self, authorization: str | None, *, now: float) -> DeviceEntry:
        """The HTTP device named by a valid SAS token, or raise 401/403."""
        if not authorization:
            raise Problem(401, "missing_token", "send Authorization: SharedAccessSignature ...")
        try:
            token = parse_sas_token(authorization)
        except InvalidToken as exc:
            raise Problem(401, "malformed_token", exc.message) from None
        entry = self._device(token.device_id)
        failure = verify_sas_token(token, self.devices.key(entry), now=now)
        if failure == "bad_signature":
            raise Problem(401, "bad_signature", "the token's signature does not match the key")
        if failure == "expired":
            raise Problem(401, "expired", "the token has expired; sign a new one")
        self._admit(entry, "http")
        return entry

    def authenticate_frame(
        self, device_id: str, signed: bytes, signature: bytes, protocol: str
    ) -> DeviceEntry:
        """The legacy device whose key signed ``signed``, or raise 401/403."""
        entry = self._device(device_id)
        expected = hmac.new(self.devices.key(entry), signed, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise Problem(401, "bad_signature", "the frame's signature does not match the key")
        self._admit(entry, protocol)
        return entry

    @staticmethod
    def records(
        entry: DeviceEntry,
        events: Iterable[tuple[str, int, dict[str, Any]]],
        received_at: dt.datetime,
    ) -> list[tuple[bytes, bytes]]:
        """Kafka ``(key, value)`` records per :mod:`workbench.events`."""
        key = entry.device_id.encode()
        stamp = format_ts(received_at)
        return [
            (
                key,
                encode_event(
                    {
                        "device_id": entry.device_id,
                        "seq": seq,
                        "ts": ts,
                        "received_at": stamp,
                        "tenant_id": entry.tenant_id,
                        "building_id": entry.building_id,
                        "floor": entry.floor,
                        "room": entry.room,
                        "device_type": entry.device_type,
                        "protocol": entry.protocol,
                        "readings": readings,
                    }
                ),
            )
            for ts, seq, readings in events
        ]

    def reject(self, channel: str, problem: Problem) -> None:
        """Count a refusal."""
        self.metrics.rejected.labels(channel, str(problem.status), problem.reason).inc()
