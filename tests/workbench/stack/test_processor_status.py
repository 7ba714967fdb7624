"""The processor's line of `workbench status`: consumer lag per partition and freshness.

The first tests call the processor component's own ``describe`` over the session
broker (a fresh topic and group, offsets committed by a real KafkaConsumer); the
last runs the real `workbench up broker processor` and `status --json`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid

import pytest
from kafka import KafkaProducer

from tests.conftest import free_port, run_cli
from tests.ingest_service.processor.conftest import encode, event
from tests.workbench.lake.test_freshness import state_row, write_state
from tests.workbench.test_kafka import commit, produce
from workbench.config import Config
from workbench.kafka import client_settings
from workbench.stack.base import Component, Detail
from workbench.stack.components import registered

pytestmark = pytest.mark.integration


def processor() -> Component:
    return next(c for c in registered() if c.name == "processor")


@pytest.fixture
def lag_config(kafka_config: Config) -> Config:
    return dataclasses.replace(kafka_config, processor_group=f"g-{uuid.uuid4().hex[:8]}")


def test_detail_shows_total_and_worst_partition_and_metrics_each_partition(lag_config: Config):
    produce(lag_config, {1: 9, 4: 30, 6: 3})
    commit(lag_config, {4: 10, 6: 3})
    newest = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=12)
    write_state(lag_config, [state_row("t-1", "b-1", newest)])

    detail = processor().describe(lag_config)  # type: ignore[misc]
    described = dt.datetime.now(dt.UTC)

    assert isinstance(detail, Detail)
    assert "\n" not in detail.text
    assert detail.text.startswith("ok: lag 29 (max p4: 20); freshness 1"), detail.text
    assert detail.metrics is not None
    lag = detail.metrics["consumer_lag"]
    assert (lag["group"], lag["topic"], lag["total"]) == (
        lag_config.processor_group,
        lag_config.topic,
        29,
    )
    assert [
        (p["partition"], p["end_offset"], p["committed"], p["lag"]) for p in lag["partitions"]
    ] == [
        (0, 0, None, 0),
        (1, 9, None, 9),
        (2, 0, None, 0),
        (3, 0, None, 0),
        (4, 30, 10, 20),
        (5, 0, None, 0),
        (6, 3, 3, 0),
        (7, 0, None, 0),
    ]
    # freshness_seconds is rounded to the millisecond
    upper = (described - newest).total_seconds() + 0.0005
    assert 12 <= detail.metrics["freshness_seconds"] <= upper
    json.dumps(detail.metrics)  # what status --json prints


def test_unreachable_kafka_makes_the_line_say_so(lag_config: Config):
    down = dataclasses.replace(lag_config, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    detail = processor().describe(down)  # type: ignore[misc]
    assert isinstance(detail, Detail)
    assert detail.text.startswith(
        f"ok: lag unavailable (Kafka at {down.bootstrap_servers} did not answer ("
    ), detail.text
    assert detail.metrics is not None
    assert detail.metrics["consumer_lag"] is None
    assert "did not answer" in detail.metrics["consumer_lag_error"]
    assert detail.metrics["freshness_seconds"] is None  # no building_state yet


def test_the_line_shows_the_last_lake_maintenance_and_its_outcome(lag_config: Config):
    from workbench.lake.maintain import maintain

    before = processor().describe(lag_config)  # type: ignore[misc]
    assert isinstance(before, Detail)
    assert "; no lake maintenance yet" in before.text, before.text
    assert before.metrics is not None and before.metrics["last_maintenance"] is None

    write_state(lag_config, [state_row("t-1", "b-1", dt.datetime.now(dt.UTC))])
    maintain(lag_config)
    after = processor().describe(lag_config)  # type: ignore[misc]
    assert isinstance(after, Detail)
    assert "; lake maintained " in after.text and " ago: 0 files compacted into 0, " in after.text
    assert after.metrics is not None
    assert after.metrics["last_maintenance"]["outcome"] == "ok"
    assert after.metrics["last_maintenance"]["tables"] == 1  # building_state only
    json.dumps(after.metrics)


def _processor_entry(env: dict[str, str]) -> dict:
    doc = json.loads(run_cli(env, "status", "--json").stdout)
    return next(c for c in doc["components"] if c["name"] == "processor")


def test_status_json_of_a_running_processor_carries_lag_and_freshness(wb_env):
    env = {**wb_env, "WORKBENCH_TOPIC_PARTITIONS": "3", "WORKBENCH_COMMIT_INTERVAL": "0.2"}
    up = run_cli(env, "up", "broker", "processor")
    assert up.returncode == 0, up.stderr
    config = Config.from_env(env)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    producer = KafkaProducer(**client_settings(config), acks="all", linger_ms=20)
    seq = 0
    for partition, n in {0: 5, 2: 8}.items():
        for _ in range(n):
            seq += 1
            body = event(f"dev-{partition}", seq, now - dt.timedelta(seconds=2))
            key = str(body["device_id"]).encode()
            producer.send(config.topic, key=key, value=encode(body), partition=partition)
    producer.flush()
    producer.close()

    deadline = time.monotonic() + 60
    entry = _processor_entry(env)
    while time.monotonic() < deadline:
        lag = (entry.get("metrics") or {}).get("consumer_lag")
        if lag and lag["total"] == 0 and "stored 13," in entry["detail"]:
            break
        time.sleep(0.5)
        entry = _processor_entry(env)
    assert entry["healthy"] is True, entry
    assert entry["detail"].startswith("ok: lag 0; freshness "), entry["detail"]
    assert "stored 13," in entry["detail"]
    lag = entry["metrics"]["consumer_lag"]
    assert (lag["group"], lag["topic"]) == (config.processor_group, config.topic)
    # partition 1 got nothing: the processor never committed it
    assert [(p["end_offset"], p["committed"], p["lag"]) for p in lag["partitions"]] == [
        (5, 5, 0),
        (0, None, 0),
        (8, 8, 0),
    ]
    assert entry["metrics"]["freshness_seconds"] >= 2
    # only components with numbers carry "metrics": status --json's fields are a contract
    doc = json.loads(run_cli(env, "status", "--json").stdout)
    broker = next(c for c in doc["components"] if c["name"] == "broker")
    assert set(broker) == {"name", "healthy", "pid", "address", "detail"}
    table = run_cli(env, "status")
    assert table.returncode == 0
    assert "lag 0; freshness" in table.stdout
