"""Refusals that count against a building: a real gateway (real sockets) notes each
refusal of an authenticated device's data on the real broker's topic, and the processor
(real Delta tables) turns a flood of them into one rejected-rate alarm of that device's
building and tenant — never another tenant's, whatever device id a refused request
claims."""

from __future__ import annotations

import json
import time

import httpx
import polars as pl
import pytest
from kafka import KafkaConsumer, TopicPartition

from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.processor import Processor
from tests.ingest_service.gateway.conftest import live_gateway
from tests.ingest_service.gateway.test_http import _event
from workbench.alarms import rulebook
from workbench.config import Config
from workbench.kafka import client_settings
from workbench.registry import sas_token
from workbench.tenancy.principal import Principal

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYSTEM = Principal.system("test")


def _records(config: Config, n: int) -> RecordBatch:
    """The topic's first ``n`` records, as the processor polls them."""
    consumer = KafkaConsumer(**client_settings(config), auto_offset_reset="earliest")
    got: list[tuple[int, int, bytes, bytes]] = []
    try:
        parts = consumer.partitions_for_topic(config.topic)
        consumer.assign([TopicPartition(config.topic, p) for p in parts])
        consumer.seek_to_beginning()
        for _ in range(60):
            for records in consumer.poll(timeout_ms=500).values():
                got += [(r.partition, r.offset, r.key, r.value) for r in records]
            if len(got) >= n:
                break
    finally:
        consumer.close()
    got.sort()
    return RecordBatch(
        [v for *_, v in got],
        [k for _, _, k, _ in got],
        [p for p, *_ in got],
        [o for _, o, *_ in got],
    )


def test_a_device_sending_malformed_events_raises_its_buildings_rejected_rate_alarm_only(
    kafka_config: Config,
) -> None:
    with live_gateway(kafka_config) as gw:
        gw.registry.add_building("b-3", tenant="t-1")
        gw.registry.add_tenant("t-2")
        gw.registry.add_building("b-2", tenant="t-2")
        gw.provision("dev-3", building="b-3")
        gw.provision("dev-2", building="b-2")
        gw.wait_for_registry()
        rule = (
            '[[rule]]\nname = "rejecting"\nkind = "rejected_rate"\nper = "1m"\nseverity = "minor"\n'
        )
        rulebook.set_rules(gw.config, "t-1", rule + "above = 5\n", source="t-1", principal=SYSTEM)
        # t-2's fires on a single refusal: none of what follows may count against it
        rulebook.set_rules(gw.config, "t-2", rule + "above = 0\n", source="t-2", principal=SYSTEM)

        def post(device: str, body: bytes, token: str | None = None) -> int:
            headers = {
                "Authorization": token or gw.token(device),
                "Content-Type": "application/json",
            }
            r = httpx.post(f"{gw.url}/v1/telemetry", content=body, headers=headers, timeout=15)
            return r.status_code

        statuses = [post("dev-1", b"{nope") for _ in range(20)]  # firmware gone wrong
        good = [post(d, json.dumps(_event(s)).encode()) for d in ("dev-3", "dev-2") for s in (1, 2)]
        # refusals before authentication, claiming t-2's device: not attributed
        forged = [
            post("dev-2", b"{nope", token=sas_token("dev-2", gw.keys["dev-1"])) for _ in range(5)
        ]
        assert (set(statuses), set(good), set(forged)) == ({400}, {202}, {401})
        batch = _records(gw.config, 20 + 4)
        # each note counted where an operator sees it once the broker acknowledged it
        # (the acks may reach the gateway just after the records reach a consumer);
        # none dropped or lost with the broker up
        deadline = time.monotonic() + 15
        while 'gateway_rejection_notes_total{result="sent"} 20.0' not in (metrics := gw.metrics()):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.1)
        assert 'result="dropped"' not in metrics and 'result="lost"' not in metrics

    notes = [json.loads(v) for v in batch.values if b'"rejected"' in (v or b"")]
    assert len(notes) == 20 and len(batch) == 24
    assert {(n["device_id"], n["tenant_id"], n["building_id"], n["status"]) for n in notes} == {
        ("dev-1", "t-1", "b-1", 400)
    }

    processor = Processor(gw.config)
    processor.assign(sorted(set(batch.partitions)))
    processor.process(batch)
    alarms = pl.read_delta(f"{gw.config.lake}/alarms")
    assert alarms.select("tenant_id", "building_id", "rule", "kind").rows() == [
        ("t-1", "b-1", "rejecting", "rejected_rate")
    ]
    rejected = pl.read_delta(f"{gw.config.lake}/telemetry_rejected")
    assert rejected.group_by("reason", "tenant_id", "building_id").len().rows() == [
        ("gateway: malformed", "t-1", "b-1", 20)
    ]
