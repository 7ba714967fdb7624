"""Through the gateway, as real devices would: HTTP with SAS tokens, FBK1 over TCP.

* Before the first event the fleet is provisioned through the registry
  (:mod:`simulator.provision`), so every device signs with its real key.
* HTTP devices POST one event per request (the device id comes from the
  credential, and a device has one event per interval), pipelined over a pool
  of keep-alive connections (:mod:`simulator.targets.http1`, one asyncio loop
  in a background thread).
* FBK1 devices write signed lines on a few persistent TCP connections to the
  legacy adapter, pipelined, and read ``OK <seq>`` / ``ERR <code> <reason>`` back
  in order.
* 429/503 (honouring ``Retry-After``), timeouts and dropped connections are
  retried with exponential back-off and the *same* body, hence the same
  ``seq``: a retry never duplicates an event.
* Unprovisioned devices sign with a random key; de-provisioned-during-run
  devices are de-provisioned through the registry (in a background thread)
  when their first such event is due.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import queue
import secrets
import threading
import time
import urllib.parse
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import polars as pl

from simulator.encode import device_payloads
from simulator.fleet import Fleet
from simulator.provision import provision_fleet, registry
from simulator.scenarios import parse_scenarios
from simulator.scenarios.builtin import DeprovisionDuringRun, Unprovisioned
from simulator.targets.base import Target
from simulator.targets.http1 import Pipeline, Response, build_post
from workbench.config import Config
from workbench.exceptions import SimulatorError

__all__ = ["GatewayTarget", "RetryPolicy"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TOKEN_TTL_S = 24 * 3600
_RETRY_STATUS = frozenset({429, 503})
_JSON = "Content-Type: application/json\r\n"


class RetryPolicy:
    """Exponential back-off: ``base * 2**attempt`` seconds, capped, ``attempts`` tries in all."""

    def __init__(self, *, attempts: int = 8, base_s: float = 0.2, cap_s: float = 5.0) -> None:
        self.attempts = attempts
        self.base_s = base_s
        self.cap_s = cap_s

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before try ``attempt + 1`` (``Retry-After`` wins when given)."""
        if retry_after:
            try:
                return min(float(retry_after), self.cap_s)
            except ValueError:
                pass
        return float(min(self.base_s * 2**attempt, self.cap_s))


def _reason(body: bytes) -> str:
    """The ``reason`` of a problem+json body (empty when there is none)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    return str(doc.get("reason", "")) if isinstance(doc, dict) else ""


def _finite(value: float | None) -> float | None:
    """FBK1 cannot carry NaN: a NaN reading is left out of the frame."""
    return None if value is None or value != value else float(value)


def _sas(device_id: str, key: bytes, expiry: int) -> str:
    sig = hmac.new(key, f"{device_id}\n{expiry}".encode(), hashlib.sha256).digest()
    quoted = urllib.parse.quote(base64.b64encode(sig).decode(), safe="")
    return f"SharedAccessSignature sr={device_id}&se={expiry}&sig={quoted}"


class GatewayTarget(Target):
    """Sends through ``POST /v1/telemetry`` and the FBK1 TCP adapter."""

    name = "gateway"

    def __init__(
        self,
        fleet: Fleet,
        config: Config,
        options: Any = None,
        *,
        # the gateway answers a connection's pipelined requests one after the other, and
        # each waits for its Kafka batch (WORKBENCH_GATEWAY_LINGER_MS): a tick's events
        # (the seed's 167 per 0.1 s) go out over enough connections to take about two
        # round trips, so the devices keep real time even at a 20 ms linger (docs/simulator.md)
        connections: int = 128,
        depth: int = 16,
        legacy_connections: int = 8,
        retry: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        provision: bool = True,
    ) -> None:
        super().__init__(fleet)
        self.config = config
        self.url = f"http://{config.host}:{config.gateway_port}/v1/telemetry"
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.connections = connections
        self.depth = depth
        self.legacy_connections = legacy_connections
        self.provision = provision
        spec = getattr(options, "scenario", "") or ""
        scenarios = parse_scenarios(spec)
        self._without: frozenset[int] = frozenset()
        self._to_deprovision: frozenset[int] = frozenset()
        for s in scenarios:
            if isinstance(s, Unprovisioned):
                self._without = frozenset(s.devices(fleet).tolist())
            if isinstance(s, DeprovisionDuringRun):
                self._to_deprovision = frozenset(s.devices(fleet).tolist())
        self._keys: dict[int, bytes] = {}
        self._tokens: dict[int, tuple[int, str]] = {}
        self._rogue_key = secrets.token_bytes(32)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sim-http", daemon=True)
        self._pipes: list[Pipeline | None] = []
        self._host_header = f"{config.host}:{config.gateway_port}"
        self._legacy: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = []
        self._deprovision_queue: queue.Queue[int | None] = queue.Queue()
        self._deprovisioned: set[int] = set()
        self._deprovisioner: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------

    def prepare(self) -> None:
        self.check()
        if self.provision:
            self._keys = provision_fleet(
                self.config,
                self.fleet,
                without_credentials=self._without,
                report=lambda m: logger.info("%s", m),
            )
            self._wait_for_gateway_registry()
        self._thread.start()
        self._call(self._open())
        if self._to_deprovision:
            self._deprovisioner = threading.Thread(
                target=self._deprovision_worker, name="sim-deprovision", daemon=True
            )
            self._deprovisioner.start()

    async def _open(self) -> None:
        self._pipes = [None] * self.connections
        self._legacy = [None] * self.legacy_connections

    def close(self) -> None:
        if self._deprovisioner is not None:
            self._deprovision_queue.put(None)
            self._deprovisioner.join(timeout=60)
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    async def _close(self) -> None:
        for pipe in self._pipes:
            if pipe is not None:
                pipe.close()
        for conn in self._legacy:
            if conn is not None:
                conn[1].close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # --- credentials -------------------------------------------------------------------------

    def _key(self, device: int) -> bytes:
        return self._keys.get(device, self._rogue_key)

    def _token(self, device: int, now: float) -> str:
        cached = self._tokens.get(device)
        if cached is not None and cached[0] - now > 300:
            return cached[1]
        expiry = int(now) + _TOKEN_TTL_S
        token = _sas(self.fleet.device_ids[device], self._key(device), expiry)
        self._tokens[device] = (expiry, token)
        return token

    def _deprovision_worker(self) -> None:
        reg = registry(self.config)
        while (device := self._deprovision_queue.get()) is not None:
            try:
                reg.deprovision(self.fleet.device_ids[device])
            except Exception:
                logger.exception("could not de-provision %s", self.fleet.device_ids[device])

    # --- sending -----------------------------------------------------------------------------

    def send(self, chunk: pl.DataFrame) -> pl.Series:
        if self._to_deprovision:
            due = set(chunk.filter(pl.col("status") == 2)["device"].to_list())
            for device in sorted(due - self._deprovisioned):
                self._deprovisioned.add(device)
                self._deprovision_queue.put(device)
        legacy = (chunk["protocol"] == 1).to_numpy()
        outcomes = np.empty(chunk.height, dtype=object)
        http_rows = np.flatnonzero(~legacy)
        fbk1_rows = np.flatnonzero(legacy)
        now = time.time()
        jobs: list[Coroutine[Any, Any, None]] = []
        if len(http_rows):
            part = chunk[http_rows]
            bodies = device_payloads(part).to_list()
            devices = part["device"].to_list()
            host = self._host_header
            requests = [
                (
                    row,
                    build_post(
                        host,
                        "/v1/telemetry",
                        f"Authorization: {self._token(d, now)}\r\n{_JSON}",
                        body.encode(),
                    ),
                )
                for row, d, body in zip(http_rows.tolist(), devices, bodies, strict=True)
            ]
            jobs.append(self._post_all(requests, outcomes))
        if len(fbk1_rows):
            jobs.append(self._legacy_all(chunk[fbk1_rows], fbk1_rows.tolist(), outcomes))
        self.stats.sent += chunk.height
        self._call(self._gather(jobs))
        return pl.Series("outcome", outcomes.tolist(), dtype=pl.String)

    async def _gather(self, jobs: list[Coroutine[Any, Any, None]]) -> None:
        await asyncio.gather(*jobs)

    def _count(self, outcome: str) -> None:
        if outcome == "accepted":
            self.stats.accepted += 1
        elif outcome == "failed":
            self.stats.failed += 1
        else:
            self.stats.rejected[outcome.removeprefix("rejected-")] += 1

    async def _pipe(self, slot: int) -> Pipeline:
        pipe = self._pipes[slot]
        if pipe is None or pipe.closed:
            pipe = await asyncio.wait_for(
                Pipeline.connect(self.config.host, self.config.gateway_port), self.timeout_s
            )
            self._pipes[slot] = pipe
        return pipe

    async def _send_slot(
        self, slot: int, requests: list[tuple[int, bytes]]
    ) -> list[Response | BaseException]:
        try:
            pipe = await self._pipe(slot)
        except (OSError, TimeoutError) as exc:
            return [exc] * len(requests)
        futures = pipe.send([r for _, r in requests])
        done, _ = await asyncio.wait(futures, timeout=self.timeout_s)
        if len(done) < len(futures):  # a stuck connection: drop it, retry what is left
            pipe.close()
        out: list[Response | BaseException] = []
        for f in futures:
            if not f.done():
                f.cancel()
                out.append(TimeoutError("no answer"))
            elif f.cancelled():
                out.append(TimeoutError("cancelled"))
            else:
                error = f.exception()
                out.append(error if error is not None else f.result())
        return out

    async def _post_all(
        self, requests: list[tuple[int, bytes]], outcomes: np.ndarray[Any, Any]
    ) -> None:
        pending = requests
        # At most `depth` requests queue on one connection at a time: a backlog after the
        # gateway slowed down goes out in waves instead of one pipeline that outlives the
        # timeout (and would be retried wholesale).
        wave = self.connections * self.depth
        for attempt in range(self.retry.attempts):
            again: list[tuple[int, bytes]] = []
            retry_after: str | None = None
            for first in range(0, len(pending), wave):
                retry, hint = await self._wave(pending[first : first + wave], outcomes)
                again += retry
                retry_after = hint or retry_after
            pending = again
            if not pending:
                return
            if attempt + 1 < self.retry.attempts:
                self.stats.retries += len(pending)
                await asyncio.sleep(self.retry.delay(attempt, retry_after))
        for row, _ in pending:
            outcomes[row] = "failed"
            self._count("failed")

    async def _wave(
        self, pending: list[tuple[int, bytes]], outcomes: np.ndarray[Any, Any]
    ) -> tuple[list[tuple[int, bytes]], str | None]:
        """Send ``pending`` spread over the connections; return what to retry."""
        n = self.connections
        slots = [part for part in (pending[i::n] for i in range(n)) if part]
        answers = await asyncio.gather(*(self._send_slot(i, part) for i, part in enumerate(slots)))
        again: list[tuple[int, bytes]] = []
        retry_after: str | None = None
        for part, results in zip(slots, answers, strict=True):
            for (row, request), result in zip(part, results, strict=True):
                if isinstance(result, BaseException):
                    again.append((row, request))
                    continue
                if result.status in _RETRY_STATUS:
                    again.append((row, request))
                    retry_after = result.retry_after or retry_after
                    continue
                if result.status < 300:
                    outcome = "accepted"
                else:
                    outcome = f"rejected-{result.status} {_reason(result.body)}".rstrip()
                outcomes[row] = outcome
                self._count(outcome)
        return again, retry_after

    async def _legacy_conn(self, slot: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        conn = self._legacy[slot]
        if conn is None or conn[1].is_closing():
            try:
                conn = await asyncio.wait_for(
                    asyncio.open_connection(self.config.host, self.config.legacy_port),
                    self.timeout_s,
                )
            except (OSError, TimeoutError) as exc:
                self._legacy[slot] = None
                raise ConnectionError(f"legacy adapter not reachable: {exc}") from exc
            self._legacy[slot] = conn
        return conn

    async def _legacy_all(
        self, part: pl.DataFrame, rows: list[int], outcomes: np.ndarray[Any, Any]
    ) -> None:
        from ingest_service.translators.fbk1 import encode_frame

        frames: list[tuple[int, bytes]] = []
        for row, r in zip(rows, part.iter_rows(named=True), strict=True):
            device = r["device"]
            frames.append(
                (
                    row,
                    encode_frame(
                        self.fleet.device_ids[device],
                        self._key(device),
                        r["ts"],
                        r["seq"],
                        temperature=_finite(r["temperature"]),
                        humidity=_finite(r["humidity"]),
                        light=_finite(r["light"]),
                    ),
                )
            )
        groups = [frames[i :: self.legacy_connections] for i in range(self.legacy_connections)]
        await asyncio.gather(*(self._legacy_group(i, g, outcomes) for i, g in enumerate(groups)))

    async def _legacy_group(
        self, slot: int, frames: list[tuple[int, bytes]], outcomes: np.ndarray[Any, Any]
    ) -> None:
        pending = frames
        for attempt in range(self.retry.attempts):
            if not pending:
                return
            again: list[tuple[int, bytes]] = []
            try:
                reader, writer = await self._legacy_conn(slot)
                writer.write(b"".join(frame for _, frame in pending))
                await writer.drain()
                for i, (row, frame) in enumerate(pending):
                    line = await asyncio.wait_for(reader.readline(), self.timeout_s)
                    if not line:
                        again.extend(pending[i:])
                        self._legacy[slot] = None
                        break
                    answer = line.decode("ascii", "replace").split()
                    if answer and answer[0] == "OK":
                        outcome = "accepted"
                    elif attempt and answer[1:3] == ["409", "replay"]:
                        # a copy of this very frame was accepted before and its OK lost
                        # (the connection dropped, or the answer came after our timeout):
                        # the gateway says it is stored
                        outcome = "accepted"
                        self.stats.replayed += 1
                    elif (
                        len(answer) >= 2 and answer[0] == "ERR" and int(answer[1]) in _RETRY_STATUS
                    ):
                        again.append((row, frame))
                        continue
                    else:
                        outcome = "rejected-" + " ".join(answer[1:3])
                    outcomes[row] = outcome
                    self._count(outcome)
            except (ConnectionError, OSError, TimeoutError, ValueError) as exc:
                logger.debug("legacy send failed (%s), retrying", exc)
                done = {row for row, _ in again} | {
                    row for row, _ in pending if outcomes[row] is not None
                }
                again = [(row, f) for row, f in pending if row not in done] + again
                if self._legacy[slot] is not None:
                    self._legacy[slot][1].close()  # type: ignore[index]
                self._legacy[slot] = None
            pending = again
            if pending and attempt + 1 < self.retry.attempts:
                self.stats.retries += len(pending)
                await asyncio.sleep(self.retry.delay(attempt))
        for row, _ in pending:
            outcomes[row] = "failed"
            self._count("failed")

    def _wait_for_gateway_registry(self, timeout_s: float = 60.0) -> None:
        """Block until the gateway serves the registry version provisioning produced."""
        import json
        import urllib.request

        want = registry(self.config).version("devices") or 0
        url = f"http://{self.config.host}:{self.config.gateway_port}/healthz"
        deadline = time.monotonic() + timeout_s
        seen: object = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    health = json.loads(response.read())
                # with several gateway workers, the version *every* worker serves
                seen = health.get("registry_version_all", health.get("registry_version"))
            except (OSError, ValueError):
                seen = None
            if isinstance(seen, int) and seen >= want:
                return
            time.sleep(0.2)
        raise SimulatorError(
            f"the gateway still serves registry version {seen}, provisioning wrote {want}",
            hint="check that the gateway and the simulator share WORKBENCH_LAKE and "
            "WORKBENCH_HOME (the master key)",
        )

    def flush(self) -> None:
        """Requests complete inside :meth:`send`: nothing is left in flight."""

    def check(self, *, patience_s: float = 60.0) -> None:
        """Raise SimulatorError when the gateway does not answer /healthz.

        Nothing listening fails at once. A gateway that answers 503 (a worker still
        loading the registry) or is slow to answer (a busy host) is given ``patience_s``:
        it is there, and a run that gave up on it would lose its whole fleet's sends.
        """
        import urllib.error
        import urllib.request

        url = f"http://{self.config.host}:{self.config.gateway_port}/healthz"
        deadline = time.monotonic() + patience_s
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return
            except urllib.error.HTTPError as exc:
                exc.close()  # the answer's body is not read
                if exc.code != 503 or time.monotonic() >= deadline:
                    raise SimulatorError(
                        f"the gateway at {url} answers {exc.code} {exc.reason}",
                        hint="see its log: workbench logs gateway",
                    ) from exc
            except (urllib.error.URLError, OSError) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                if not isinstance(reason, TimeoutError) or time.monotonic() >= deadline:
                    raise SimulatorError(
                        f"the gateway at {url} does not answer ({exc})",
                        hint="start it with 'workbench up' (or python -m ingest_service "
                        "gateway), or use --target kafka",
                    ) from exc
            time.sleep(0.5)
