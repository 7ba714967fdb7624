"""The gateway's Prometheus metrics (``GET /metrics``).

With several worker processes (``WORKBENCH_GATEWAY_WORKERS`` > 1) the metrics
use prometheus-client's *multiprocess mode*: the parent points
``PROMETHEUS_MULTIPROC_DIR`` of every worker at one fresh folder, each worker
writes its values to its own memory-mapped files there, and whichever worker
answers ``/metrics`` renders the sum over all of them. Counters and
histograms of a worker that died stay in the sum (totals never go backwards
when a worker is replaced); the gauges report over live workers only:
``gateway_registry_devices`` the largest view, ``gateway_registry_version`` the
*oldest* version any live worker serves, ``gateway_registry_stale_seconds`` the stalest.

The consumer lag and freshness gauges are not among them: the answering worker
computes those at scrape time (:mod:`ingest_service.gateway.pipeline`); only their
failure counter lives here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["GatewayMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Counters of accepted and rejected events/requests and a request latency histogram.

    ``multiprocess_dir`` is the folder shared by the workers (None: one process).
    """

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "gateway_events_accepted",
            "Events acknowledged by the broker, by channel (http or a legacy protocol)",
            ["channel"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "gateway_rejected",
            "Requests (HTTP) or frames (legacy) refused, by channel, status and reason",
            ["channel", "status", "reason"],
            registry=self.registry,
        )
        self.rejection_notes = Counter(
            "gateway_rejection_notes",
            "Refusals of authenticated devices noted on the topic for their building's "
            "rejected-event rate, by result (sent: acknowledged by the broker; lost: "
            "handed to the producer, not delivered; dropped: not handed over, the broker "
            "unreachable or the buffer full)",
            ["result"],
            registry=self.registry,
        )
        self.unreadable = Counter(
            "gateway_unreadable_requests",
            "Bytes on the HTTP port that are not a readable HTTP request (answered with a "
            "problem+json 4xx before routing; port scans, TLS to the plain port), by status",
            ["status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request (or frame) received to answer sent, by channel",
            ["channel"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.legacy_frames = Counter(
            "gateway_legacy_frames",
            "Legacy frames received, by protocol and result (ok or err)",
            ["protocol", "result"],
            registry=self.registry,
        )
        self.connections = Gauge(
            "gateway_open_connections",
            "Connections open, by door (http or legacy), summed over live workers",
            ["door"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        for door in ("http", "legacy"):
            self.connections.labels(door)
        self.devices = Gauge(
            "gateway_registry_devices",
            "Devices in the gateway's registry view (largest over live workers)",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.registry_version = Gauge(
            "gateway_registry_version",
            "Delta version of registry/devices the gateway serves (oldest over live workers)",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.registry_version.set(-1)
        self.registry_changes = Counter(
            "gateway_registry_changes",
            "Devices changed in the registry view by reading only what a version changed "
            "(the table's change data feed), summed over workers",
            registry=self.registry,
        )
        self.registry_resyncs = Counter(
            "gateway_registry_resyncs",
            "Full reloads of the registry view after the first load: versions the change "
            "feed could not explain (vacuumed, or older than the feed)",
            registry=self.registry,
        )
        self.registry_confirmations = Counter(
            "gateway_registry_confirmations",
            "Registry reads a door waited for before answering a device whose signature "
            "verified but which its view refused (new, re-enabled, rotated or refused)",
            registry=self.registry,
        )
        self.registry_read_errors = Counter(
            "gateway_registry_read_errors",
            "Registry reads that failed (the lake's store down, the table's folder gone); "
            "meanwhile the worker serves its last view",
            registry=self.registry,
        )
        self.registry_stale = Gauge(
            "gateway_registry_stale_seconds",
            "While registry reads fail: seconds since the last one that succeeded, updated "
            "at each attempt (0 while they succeed); the largest over live workers",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.registry_stale.set(0)
        self.pipeline_failures = Counter(
            "workbench_metrics_failures",
            "Refreshes of the consumer lag (source=kafka) or freshness (source=lake) gauges "
            "that failed; the series are left out until a refresh succeeds",
            ["source"],
            registry=self.registry,
        )
        for source in ("kafka", "lake"):
            self.pipeline_failures.labels(source)

    def declare_channel(self, channel: str) -> None:
        """Export a channel's series at zero before its first event."""
        self.accepted.labels(channel)
        self.latency.labels(channel)

    def _collected(self) -> CollectorRegistry:
        if self.multiprocess_dir is None:
            return self.registry
        merged = CollectorRegistry()
        _SettledFilesCollector(merged, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return merged

    def render(self) -> bytes:
        """The Prometheus text exposition (over every worker in multiprocess mode)."""
        return generate_latest(self._collected())

    def served_registry_version(self) -> int | None:
        """The registry version every live worker serves (None until all have loaded)."""
        value = self._collected().get_sample_value("gateway_registry_version")
        return None if value is None or value < 0 else int(value)


class _SettledFilesCollector(MultiProcessCollector):
    """prometheus-client's multiprocess collector, minus files still being created.

    A worker creates its file empty and sizes it a moment later; the stock collector
    reading it in between fails with ``struct.error``, and ``/healthz`` or ``/metrics``
    answered 500 while a sibling worker was starting. An empty file has no values yet,
    so leaving it out is exact.
    """

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in Path(self._path).glob("*.db"):
            try:
                if path.stat().st_size > 0:
                    files.append(str(path))
            except FileNotFoundError:  # a dead worker's live gauge, just removed
                continue
        return self.merge(files, accumulate=True)  # type: ignore[no-any-return,no-untyped-call]
