"""Consumer lag and freshness on the gateway's ``/metrics``, computed at scrape time.

These are not prometheus-client metrics shared by the workers: whichever worker
answers a scrape reads the figures itself, keeps them for
``WORKBENCH_METRICS_CACHE`` seconds and appends them to the rendered text:

* ``workbench_consumer_lag{partition}`` and ``workbench_consumer_lag_total``: records
  of the topic the processors' group has not consumed (committed) yet;
* ``workbench_consumer_end_offset{partition}`` (high watermark) and
  ``workbench_consumer_committed_offset{partition}`` (only partitions the group
  committed) — all four from :class:`workbench.kafka_lag.LagReader`, whose Kafka
  clients live as long as the worker (created on its first scrape, closed when it
  stops);
* ``workbench_freshness_seconds``: now minus the newest event reflected in
  ``building_state`` (:func:`workbench.lake.read.freshness`).

A scrape waits at most :data:`SCRAPE_WAIT_S` for a refresh; a slower one (a broker
that accepts connections but does not answer) goes on in the background and the
scrape shows the previous figures. A figure that cannot be read (Kafka down, topic
missing, lake unreadable) is logged once per outage, left out of the scrape and
counted in ``workbench_metrics_failures_total{source="kafka"|"lake"}`` — ``/metrics``
itself always answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from ingest_service.gateway.metrics import GatewayMetrics
from workbench.config import Config
from workbench.kafka_lag import ConsumerLag, LagReader

__all__ = ["KAFKA_TIMEOUT_S", "SCRAPE_WAIT_S", "PipelineMetrics"]

logger = logging.getLogger(__name__)

KAFKA_TIMEOUT_S = 2.0
"""Bound on each Kafka request of a refresh."""
SCRAPE_WAIT_S = 1.0
"""Longest a scrape waits for a refresh before it shows the previous figures."""


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    lag: ConsumerLag | None  # None: unavailable
    freshness_s: float | None  # None: unavailable or no building_state row yet


class PipelineMetrics:
    """The lag and freshness gauges of one gateway worker (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        metrics: GatewayMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._clock = clock
        self._reader = LagReader(config, timeout_s=KAFKA_TIMEOUT_S)
        self._snapshot: _Snapshot | None = None
        self._taken_at = -float("inf")
        self._refreshing: asyncio.Task[None] | None = None
        self._failing: dict[str, str] = {}  # source -> last error logged (one log per outage)

    async def render(self) -> bytes:
        """The gauges in the Prometheus text format (refreshed first when stale)."""
        if self._refreshing is None and self._clock() - self._taken_at >= self.config.metrics_cache:
            self._refreshing = asyncio.create_task(self._refresh(), name="pipeline-metrics")
        if self._refreshing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._refreshing), SCRAPE_WAIT_S)
        return generate_latest(self)

    @property
    def refreshing(self) -> bool:
        """Whether a refresh is under way (a scrape may have returned before it ended)."""
        return self._refreshing is not None

    async def aclose(self) -> None:
        """Close the Kafka clients (after a refresh in progress, if any, has finished)."""
        await asyncio.to_thread(self._reader.close)
        if self._refreshing is not None:
            with contextlib.suppress(Exception):
                await self._refreshing

    async def _refresh(self) -> None:
        try:
            self._snapshot = await asyncio.to_thread(self._read)
            self._taken_at = self._clock()
        except Exception:  # never let a refresh break /metrics; _read already catches
            logger.exception("refreshing the lag and freshness gauges failed")
        finally:
            self._refreshing = None

    def _read(self) -> _Snapshot:
        """Read both figures (on a worker thread: the Kafka and lake clients block)."""
        from workbench.lake.read import freshness
        from workbench.tenancy.principal import Principal

        lag = None
        try:
            lag = self._reader.read()
            self._recovered("kafka")
        except Exception as exc:
            self._failed("kafka", "consumer lag", exc)
        age = None
        try:
            age = freshness(self.config, principal=Principal.system("gateway-metrics"))
            self._recovered("lake")
        except Exception as exc:
            self._failed("lake", "freshness", exc)
        return _Snapshot(lag, age)

    def _failed(self, source: str, what: str, exc: Exception) -> None:
        self.metrics.pipeline_failures.labels(source).inc()
        first_line = next(iter(str(exc).splitlines()), "")  # delta errors append a backtrace
        text = f"{type(exc).__name__}: {first_line}"
        if self._failing.get(source) != text:
            logger.warning("/metrics: %s unavailable, series left out (%s)", what, text)
        self._failing[source] = text

    def _recovered(self, source: str) -> None:
        if self._failing.pop(source, None) is not None:
            logger.info("/metrics: %s figures available again", source)

    def collect(self) -> Iterable[Metric]:
        """The gauges of the last snapshot (prometheus-client's collector protocol)."""
        snapshot = self._snapshot
        if snapshot is None:
            return
        if snapshot.lag is not None:
            yield from _lag_families(snapshot.lag)
        if snapshot.freshness_s is not None:
            yield GaugeMetricFamily(
                "workbench_freshness_seconds",
                "Now minus the newest event reflected in building_state",
                value=snapshot.freshness_s,
            )


def _lag_families(lag: ConsumerLag) -> Iterable[Metric]:
    group = f"group {lag.group!r} on topic {lag.topic!r}"
    per_partition = GaugeMetricFamily(
        "workbench_consumer_lag",
        f"Records not yet consumed by the processors ({group}), by partition",
        labels=["partition"],
    )
    ends = GaugeMetricFamily(
        "workbench_consumer_end_offset",
        f"End offset (high watermark) of each partition ({group})",
        labels=["partition"],
    )
    committed = GaugeMetricFamily(
        "workbench_consumer_committed_offset",
        f"Offset the processors committed, by partition; absent before the first commit ({group})",
        labels=["partition"],
    )
    for p in lag.partitions:
        label = [str(p.partition)]
        per_partition.add_metric(label, p.lag)
        ends.add_metric(label, p.end_offset)
        if p.committed is not None:
            committed.add_metric(label, p.committed)
    yield per_partition
    yield GaugeMetricFamily(
        "workbench_consumer_lag_total",
        f"Records not yet consumed by the processors ({group}), all partitions",
        value=lag.total,
    )
    yield ends
    yield committed
