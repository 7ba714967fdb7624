"""The cloud gateway: device authentication (SAS), validation, registry enrichment, Kafka
production, and the legacy TCP adapter with its protocol translators.

Run it with ``python -m ingest_service gateway``; see ``docs/gateway.md``. Importing
this package is cheap: the server (aiohttp, kafka-python) loads on first use.
"""

from __future__ import annotations

from workbench.config import Config

__all__ = ["run_gateway"]


def run_gateway(config: Config) -> int:
    """Serve HTTP and the legacy adapter until SIGTERM/SIGINT: the parent of the worker
    processes (:func:`ingest_service.gateway.workers.supervise`)."""
    from ingest_service.gateway.workers import supervise

    return supervise(config)
