"""The embedded Apache Kafka broker (WORKBENCH_BROKER=kafka): started by the real
`workbench up`, durable across SIGKILL and down/up, and every start-up fault a
one-line error that names the fix with nothing left half-started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from confluent_kafka import Consumer, Producer

from tests.conftest import isolated_env, run_cli
from workbench.config import Config
from workbench.exceptions import BrokerUnavailable
from workbench.kafka import rdkafka_client_settings
from workbench.stack import kafka_broker

pytestmark = pytest.mark.integration


@pytest.fixture
def kafka_env(tmp_path):
    env = isolated_env(tmp_path / "home", WORKBENCH_BROKER="kafka")
    yield env
    run_cli(env, "down", timeout=120)


def _status(env: dict[str, str]) -> tuple[int, dict]:
    result = run_cli(env, "status", "--json")
    return result.returncode, json.loads(result.stdout)


def _one_error_line(result, *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def _produce(client: dict[str, Any], topic: str, values: list[str]) -> None:
    delivered: list[str] = []
    failed: list[str] = []

    def on_delivery(err, msg) -> None:
        (failed if err else delivered).append(msg.value().decode())

    producer = Producer({**client, "acks": "all", "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value.encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failed == []
    assert sorted(delivered) == sorted(values)


def _read_all(client: dict[str, Any], topic: str, expected: int) -> list[str]:
    consumer = Consumer(
        {
            **client,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: list[str] = []
    idle = 0
    try:
        while len(seen) < expected and idle < 30:
            batch = consumer.consume(1000, 1.0)
            idle = 0 if batch else idle + 1
            seen += [m.value().decode() for m in batch if m.error() is None]
        # and nothing more than was written
        seen += [m.value().decode() for m in consumer.consume(1000, 1.0) if m.error() is None]
    finally:
        consumer.close()
    return seen


def _broker_pid(env: dict[str, str]) -> int:
    code, doc = _status(env)
    assert code == 0, doc
    (broker,) = doc["components"]
    return int(broker["pid"])


@pytest.mark.slow
def test_apache_kafka_keeps_acknowledged_events_across_sigkill_and_down_up(kafka_env):
    up = run_cli(kafka_env, "up", "broker", timeout=180)
    assert up.returncode == 0, up.stderr
    assert "Tansu" not in up.stderr
    code, doc = _status(kafka_env)
    assert code == 0
    (broker,) = doc["components"]
    assert broker["detail"].startswith(f"Apache Kafka {kafka_broker.kafka_version()}")
    assert kafka_broker.kafka_version().startswith("4.")
    assert psutil.Process(broker["pid"]).name() == "java"
    home = Path(kafka_env["WORKBENCH_HOME"])
    assert (home / "kafka" / "data" / "meta.properties").is_file()

    client = rdkafka_client_settings(Config.from_env(kafka_env))
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    values = [f"event-{i}" for i in range(5000)]
    _produce(client, topic, values)

    # SIGKILL: no chance to flush anything itself
    java = psutil.Process(broker["pid"])
    os.killpg(broker["pid"], signal.SIGKILL)
    java.wait(30)
    again = run_cli(kafka_env, "up", "broker", timeout=180)
    assert again.returncode == 0, again.stderr
    assert _broker_pid(kafka_env) != broker["pid"]
    assert sorted(_read_all(client, topic, len(values))) == sorted(values)

    down = run_cli(kafka_env, "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert run_cli(kafka_env, "up", "broker", timeout=180).returncode == 0
    more = [f"later-{i}" for i in range(100)]
    _produce(client, topic, more)
    assert sorted(_read_all(client, topic, len(values) + len(more))) == sorted(values + more)


def test_a_foreign_log_dir_is_refused(kafka_env):
    data = Path(kafka_env["WORKBENCH_HOME"]) / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("version=1\nnode.id=7\ncluster.id=someoneelse\n")
    result = run_cli(kafka_env, "up", "broker")
    _one_error_line(result, "belongs to another Kafka", "node.id=7", "move it away")
    assert _status(kafka_env)[0] == 3  # nothing half-started


def test_a_log_dir_that_is_not_kafkas_is_refused(kafka_env):
    data = Path(kafka_env["WORKBENCH_HOME"]) / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "notes.txt").write_text("not a log dir")
    result = run_cli(kafka_env, "up", "broker")
    _one_error_line(result, "not an Apache Kafka log dir", "move it away")


def test_java_too_old_is_refused(kafka_env, tmp_path):
    fake = tmp_path / "jdk11" / "bin"
    fake.mkdir(parents=True)
    (fake / "java").write_text(
        "#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\nexit 0\n"
    )
    (fake / "java").chmod(0o755)
    result = run_cli({**kafka_env, "JAVA_HOME": str(tmp_path / "jdk11")}, "up", "broker")
    _one_error_line(result, "needs Java 17 or newer", "is 11", "JAVA_HOME")


def test_java_missing_is_refused(kafka_env, tmp_path):
    env = {k: v for k, v in kafka_env.items() if k != "JAVA_HOME"}
    env["PATH"] = str(tmp_path)  # no java, no mvn
    result = run_cli(env, "up", "broker")
    _one_error_line(result, "Java is not installed", "WORKBENCH_BROKER=tansu")


def test_controller_port_in_use_names_its_variable(kafka_env):
    port = int(kafka_env["WORKBENCH_KAFKA_CONTROLLER_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = run_cli(kafka_env, "up", "broker")
    _one_error_line(
        result, f"127.0.0.1:{port} is already in use", "WORKBENCH_KAFKA_CONTROLLER_PORT"
    )
    assert _status(kafka_env)[0] == 3


def test_maven_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerUnavailable, match=r"Maven \('mvn'\) is not installed"):
        kafka_broker.fetch_jars(report=lambda _: None)


def test_a_nearly_full_disk_is_refused_before_start(monkeypatch, tmp_path):
    config = Config.from_env(isolated_env(tmp_path / "home", WORKBENCH_BROKER="kafka"))
    free = shutil.disk_usage(tmp_path).free
    monkeypatch.setattr(kafka_broker, "MIN_FREE_BYTES", free * 2)
    with pytest.raises(BrokerUnavailable, match="free under") as caught:
        kafka_broker.broker_command(config, report=lambda _: None)
    assert "nothing stored is lost" in str(caught.value)
    assert not (tmp_path / "home" / "kafka" / "data").exists()


def test_invalid_broker_and_heap_settings(tmp_path):
    for var, value in [("WORKBENCH_BROKER", "redpanda"), ("WORKBENCH_KAFKA_HEAP", "lots")]:
        result = run_cli(isolated_env(tmp_path / "home", **{var: value}), "up", "broker")
        assert result.returncode == 2, result.stderr
        assert var in result.stderr and "Traceback" not in result.stderr
