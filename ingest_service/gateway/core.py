"""What the HTTP gateway and the legacy adapter share: authenticate, check, enrich, produce.

Two caches keep the per-request work small; both are emptied whenever the
registry's Delta version moves (a key rotation, a disable or a
de-provisioning is a new version), so they never outlive a registry change:

* verified SAS tokens: the ``Authorization`` header text -> ``(device, expiry)``,
  kept for at most :data:`TOKEN_CACHE_TTL_S` and never past the token's own
  expiry, in an LRU of :data:`TOKEN_CACHE_SIZE` entries; a hit skips parsing
  and the HMAC, the device's status is still checked on every request;
* each device's constant part of the Kafka record (tenant, building, floor,
  room, type, protocol) as pre-encoded JSON bytes.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from ingest_service.gateway.devices import DeviceCache, DeviceEntry
from ingest_service.gateway.metrics import GatewayMetrics
from ingest_service.gateway.pipeline import PipelineMetrics
from ingest_service.gateway.producer import AsyncProducer
from ingest_service.gateway.validation import Problem
from workbench.config import Config
from workbench.events import format_ts
from workbench.exceptions import InvalidToken
from workbench.registry.keys import parse_sas_token, verify_sas_token

__all__ = ["TOKEN_CACHE_SIZE", "TOKEN_CACHE_TTL_S", "Gateway"]

TOKEN_CACHE_SIZE = 65536
"""Verified tokens remembered per worker (LRU)."""
TOKEN_CACHE_TTL_S = 300.0
"""How long a verified token is trusted without re-checking its HMAC (registry changes
empty the cache at once)."""


class Gateway:
    """The gateway's state: registry view, producer, metrics and the hot-path caches."""

    def __init__(
        self, config: Config, *, metrics_dir: Path | None = None, worker: int | None = None
    ) -> None:
        self.config = config
        self.worker = worker  # index among the parent's workers; None: a single process
        self.http_inflight = 0  # HTTP requests being handled
        self.draining = False
        self.devices = DeviceCache(config)
        self.producer = AsyncProducer(config)
        self.metrics = GatewayMetrics(multiprocess_dir=metrics_dir)
        self.metrics.declare_channel("http")
        self.pipeline = PipelineMetrics(config, self.metrics)  # lag, freshness on /metrics
        self._cache_version: int | None = None
        self._tokens: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self._prefixes: dict[DeviceEntry, tuple[bytes, bytes]] = {}

    def _check_version(self) -> None:
        if self._cache_version != self.devices.version:
            self._tokens.clear()
            self._prefixes.clear()
            self._cache_version = self.devices.version

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
        self._check_version()
        tokens = self._tokens
        hit = tokens.get(authorization)
        if hit is not None:
            device_id, trusted_until = hit
            if now < trusted_until:
                tokens.move_to_end(authorization)
                entry = self._device(device_id)
                self._admit(entry, "http")
                return entry
            del tokens[authorization]  # expired or stale: verify afresh for a precise answer
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
        tokens[authorization] = (entry.device_id, min(float(token.expiry), now + TOKEN_CACHE_TTL_S))
        if len(tokens) > TOKEN_CACHE_SIZE:
            tokens.popitem(last=False)
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

    def _prefix(self, entry: DeviceEntry) -> tuple[bytes, bytes]:
        """The record key and the JSON of the registry-stamped fields, without braces."""
        self._check_version()
        cached = self._prefixes.get(entry)
        if cached is None:
            stamped = orjson.dumps(
                {
                    "tenant_id": entry.tenant_id,
                    "building_id": entry.building_id,
                    "floor": entry.floor,
                    "room": entry.room,
                    "device_type": entry.device_type,
                    "protocol": entry.protocol,
                }
            )[1:-1]
            cached = self._prefixes[entry] = (entry.device_id.encode(), stamped)
        return cached

    def records(
        self,
        entry: DeviceEntry,
        events: Iterable[tuple[str, int, dict[str, Any]]],
        received_at: dt.datetime,
    ) -> list[tuple[bytes, bytes]]:
        """Kafka ``(key, value)`` records per :mod:`workbench.events` (same keys, same order
        as ``encode_event``; compact UTF-8 JSON)."""
        key, stamped = self._prefix(entry)
        device = orjson.dumps(entry.device_id)
        stamp = format_ts(received_at).encode()
        dumps = orjson.dumps
        return [
            (
                key,
                b'{"device_id":%b,"seq":%d,"ts":"%b","received_at":"%b",%b,"readings":%b}'
                % (device, seq, ts.encode(), stamp, stamped, dumps(readings)),
            )
            for ts, seq, readings in events
        ]

    def registry_changed(self) -> None:
        """Export the registry view's size and version (called after each reload)."""
        self.metrics.devices.set(len(self.devices))
        self.metrics.registry_version.set(
            -1 if self.devices.version is None else self.devices.version
        )

    def reject(self, channel: str, problem: Problem) -> None:
        """Count a refusal."""
        self.metrics.rejected.labels(channel, str(problem.status), problem.reason).inc()
