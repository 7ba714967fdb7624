"""A note's delivery is reported as it ends, on a real broker: acknowledged, or lost when
it cannot be delivered (what ``gateway_rejection_notes_total`` counts)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient

from ingest_service.gateway.producer import AsyncProducer
from workbench.config import Config
from workbench.kafka import client_settings

pytestmark = pytest.mark.integration


def test_a_note_is_reported_sent_once_acked_and_lost_when_it_cannot_be_delivered(
    kafka_config: Config,
) -> None:
    config = dataclasses.replace(kafka_config, gateway_ack_timeout=2.0)
    producer = AsyncProducer(config)
    producer.start().result(timeout=60)
    ended: list[tuple[str, bool]] = []
    settled = threading.Semaphore(0)

    def report(name: str) -> Callable[[bool], None]:
        def delivered(acked: bool) -> None:
            ended.append((name, acked))
            settled.release()

        return delivered

    try:
        assert producer.note(b"dev-1", b'{"n":1}', report("first"))
        assert settled.acquire(timeout=30)
        assert ended == [("first", True)]
        # the topic goes (the producer still knows its partitions): nothing can be stored
        admin = KafkaAdminClient(**client_settings(config))
        try:
            admin.delete_topics([config.topic])
        finally:
            admin.close()
        assert producer.note(b"dev-1", b'{"n":2}', report("second"))
        assert settled.acquire(timeout=60)  # within the delivery timeout (3 s)
        assert ended == [("first", True), ("second", False)]
    finally:
        producer.close()
