"""Consumer lag (workbench.kafka) against the real embedded broker.

Each test produces a known number of records to each partition of a fresh topic,
commits offsets for a fresh group with a real KafkaConsumer and compares the lag
partition by partition.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from tests.conftest import free_port, fresh_topic
from workbench.config import Config
from workbench.exceptions import LagUnavailable
from workbench.kafka import client_settings, ensure_topic, no_topic_auto_creation, topic_id
from workbench.kafka_lag import LagReader, PartitionLag, consumer_lag

pytestmark = pytest.mark.integration

# records per partition of the test topic (8 partitions, see WORKBENCH_TOPIC_PARTITIONS)
COUNTS = {0: 13, 1: 0, 2: 40, 3: 7, 4: 1, 5: 22, 6: 0, 7: 5}


def produce(config: Config, counts: dict[int, int]) -> None:
    """``counts[p]`` records to partition ``p``, batched the way the gateway batches."""
    producer = KafkaProducer(
        **client_settings(config), acks="all", linger_ms=20, batch_size=1 << 20
    )
    try:
        for partition, n in counts.items():
            for i in range(n):
                producer.send(config.topic, value=b"%d" % i, partition=partition)
        producer.flush()
    finally:
        producer.close()


def commit(config: Config, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` (partition -> next offset) for the config's processor group."""
    consumer = KafkaConsumer(
        **client_settings(config),
        group_id=config.processor_group,
        enable_auto_commit=False,
    )
    try:
        consumer.commit(
            {
                TopicPartition(config.topic, p): OffsetAndMetadata(o, "", -1)
                for p, o in offsets.items()
            }
        )
    finally:
        consumer.close()


@pytest.fixture(params=["session", "tansu"])
def lag_config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """A fresh topic and a fresh group, on the session's broker and on Tansu (whose end
    offsets the lag reader takes from fetch answers: workbench.tansu)."""
    broker = request.getfixturevalue(
        "broker_config" if request.param == "session" else "tansu_broker_config"
    )
    config = fresh_topic(broker, tmp_path)
    assert config.topic_partitions == len(COUNTS)
    return dataclasses.replace(config, processor_group=f"g-{uuid.uuid4().hex[:8]}")


def test_lag_per_partition_before_and_after_commits(lag_config: Config):
    produce(lag_config, COUNTS)

    before = consumer_lag(lag_config)
    assert before.group == lag_config.processor_group
    assert before.topic == lag_config.topic
    # no commit yet: every record is unconsumed (and batched records are all counted)
    assert before.partitions == tuple(PartitionLag(p, n, None) for p, n in COUNTS.items())
    assert before.total == sum(COUNTS.values()) == 88
    assert before.summary() == "lag 88 (max p2: 40)"

    commit(lag_config, {0: 13, 2: 10, 5: 21, 7: 5})
    after = consumer_lag(lag_config)
    assert [(p.partition, p.end_offset, p.committed, p.lag) for p in after.partitions] == [
        (0, 13, 13, 0),
        (1, 0, None, 0),
        (2, 40, 10, 30),
        (3, 7, None, 7),
        (4, 1, None, 1),
        (5, 22, 21, 1),
        (6, 0, None, 0),
        (7, 5, 5, 0),
    ]
    assert after.total == 39
    assert after.worst == PartitionLag(2, 40, 10)
    assert after.summary() == "lag 39 (max p2: 30)"
    assert after.to_json()["partitions"][2] == {
        "partition": 2,
        "end_offset": 40,
        "committed": 10,
        "lag": 30,
    }

    commit(lag_config, dict(COUNTS))
    caught_up = consumer_lag(lag_config)
    assert caught_up.total == 0
    assert caught_up.summary() == "lag 0"


def test_a_reader_follows_new_records_and_commits_across_reads(lag_config: Config):
    with LagReader(lag_config) as reader:
        assert reader.read().total == 0  # an empty topic
        produce(lag_config, {3: 50})
        assert reader.read().partitions[3] == PartitionLag(3, 50, None)
        commit(lag_config, {3: 20})
        produce(lag_config, {3: 5, 6: 2})
        lag = reader.read()
        assert lag.partitions[3] == PartitionLag(3, 55, 20)
        assert lag.partitions[6] == PartitionLag(6, 2, None)
        assert lag.summary() == "lag 37 (max p3: 35)"
    with pytest.raises(LagUnavailable, match="closed"):
        reader.read()


def test_a_reader_stays_exact_over_many_reads_of_batched_partitions(lag_config: Config):
    """Reads a few hundred milliseconds apart, as the gateway's cache makes them, each after
    one more batch on several partitions: a fetch answer left over from the previous read
    must never stand in for the current end offset."""
    expected = dict.fromkeys((0, 3, 5), 0)
    with LagReader(lag_config) as reader:
        for _ in range(6):
            produce(lag_config, dict.fromkeys(expected, 7))
            expected = {p: n + 7 for p, n in expected.items()}
            ends = {p.partition: p.end_offset for p in reader.read().partitions}
            assert {p: ends[p] for p in expected} == expected
            time.sleep(0.2)


def test_missing_topic_is_a_clear_error(lag_config: Config):
    missing = dataclasses.replace(lag_config, topic=f"missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(LagUnavailable, match=f"topic '{missing.topic}' does not exist"):
        consumer_lag(missing)


def test_unreachable_kafka_is_a_clear_error(lag_config: Config):
    down = dataclasses.replace(lag_config, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(LagUnavailable) as caught:
        consumer_lag(down, timeout_s=1.0)
    assert f"Kafka at {down.bootstrap_servers} did not answer" in str(caught.value)
    assert caught.value.hint


def test_topic_ids_tell_topics_apart_and_a_missing_topic_has_none(lag_config: Config):
    other = dataclasses.replace(lag_config, topic=f"telemetry-{uuid.uuid4().hex[:8]}")
    ensure_topic(other)
    ids = {topic_id(lag_config), topic_id(other)}
    assert None not in ids and len(ids) == 2
    assert topic_id(lag_config) == topic_id(lag_config)
    assert topic_id(dataclasses.replace(lag_config, topic="never-created")) is None


@pytest.mark.parametrize("kind", ["producer", "consumer"])
def test_a_client_made_not_to_auto_create_leaves_a_missing_topic_missing(
    lag_config: Config, kind: str
):
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaTimeoutError

    missing = f"missing-{uuid.uuid4().hex[:8]}"
    client = client_settings(lag_config)
    if kind == "producer":
        producer = no_topic_auto_creation(
            KafkaProducer(**client, allow_auto_create_topics=False, max_block_ms=1500)
        )
        with pytest.raises(KafkaTimeoutError):
            producer.send(missing, b"x").get(timeout=5)
        producer.close(timeout=0)
    else:
        consumer = no_topic_auto_creation(KafkaConsumer(**client, allow_auto_create_topics=False))
        consumer.subscribe([missing])
        consumer.poll(timeout_ms=1500)
        consumer.close()
    admin = KafkaAdminClient(**client)
    try:
        assert missing not in admin.list_topics()
    finally:
        admin.close()
