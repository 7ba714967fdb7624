"""Through the gateway's MQTT door, as IoT Hub devices do: one connection per device.

* The fleet is provisioned as for the ``gateway`` target; each SAS device (``http``)
  gets its own paho-mqtt client (MQTT 5, or 3.1.1 with ``protocol_version=4``): client
  id = device id, user name = ``{host}/{device_id}/?api-version=2021-04-12``, password
  = its SAS token, and publishes its events at QoS 1 on
  ``devices/{device_id}/messages/events/``. FBK1 devices still use the legacy adapter.
* An event counts as accepted when its PUBACK arrives (the gateway sends it once Kafka
  acknowledged); a PUBACK with a failure reason code is a refusal
  (``rejected-mqtt <code>``), a refused CONNECT refuses the device's events
  (``rejected-connack <code>``).
* A dropped connection (a gateway worker draining in a rolling restart, a server busy
  DISCONNECT, a missing PUBACK) is reconnected with exponential back-off, and paho
  re-sends every publish not yet acknowledged (with DUP set): the same payload, hence
  the same ``seq``, so the lake stores it once.
* All clients run on one asyncio loop in a background thread (paho's sockets are
  registered with the loop; no thread per device).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import polars as pl
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from simulator.encode import device_payloads
from simulator.fleet import Fleet
from simulator.targets.gateway import GatewayTarget, RetryPolicy

__all__ = ["MqttTarget"]

logger = logging.getLogger(__name__)

_API_VERSION = "2021-04-12"
# CONNACK / DISCONNECT codes after which reconnecting is worth it (the server, not the
# device's credentials, was the problem)
_TRANSIENT = frozenset({0x88, 0x89, 0x8B, 0x8D, 0x8E, 0x97, 0x9F})


class _Device:
    """One simulated device's MQTT client and what it waits for."""

    def __init__(self, target: MqttTarget, device: int) -> None:
        self.target = target
        self.device = device
        self.device_id = target.fleet.device_ids[device]
        self.topic = f"devices/{self.device_id}/messages/events/"
        self.client: paho.Client | None = None
        self.connected = False
        self.refused: str | None = None  # a final CONNACK refusal: "rejected-connack 0x86"
        self.pending: dict[int, asyncio.Future[str]] = {}  # mid -> outcome
        self.attempt = 0
        self.reconnecting: asyncio.Task[None] | None = None
        self.started = False

    def _new_client(self) -> paho.Client:
        t = self.target
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=paho.MQTTv5 if t.protocol_version == 5 else paho.MQTTv311,
        )
        client.max_inflight_messages_set(64)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = t._socket_open
        client.on_socket_close = t._socket_close
        client.on_socket_register_write = t._register_write
        client.on_socket_unregister_write = t._unregister_write
        return client

    def _credentials(self) -> None:
        now = time.time()
        token = self.target._token(self.device, now)
        assert self.client is not None
        host = self.target.config.host
        self.client.username_pw_set(f"{host}/{self.device_id}/?api-version={_API_VERSION}", token)

    def connect(self) -> None:
        """Start connecting (the CONNACK arrives on the loop)."""
        if self.client is None:
            self.client = self._new_client()
        self._credentials()
        t = self.target
        try:
            if not self.started:
                self.started = True
                self.client.connect(t.config.host, t.config.mqtt_port, keepalive=t.keepalive_s)
            else:
                self.client.reconnect()
        except OSError as exc:
            logger.debug("%s: connect failed (%s)", self.device_id, exc)
            self._schedule_reconnect()

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        code = int(reason.value) if isinstance(reason, ReasonCode) else int(reason)
        if code == 0:
            self.connected = True
            self.attempt = 0
            return
        if code in _TRANSIENT:
            return  # paho disconnects; _on_disconnect reconnects
        self.refused = f"rejected-connack {code:#04x}"
        for future in self.pending.values():
            if not future.done():
                future.set_result(self.refused)
        self.pending.clear()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self.connected = False
        code = int(reason.value) if isinstance(reason, ReasonCode) else int(reason)
        if code == 0x87 and self.pending:
            self.refused = "rejected-disconnect 0x87"
        if self.refused is not None:
            for future in self.pending.values():
                if not future.done():
                    future.set_result(self.refused)
            self.pending.clear()
            return
        if not self.target.closing:
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self.reconnecting is not None and not self.reconnecting.done():
            return
        self.reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = self.target.retry.delay(self.attempt)
        self.attempt += 1
        self.target.stats.retries += len(self.pending)
        await asyncio.sleep(delay)
        if not self.target.closing and not self.connected:
            self.connect()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        future = self.pending.pop(mid, None)
        if future is None or future.done():
            return
        code = int(reason.value) if isinstance(reason, ReasonCode) else int(reason)
        future.set_result("accepted" if code < 0x80 else f"rejected-mqtt {code:#04x}")

    def publish(self, payload: bytes) -> asyncio.Future[str]:
        """Queue one event at QoS 1; its outcome once acknowledged (paho re-sends it after
        a reconnect until then)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if self.refused is not None:
            future.set_result(self.refused)
            return future
        if self.client is None:
            self.connect()
        assert self.client is not None
        info = self.client.publish(self.topic, payload, qos=1)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            future.set_result("failed")
            return future
        self.pending[info.mid] = future
        return future


class MqttTarget(GatewayTarget):
    """Sends every SAS device's events over its own MQTT connection (QoS 1)."""

    name = "mqtt"

    def __init__(
        self,
        fleet: Fleet,
        config: Any,
        options: Any = None,
        *,
        protocol_version: int = 5,
        keepalive_s: int = 60,
        retry: RetryPolicy | None = None,
        timeout_s: float = 30.0,
        provision: bool = True,
    ) -> None:
        super().__init__(
            fleet,
            config,
            options,
            retry=retry or RetryPolicy(attempts=1000, base_s=0.2, cap_s=5.0),
            timeout_s=timeout_s,
            provision=provision,
        )
        self.protocol_version = protocol_version
        self.keepalive_s = keepalive_s
        self.closing = False
        self._devices: dict[int, _Device] = {}
        self._misc: asyncio.Task[None] | None = None

    # --- paho's sockets on the asyncio loop ---------------------------------------------------

    def _socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._loop.add_reader(sock, client.loop_read)

    def _socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)

    def _register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._loop.add_writer(sock, client.loop_write)

    def _unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._loop.remove_writer(sock)

    async def _keepalive(self) -> None:
        """paho's housekeeping (PINGREQs, lost-connection detection) for every client."""
        while True:
            for device in list(self._devices.values()):
                if device.client is not None:
                    device.client.loop_misc()
            await asyncio.sleep(1.0)

    async def _open(self) -> None:
        await super()._open()
        self._misc = asyncio.get_running_loop().create_task(self._keepalive())

    async def _close(self) -> None:
        self.closing = True
        if self._misc is not None:
            self._misc.cancel()
        for device in self._devices.values():
            if device.client is not None:
                device.client.disconnect()
        await super()._close()

    # --- sending -----------------------------------------------------------------------------

    def send(self, chunk: pl.DataFrame) -> pl.Series:
        legacy = (chunk["protocol"] == 1).to_numpy()
        outcomes = np.empty(chunk.height, dtype=object)
        mqtt_rows = np.flatnonzero(~legacy)
        fbk1_rows = np.flatnonzero(legacy)
        jobs: list[Coroutine[Any, Any, None]] = []
        if len(mqtt_rows):
            part = chunk[mqtt_rows]
            payloads = [p.encode() for p in device_payloads(part).to_list()]
            jobs.append(
                self._publish_all(mqtt_rows.tolist(), part["device"].to_list(), payloads, outcomes)
            )
        if len(fbk1_rows):
            jobs.append(self._legacy_all(chunk[fbk1_rows], fbk1_rows.tolist(), outcomes))
        self.stats.sent += chunk.height
        self._call(self._gather(jobs))
        return pl.Series("outcome", outcomes.tolist(), dtype=pl.String)

    async def _publish_all(
        self,
        rows: list[int],
        devices: list[int],
        payloads: list[bytes],
        outcomes: np.ndarray[Any, Any],
    ) -> None:
        futures = []
        for device, payload in zip(devices, payloads, strict=True):
            state = self._devices.get(device)
            if state is None:
                state = self._devices[device] = _Device(self, device)
            futures.append(state.publish(payload))
        done, _ = await asyncio.wait(futures, timeout=self.timeout_s) if futures else (set(), set())
        for row, future in zip(rows, futures, strict=True):
            outcome = future.result() if future in done else "failed"
            outcomes[row] = outcome
            self._count(outcome)
