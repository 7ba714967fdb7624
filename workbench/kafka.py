"""Kafka helpers shared by the supervisor, the gateway and the processor."""

from __future__ import annotations

import logging
import time
from typing import Any

from workbench.config import Config
from workbench.exceptions import ComponentFailed

__all__ = ["describe_topic", "ensure_topic", "wait_for_kafka"]

logger = logging.getLogger(__name__)


def _admin(config: Config, *, timeout_s: float = 5.0) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        request_timeout_ms=int(timeout_s * 1000),
        client_id="workbench-admin",
    )


def describe_topic(config: Config, *, timeout_s: float = 5.0) -> int | None:
    """Number of partitions of the configured topic, or None when it does not exist.

    Raises :class:`kafka.errors.KafkaError` when the cluster cannot be reached.
    """
    admin = _admin(config, timeout_s=timeout_s)
    try:
        if config.topic not in admin.list_topics():
            return None
        (topic,) = admin.describe_topics([config.topic])
        return len(topic["partitions"])
    finally:
        admin.close()


def ensure_topic(config: Config, *, timeout_s: float = 10.0) -> int:
    """Create the telemetry topic when missing; return its partition count."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    partitions = describe_topic(config, timeout_s=timeout_s)
    if partitions is not None:
        if partitions != config.topic_partitions:
            logger.warning(
                "topic %s has %d partitions, WORKBENCH_TOPIC_PARTITIONS asks for %d; keeping %d",
                config.topic,
                partitions,
                config.topic_partitions,
                partitions,
            )
        return partitions
    admin = _admin(config, timeout_s=timeout_s)
    try:
        admin.create_topics(
            [NewTopic(config.topic, config.topic_partitions, 1)],
            timeout_ms=int(timeout_s * 1000),
        )
        logger.info("created topic %s with %d partitions", config.topic, config.topic_partitions)
    except TopicAlreadyExistsError:
        pass  # a concurrent creator won
    finally:
        admin.close()
    return describe_topic(config, timeout_s=timeout_s) or config.topic_partitions


def wait_for_kafka(config: Config, *, timeout_s: float) -> None:
    """Block until the cluster answers metadata requests, or raise ComponentFailed."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            describe_topic(config, timeout_s=2.0)
            return
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.2)
    raise ComponentFailed(
        f"Kafka at {config.bootstrap_servers} did not answer within {timeout_s:.0f}s ({last})",
        hint="check KAFKA_BOOTSTRAP_SERVERS, or unset it to use the embedded broker",
    )
