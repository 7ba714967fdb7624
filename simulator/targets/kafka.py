"""Straight to Kafka, in the gateway's output format (for benchmarks of the ingest path).

The simulator plays the gateway here: events the gateway would refuse
(unprovisioned or de-provisioned devices) are not sent, and ``received_at`` is
the simulated gateway clock. kafka-python with ``acks=all`` and batching.
"""

from __future__ import annotations

import logging
from typing import Any

import polars as pl

from simulator.encode import kafka_values
from simulator.fleet import STATUS, Fleet
from simulator.targets.base import Target
from workbench.config import Config
from workbench.exceptions import SimulatorError
from workbench.kafka import client_settings

__all__ = ["KafkaTarget"]

logger = logging.getLogger(__name__)


class KafkaTarget(Target):
    """Produces each accepted event to the configured topic, keyed by device id."""

    name = "kafka"

    def __init__(self, fleet: Fleet, config: Config, options: object = None) -> None:
        super().__init__(fleet)
        self.config = config
        self._producer: Any = None
        self._errors: list[BaseException] = []

    def prepare(self) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            self._producer = KafkaProducer(
                **client_settings(self.config),
                acks="all",
                linger_ms=20,
                batch_size=512 * 1024,
                max_request_size=4 * 1024 * 1024,
                client_id="simulator",
            )
        except (KafkaError, OSError) as exc:
            raise SimulatorError(
                f"cannot reach Kafka at {self.config.bootstrap_servers}: {exc}",
                hint="start the stack with 'workbench up' or set KAFKA_BOOTSTRAP_SERVERS",
            ) from exc

    def _on_error(self, exc: BaseException) -> None:
        self._errors.append(exc)

    def send(self, chunk: pl.DataFrame) -> pl.Series:
        ok = chunk["status"] == 0
        accepted = chunk.filter(ok)
        _, _, keys = self.fleet._record_parts
        topic, produce = self.config.topic, self._producer.send
        for device, value in zip(
            accepted["device"].to_list(), kafka_values(self.fleet, accepted).to_list(), strict=True
        ):
            produce(topic, key=keys[device], value=value).add_errback(self._on_error)
        self.stats.sent += accepted.height
        self.stats.skipped += chunk.height - accepted.height
        status = pl.Series(list(STATUS)).gather(chunk["status"])
        return pl.select(
            pl.when(pl.lit(ok)).then(pl.lit("sent")).otherwise("refused-" + pl.lit(status))
        ).to_series()

    def flush(self) -> None:
        self._producer.flush()
        failed = len(self._errors)
        if failed:
            logger.error("%d events failed to reach Kafka, first: %s", failed, self._errors[0])
            self.stats.rejected["kafka-error"] += failed
            self.stats.failed += failed
            self._errors.clear()
        self.stats.accepted = self.stats.sent - self.stats.failed

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
