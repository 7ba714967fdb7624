"""Run the gateway: HTTP on ``gateway_port`` and the legacy adapter on ``legacy_port``, in one
process and one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from ingest_service.gateway.core import Gateway
from ingest_service.gateway.http import make_app
from ingest_service.gateway.legacy import LegacyAdapter
from workbench.config import Config

__all__ = ["run_gateway", "serve"]

logger = logging.getLogger(__name__)


async def serve(config: Config, *, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT when it is None)."""
    gateway = Gateway(config)
    stop = stop or _signal_event()
    poller = asyncio.create_task(gateway.devices.run(), name="registry-poller")
    gateway.producer.start()
    runner = web.AppRunner(make_app(gateway), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.gateway_port, backlog=1024)
    legacy = LegacyAdapter(gateway)
    try:
        await site.start()
        server = await legacy.start(config.host, config.legacy_port)
        logger.info(
            "gateway on http://%s:%d, legacy adapter (%s) on %s:%d",
            config.host,
            config.gateway_port,
            ", ".join(sorted(legacy.translators)),
            config.host,
            config.legacy_port,
        )
        await stop.wait()
        server.close()
        await server.wait_closed()
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await runner.cleanup()
        await asyncio.to_thread(gateway.producer.close)
        logger.info("gateway stopped")


def _signal_event() -> asyncio.Event:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event


def run_gateway(config: Config) -> int:
    """Entry point of ``python -m ingest_service gateway``."""
    asyncio.run(serve(config))
    return 0
