"""What the HTTP gateway and the legacy adapter share: authenticate, check, enrich, produce.

**Read-your-writes at the door.** A device's key is derived from the master secret
and its key version, so a door checks a signature before it looks anything up: against
the key version it knows, then the next :data:`KEY_VERSIONS_AHEAD` (a device provisioned
or its key rotated since this worker last read the registry). A signature none of them
made is refused at once (``401 bad_signature``, or ``403 unknown_device`` for a device
this worker does not know) without touching the registry. A signature that verifies but
that this worker's view would refuse — an unknown device, a newer key version, a
disabled device, another protocol — may be a grant whose command has already returned:
the door re-reads the registry (:meth:`DeviceCache.sync`, a read that began after the
request arrived) and answers from that. When that read fails or takes more than
:data:`CONFIRM_TIMEOUT_S`, the answer is ``503 registry_unavailable`` with
``Retry-After``: never a final 403 the registry has not confirmed.

Two caches keep the per-request work small, both checked against the device's current
entry so that no registry change outlives them (they are not emptied per version: a
change costs the changed devices, not the fleet):

* verified SAS tokens: the ``Authorization`` header text -> ``(device, key version,
  trusted until)``, kept for at most :data:`TOKEN_CACHE_TTL_S` and never past the
  token's own expiry, in an LRU of :data:`TOKEN_CACHE_SIZE` entries; a hit skips
  parsing and the HMAC when the device still has that key version, and its status is
  still checked on every request;
* each device's constant part of the Kafka record (tenant, building, floor,
  room, type) as pre-encoded JSON bytes, for its current entry. The record's
  ``protocol`` is the door's (``http``, ``mqtt``, a translator's name): how the event
  came, which for a SAS-token device is either of two doors.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from ingest_service.gateway.devices import DeviceCache
from ingest_service.gateway.metrics import GatewayMetrics
from ingest_service.gateway.pipeline import PipelineMetrics
from ingest_service.gateway.producer import AsyncProducer
from ingest_service.gateway.validation import Problem
from workbench.config import Config
from workbench.events import format_ts
from workbench.exceptions import InvalidToken
from workbench.registry.feed import Changes
from workbench.registry.keys import SasToken, parse_sas_token, verify_sas_token
from workbench.registry.records import DeviceEntry

__all__ = [
    "CONFIRM_TIMEOUT_S",
    "KEY_VERSIONS_AHEAD",
    "TOKEN_CACHE_SIZE",
    "TOKEN_CACHE_TTL_S",
    "Gateway",
]

logger = logging.getLogger(__name__)

TOKEN_CACHE_SIZE = 65536
"""Verified tokens remembered per worker (LRU)."""
TOKEN_CACHE_TTL_S = 300.0
"""How long a verified token is trusted without re-checking its HMAC (a new key version
or status of its device applies at once)."""
KEY_VERSIONS_AHEAD = 8
"""Key versions past the known one a door tries before it calls a signature bad: a device
re-provisioned or rotated that many times since this worker's last read is still
confirmed by a registry read; beyond, the device retries after the next poll."""
CONFIRM_TIMEOUT_S = 2.0
"""How long a door waits for the registry read that confirms a device before it answers
``503 registry_unavailable``."""


# Refusals of what an authenticated device sent (not of its credentials, nor the
# gateway's own 429/503): those count against its building's rejected-event rate.
_ATTRIBUTED = frozenset({400, 408, 413, 415, 422})


class Gateway:
    """The gateway's state: registry view, producer, metrics and the hot-path caches."""

    def __init__(
        self, config: Config, *, metrics_dir: Path | None = None, worker: int | None = None
    ) -> None:
        self.config = config
        self.worker = worker  # index among the parent's workers; None: a single process
        self.http_inflight = 0  # HTTP requests being handled
        self.draining = False
        name = "gateway" if worker is None else f"gateway worker {worker}"
        self.devices = DeviceCache(config, name=name)
        self.devices.on_change = self.registry_changed
        self.devices.on_read = self.registry_read
        self.producer = AsyncProducer(config)
        self.metrics = GatewayMetrics(multiprocess_dir=metrics_dir)
        self.metrics.declare_channel("http")
        self.pipeline = PipelineMetrics(config, self.metrics)  # lag, freshness on /metrics
        self._tokens: collections.OrderedDict[str, tuple[str, int, float]] = (
            collections.OrderedDict()
        )
        self._prefixes: dict[str, tuple[DeviceEntry, bytes, bytes]] = {}
        self.confirmations = 0  # registry reads a door waited for before answering
        # doors holding long-lived device sessions (MQTT): told of every change applied,
        # before the worker's view file shows its version to the command that waits
        self.change_listeners: list[Callable[[Changes], None]] = []

    @staticmethod
    def _refusal(entry: DeviceEntry, protocol: str) -> Problem | None:
        """Why this view refuses ``entry`` on ``protocol``; None when it admits it."""
        if entry.status != "provisioned":
            return Problem(403, entry.status, f"device {entry.device_id!r} is {entry.status}")
        if entry.protocol != protocol:
            return Problem(
                403,
                "protocol_mismatch",
                f"device {entry.device_id!r} is provisioned for {entry.protocol}, not {protocol}",
            )
        return None

    def session_refusal(
        self, device_id: str, key_version: int, protocol: str = "http"
    ) -> Problem | None:
        """Why a session a device opened with ``key_version`` must end now (de-provisioned,
        disabled, its key rotated, moved to another protocol); None while the view admits
        it. What long-lived doors (MQTT) check on each publish and registry change."""
        entry = self.devices.get(device_id)
        if entry is None:
            return Problem(403, "deprovisioned", f"device {device_id!r} is not in the registry")
        if entry.key_version != key_version:
            return Problem(403, "key_rotated", f"device {device_id!r} has a new key")
        return self._refusal(entry, protocol)

    def _signing_version(
        self, device_id: str, entry: DeviceEntry | None, signs: Callable[[bytes], bool]
    ) -> int | None:
        """The key version whose key made the signature (``signs(key)``): the known one, or
        one of the next :data:`KEY_VERSIONS_AHEAD`; None when none did."""
        known = 0 if entry is None else entry.key_version
        if entry is not None and signs(self.devices.key(entry)):
            return known
        for version in range(known + 1, known + KEY_VERSIONS_AHEAD + 1):
            if signs(self.devices.derive(device_id, version)):
                return version
        return None

    async def _admit(self, device_id: str, key_version: int, protocol: str) -> DeviceEntry:
        """The device whose key at ``key_version`` signed the request, if the registry admits
        it on ``protocol``; raise 401/403 when it does not, 503 when it cannot say."""
        entry = self.devices.get(device_id)
        if (
            entry is not None
            and entry.key_version == key_version
            and self._refusal(entry, protocol) is None
        ):
            return entry
        # the signature is good but this view refuses it: it may predate a grant whose
        # command has returned, so only a read begun after this request may refuse
        self.confirmations += 1
        self.metrics.registry_confirmations.inc()
        try:
            await asyncio.wait_for(self.devices.sync(), CONFIRM_TIMEOUT_S)
        except Exception:  # any failure to read (or a slow read) means: cannot confirm yet
            raise Problem(
                503,
                "registry_unavailable",
                f"the gateway cannot confirm device {device_id!r} with the registry right "
                "now; retry",
                retry_after=1,
            ) from None
        entry = self.devices.get(device_id)
        if entry is None:
            raise Problem(403, "unknown_device", f"device {device_id!r} is not provisioned")
        if entry.key_version != key_version:
            raise Problem(
                401,
                "bad_signature",
                f"signed with key version {key_version} of device {device_id!r}; its key is "
                f"version {entry.key_version} now (rotated)",
            )
        problem = self._refusal(entry, protocol)
        if problem is not None:
            raise problem
        return entry

    async def authenticate(self, authorization: str | None, *, now: float) -> DeviceEntry:
        """The HTTP device named by a valid SAS token, or raise 401/403 (503: unconfirmed)."""
        if not authorization:
            raise Problem(401, "missing_token", "send Authorization: SharedAccessSignature ...")
        tokens = self._tokens
        hit = tokens.get(authorization)
        if hit is not None:
            device_id, cached_version, trusted_until = hit
            entry = self.devices.get(device_id)
            if (
                now < trusted_until
                and entry is not None
                and entry.key_version == cached_version
                and self._refusal(entry, "http") is None
            ):
                tokens.move_to_end(authorization)
                return entry
            del tokens[authorization]  # expired, stale or refused: verify afresh
        try:
            token = parse_sas_token(authorization)
        except InvalidToken as exc:
            raise Problem(401, "malformed_token", exc.message) from None
        failure = ""
        max_ttl = self.config.sas_max_ttl

        def signs(key: bytes) -> bool:
            nonlocal failure
            failure = verify_sas_token(token, key, now=now, max_ttl=max_ttl) or ""
            return failure != "bad_signature"

        entry = self.devices.get(token.device_id)
        key_version = self._signing_version(token.device_id, entry, signs)
        if key_version is None:
            if entry is None:
                raise Problem(
                    403, "unknown_device", f"device {token.device_id!r} is not provisioned"
                )
            raise Problem(401, "bad_signature", "the token's signature does not match the key")
        self._check_lifetime(token, failure, now)
        entry = await self._admit(token.device_id, key_version, "http")
        tokens[authorization] = (
            entry.device_id,
            entry.key_version,
            min(float(token.expiry), now + TOKEN_CACHE_TTL_S),
        )
        if len(tokens) > TOKEN_CACHE_SIZE:
            tokens.popitem(last=False)
        return entry

    def _check_lifetime(self, token: SasToken, failure: str, now: float) -> None:
        max_ttl = self.config.sas_max_ttl
        if failure == "expired":
            raise Problem(401, "expired", "the token has expired; sign a new one")
        if failure == "lifetime_too_long":
            raise Problem(
                401,
                "lifetime_too_long",
                f"the token expires {token.expiry - now:.0f} s from now, more than "
                f"WORKBENCH_SAS_MAX_TTL ({max_ttl} s); sign one with a shorter lifetime",
            )

    async def authenticate_frame(
        self, device_id: str, signed: bytes, signature: bytes, protocol: str
    ) -> DeviceEntry:
        """The legacy device whose key signed ``signed``, or raise 401/403 (503: unconfirmed)."""

        def signs(key: bytes) -> bool:
            expected = hmac.new(key, signed, hashlib.sha256).digest()
            return hmac.compare_digest(expected, signature)

        entry = self.devices.get(device_id)
        key_version = self._signing_version(device_id, entry, signs)
        if key_version is None:
            if entry is None:
                raise Problem(403, "unknown_device", f"device {device_id!r} is not provisioned")
            raise Problem(401, "bad_signature", "the frame's signature does not match the key")
        return await self._admit(device_id, key_version, protocol)

    def _prefix(self, entry: DeviceEntry) -> tuple[bytes, bytes]:
        """The record key and the JSON of the registry-stamped fields, without braces."""
        hit = self._prefixes.get(entry.device_id)
        if hit is not None and hit[0] is entry:  # a change replaces the entry object
            return hit[1], hit[2]
        stamped = orjson.dumps(
            {
                "tenant_id": entry.tenant_id,
                "building_id": entry.building_id,
                "floor": entry.floor,
                "room": entry.room,
                "device_type": entry.device_type,
            }
        )[1:-1]
        key = entry.device_id.encode()
        self._prefixes[entry.device_id] = (entry, key, stamped)
        return key, stamped

    def records(
        self,
        entry: DeviceEntry,
        events: Iterable[tuple[str, int, dict[str, Any]]],
        received_at: dt.datetime,
        *,
        protocol: str,
    ) -> list[tuple[bytes, bytes]]:
        """Kafka ``(key, value)`` records per :mod:`workbench.events` (same keys, same order
        as ``encode_event``; compact UTF-8 JSON); ``protocol`` names the door they came
        through."""
        key, stamped = self._prefix(entry)
        device = orjson.dumps(entry.device_id)
        stamp = format_ts(received_at).encode()
        via = orjson.dumps(protocol)
        dumps = orjson.dumps
        return [
            (
                key,
                b'{"device_id":%b,"seq":%d,"ts":"%b","received_at":"%b",%b,"protocol":%b,'
                b'"readings":%b}'
                % (device, seq, ts.encode(), stamp, stamped, via, dumps(readings)),
            )
            for ts, seq, readings in events
        ]

    def registry_changed(self, changes: Changes | None = None) -> None:
        """Export the registry view's size and version (called after each change applied),
        and count what the change cost."""
        if changes is not None:
            for listener in self.change_listeners:
                try:
                    listener(changes)
                except Exception:  # one door's bug must not stop the others' view
                    logger.exception("a registry change listener failed")
            if changes.resync and self.devices.resyncs:
                self.metrics.registry_resyncs.inc()
            elif not changes.resync:
                self.metrics.registry_changes.inc(len(changes.devices) + len(changes.deleted))
        self.metrics.devices.set(len(self.devices))
        self.metrics.registry_version.set(
            -1 if self.devices.version is None else self.devices.version
        )

    def registry_read(self, failed: bool) -> None:
        """Count a failed registry read and export how stale the view is (called after
        every read)."""
        if failed:
            self.metrics.registry_read_errors.inc()
        self.metrics.registry_stale.set(self.devices.stale_seconds())

    def reject(self, channel: str, problem: Problem, entry: DeviceEntry | None = None) -> None:
        """Count a refusal; ``entry``: the known device that sent it, authenticated.

        A refusal of an authenticated device's data (its body, batch, timestamps) is
        also noted on the topic, keyed by the device like its events, for the
        processor's rejected-event rate of the device's building (a ``rejected`` record,
        :mod:`ingest_service.processor.decode`). Nothing else is attributed: before
        authentication the device id is a claim anyone can make, so noting it would let
        anyone raise another tenant's alarm. The note is sent without waiting for its
        ack (the answer does not wait for it) and only on a refusal, so an accepted
        request pays nothing for it; it is counted once the broker acknowledged it
        (``sent``), or as ``lost`` when the delivery failed, or as ``dropped`` when it
        could not be handed over."""
        self.metrics.rejected.labels(channel, str(problem.status), problem.reason).inc()
        if entry is not None and problem.status in _ATTRIBUTED:
            key, stamped = self._prefix(entry)
            received = format_ts(dt.datetime.now(dt.UTC)).encode()
            value = (
                b'{"device_id":%b,"rejected":%b,"status":%d,"received_at":"%b",%b,"protocol":%b}'
                % (
                    orjson.dumps(entry.device_id),
                    orjson.dumps(problem.reason),
                    problem.status,
                    received,
                    stamped,
                    orjson.dumps(channel),
                )
            )
            notes = self.metrics.rejection_notes
            if not self.producer.note(
                key, value, lambda acked: notes.labels("sent" if acked else "lost").inc()
            ):
                notes.labels("dropped").inc()
