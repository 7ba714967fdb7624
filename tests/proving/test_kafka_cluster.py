"""The replicated Kafka cluster the drills and tests run on (proving.kafka_cluster): what
the workbench's topic gets on it, a node killed and started again, and the one-line error
when Java is missing."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaProducer

from proving.kafka_cluster import KafkaCluster
from tests.conftest import isolated_env, run_cli
from workbench.config import Config
from workbench.kafka import ensure_topic

_CLUSTER = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]


def _on_cluster(test):
    for mark in _CLUSTER:
        test = mark(test)
    return test


def _config(cluster: KafkaCluster, tmp_path) -> Config:
    return Config.from_env(
        isolated_env(
            tmp_path / "home",
            KAFKA_BOOTSTRAP_SERVERS=cluster.bootstrap_servers,
            WORKBENCH_TOPIC=f"telemetry-{uuid.uuid4().hex[:8]}",
            WORKBENCH_TOPIC_PARTITIONS="4",
        )
    )


@_on_cluster
def test_the_workbench_topic_is_replicated_on_every_broker(kafka_cluster, tmp_path) -> None:
    config = _config(kafka_cluster, tmp_path)
    assert ensure_topic(config) == 4
    layout = kafka_cluster.describe(config.topic)
    assert [p.partition for p in layout] == [0, 1, 2, 3]
    assert all(sorted(p.replicas) == [1, 2, 3] for p in layout)
    assert all(sorted(p.isr) == [1, 2, 3] for p in layout)
    assert {p.leader for p in layout} == {1, 2, 3}  # leadership is spread


@_on_cluster
def test_a_killed_leader_moves_and_rejoins_and_nothing_acked_is_lost(
    kafka_cluster, tmp_path
) -> None:
    from kafka import KafkaConsumer, TopicPartition

    config = _config(kafka_cluster, tmp_path)
    ensure_topic(config)
    victim = kafka_cluster.leader(config.topic, 0)
    producer = KafkaProducer(
        bootstrap_servers=config.bootstrap_servers, acks="all", request_timeout_ms=30000
    )
    try:
        before = [producer.send(config.topic, b"b%d" % i, partition=0) for i in range(100)]
        for future in before:
            future.get(timeout=30)
        kafka_cluster.kill(victim)
        deadline = time.monotonic() + 120
        while kafka_cluster.leader(config.topic, 0) in (-1, victim):
            assert time.monotonic() < deadline, "partition 0 got no new leader"
            time.sleep(0.2)
        # two of three replicas in sync satisfy min.insync.replicas=2: acks=all writes go on
        during = [producer.send(config.topic, b"d%d" % i, partition=0) for i in range(100)]
        for future in during:
            future.get(timeout=60)
    finally:
        producer.close()
        kafka_cluster.start_node(victim, timeout_s=300)
    deadline = time.monotonic() + 180
    while kafka_cluster.lagging(victim):
        assert time.monotonic() < deadline, kafka_cluster.lagging(victim)
        time.sleep(0.5)
    consumer = KafkaConsumer(bootstrap_servers=config.bootstrap_servers, consumer_timeout_ms=10000)
    try:
        tp = TopicPartition(config.topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        values = [record.value for record in consumer]
    finally:
        consumer.close()
    assert sorted(values) == sorted(
        [b"b%d" % i for i in range(100)] + [b"d%d" % i for i in range(100)]
    )


@pytest.mark.timeout(120)
def test_the_cluster_drill_without_java_is_one_clear_line(tmp_path) -> None:
    env = isolated_env(tmp_path / "home")
    env.pop("JAVA_HOME", None)
    env["PATH"] = str(tmp_path)  # no java
    done = run_cli(env, "drill", "cluster-broker-kill")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Java is not installed" in lines[0]
