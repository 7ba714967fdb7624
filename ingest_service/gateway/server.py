"""Run the gateway: HTTP on ``gateway_port``, the legacy adapter on ``legacy_port`` and the
MQTT door on ``mqtt_port`` (and ``mqtt_tls_port`` when a TLS certificate is set).

``python -m ingest_service gateway`` is the parent of ``WORKBENCH_GATEWAY_WORKERS``
worker processes (:mod:`ingest_service.gateway.workers`) that serve both ports from
the listening sockets the parent opened; :func:`serve` is one worker's event loop
(or, called directly, a whole gateway in one process, as tests do).

A worker shuts down gracefully on SIGTERM/SIGINT, in this order:

0. (start-up) listen only after the registry view is loaded, and current once more
   right before listening (a change committed during the load is in it);
1. stop accepting on every port (new connections go to sibling workers);
2. finish the requests, legacy frames and MQTT publishes in progress: each still
   gets its answer, so a batch being received gets its 202 (a publish its PUBACK)
   once the broker acknowledged it (at most ``WORKBENCH_GATEWAY_ACK_TIMEOUT`` + 2 s,
   then they are cancelled); MQTT sessions then get DISCONNECT 0x8B and reconnect to
   a sibling;
3. flush and close the Kafka producer;
4. exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from ingest_service.gateway.core import Gateway
from ingest_service.gateway.doors import HttpSite
from ingest_service.gateway.http import make_app
from ingest_service.gateway.legacy import LegacyAdapter
from ingest_service.gateway.mqtt import MqttDoor
from ingest_service.gateway.sockets import inherited_sockets
from ingest_service.gateway.tls import server_context
from workbench.config import Config
from workbench.stack.pool import signal_ready

__all__ = ["run_loop", "serve"]

logger = logging.getLogger(__name__)

_CONNECT_WAIT_S = 5.0


async def serve(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    worker: int | None = None,
    metrics_dir: Path | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT when it is None), then drain.

    ``worker`` (an index) makes this one of several processes sharing the ports.
    """
    gateway = Gateway(config, metrics_dir=metrics_dir, worker=worker)
    stop = stop or _signal_event()
    poller = asyncio.create_task(gateway.devices.run(), name="registry-poller")
    connecting = asyncio.wrap_future(gateway.producer.start())
    drain_s = config.gateway_ack_timeout + 2
    # the HTTP door's protocol (ingest_service.gateway.doors) sets its own keep-alive and
    # access-log options: HttpSite makes the connections, not the runner's server
    runner = web.AppRunner(
        make_app(gateway), access_log=None, handle_signals=False, shutdown_timeout=drain_s
    )
    await runner.setup()
    inherited = inherited_sockets() if worker is not None else None
    site = HttpSite(runner, gateway, sock=inherited[0] if inherited else None)
    _raise_open_files_limit(2 * config.gateway_max_connections + config.mqtt_max_connections + 256)
    legacy = LegacyAdapter(gateway)
    mqtt = MqttDoor(gateway)
    tls = server_context(config)
    name = "gateway" if worker is None else f"gateway worker {worker} (pid {os.getpid()})"
    drained = False
    try:
        # listen only once the registry is loaded (and, briefly, the broker connected): the
        # kernel must not hand a worker that cannot authenticate anyone its share of devices
        while not gateway.devices.loaded.is_set() and not stop.is_set():
            await asyncio.sleep(0.05)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(connecting), _CONNECT_WAIT_S)
        # the load may be seconds old (a large registry, a slow broker): read what changed
        # since, so the first request meets the registry as it is now
        with contextlib.suppress(Exception):
            await gateway.devices.sync()
        await site.start()
        await legacy.start(
            config.host, config.legacy_port, sock=inherited[1] if inherited else None
        )
        await mqtt.start(config.host, config.mqtt_port, sock=inherited[2] if inherited else None)
        if tls is not None:
            tls_sock = inherited[3] if inherited and len(inherited) > 3 else None
            await mqtt.start_tls(config.host, config.mqtt_tls_port, tls, sock=tls_sock)
        signal_ready()  # a rolling restart stops an old worker only after this
        logger.info(
            "%s on http://%s:%d, legacy adapter (%s) on %s:%d, MQTT on %s:%d%s",
            name,
            config.host,
            config.gateway_port,
            ", ".join(sorted(legacy.translators)),
            config.host,
            config.legacy_port,
            config.host,
            config.mqtt_port,
            f" (TLS on :{config.mqtt_tls_port})" if tls is not None else "",
        )
        await stop.wait()
        logger.info("%s draining", name)
        gateway.draining = True
        await site.stop()  # 1. no new HTTP connections (legacy: first step of its drain)
        legacy_drained = asyncio.create_task(legacy.drain(drain_s))
        mqtt_drained = asyncio.create_task(mqtt.drain(drain_s))
        # 2. aiohttp's own shutdown drops a request whose body is still arriving: wait for
        # the requests being handled first, then let it close the idle connections
        deadline = asyncio.get_running_loop().time() + drain_s
        while gateway.http_inflight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        await legacy_drained
        await mqtt_drained
        await runner.cleanup()
        drained = True
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        if not drained:
            await runner.cleanup()
        # 3. flush whatever is still buffered
        await asyncio.to_thread(gateway.producer.close)
        logger.info("%s stopped", name)


def _raise_open_files_limit(wanted: int) -> None:
    """Lift the limit on open files towards ``wanted`` (every door's cap), so that the caps,
    not the kernel's EMFILE, decide which connection is refused: the hard limit too where
    the process may (root, CAP_SYS_RESOURCE: the MQTT door's 100,000 connections need
    more than a login shell's usual hard limit), else the soft one up to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = hard == resource.RLIM_INFINITY or hard >= wanted
        if not raised:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
                raised = True
            except (ValueError, OSError):
                pass
        if raised:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
        else:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        logger.warning(
            "open files limited to %d: fewer connections than WORKBENCH_GATEWAY_MAX_CONNECTIONS "
            "per door and WORKBENCH_MQTT_MAX_CONNECTIONS can be served (raise `ulimit -Hn`)",
            soft,
        )


def _signal_event() -> asyncio.Event:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop (libuv: cheaper sockets and wake-ups per request than the
    standard selector loop), or the standard loop where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
