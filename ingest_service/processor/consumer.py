"""The Kafka side of the processor: the group consumer, its rebalance listener, the batch buffer.

Offsets live in the lake, not in Kafka: whenever the group hands this process
partitions, the listener asks the :class:`~ingest_service.processor.processor.Processor`
where each one stands and seeks there.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import ConsumerRebalanceListener

from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.processor import Processor
from workbench.config import Config

__all__ = ["Buffer", "RebalanceListener", "consumer_settings", "make_consumer"]

logger = logging.getLogger(__name__)


def consumer_settings(config: Config, *, group: str | None) -> dict[str, Any]:
    """kafka-python settings shared by the processor and the bench's bare consumer."""
    return {
        "bootstrap_servers": config.bootstrap_servers,
        "group_id": group,
        "client_id": "workbench-processor",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # The Tansu broker's group join waits about half the session timeout.
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1500,
        "max_poll_interval_ms": 300_000,
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "receive_buffer_bytes": 4 * 1024 * 1024,
    }


def make_consumer(config: Config) -> Any:
    """A consumer in the processors' group (not yet subscribed)."""
    from kafka import KafkaConsumer

    return KafkaConsumer(**consumer_settings(config, group=config.processor_group))


class Buffer:
    """Records polled but not yet processed, as columns."""

    def __init__(self) -> None:
        self.batch = RecordBatch([], [], [], [])

    def __len__(self) -> int:
        return len(self.batch)

    def extend(self, partition: int, records: list[Any]) -> None:
        """Append one partition's polled records."""
        b = self.batch
        b.values.extend([r.value for r in records])
        b.keys.extend([r.key for r in records])
        b.offsets.extend([r.offset for r in records])
        b.partitions.extend([partition] * len(records))

    def take(self) -> RecordBatch:
        """Everything buffered; the buffer is empty afterwards."""
        batch, self.batch = self.batch, RecordBatch([], [], [], [])
        return batch

    def clear(self) -> None:
        """Drop what was buffered (re-read after the next seek)."""
        self.batch = RecordBatch([], [], [], [])


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks every assigned partition to where the lake says it stands."""

    def __init__(self, consumer: Any, processor: Processor, buffer: Buffer) -> None:
        self.consumer = consumer
        self.processor = processor
        self.buffer = buffer

    def on_partitions_revoked(self, revoked: list[Any]) -> None:
        """Buffered records are dropped; whoever owns their partitions next re-reads them."""
        self.buffer.clear()
        logger.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: list[Any]) -> None:
        """Forget partitions that went elsewhere, take over new ones, seek all."""
        now = {tp.partition for tp in assigned}
        self.processor.revoke(set(self.processor.offsets) - now)
        self.processor.assign(now)  # only the new ones; kept partitions keep their state
        for tp in assigned:
            position = self.processor.offsets[tp.partition].telemetry + 1
            if position > 0:
                self.consumer.seek(tp, position)
            else:
                self.consumer.seek_to_beginning(tp)
