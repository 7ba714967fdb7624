"""The gateway's Prometheus metrics (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["GatewayMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Counters of accepted and rejected events/requests and a request latency histogram."""

    def __init__(self) -> None:
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
        self.devices = Gauge(
            "gateway_registry_devices",
            "Devices in the gateway's registry view",
            registry=self.registry,
        )
        self.registry_version = Gauge(
            "gateway_registry_version",
            "Delta version of registry/devices the gateway serves",
            registry=self.registry,
        )

    def declare_channel(self, channel: str) -> None:
        """Export a channel's series at zero before its first event."""
        self.accepted.labels(channel)
        self.latency.labels(channel)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
