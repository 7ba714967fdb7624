"""Finding 11: the Kafka port accepted anyone's events. The embedded Apache Kafka now
takes SASL/PLAIN with a password generated under ``$WORKBENCH_HOME/secrets`` on both of
its ports; whoever cannot read the workbench's secrets can neither write events nor read
them, nor reach the cluster's metadata through the controller port."""

from __future__ import annotations

import stat
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from tests.conftest import TEST_BROKER
from workbench.config import Config
from workbench.kafka import client_settings, embedded_password, kafka_security
from workbench.secretfiles import secret_path

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        TEST_BROKER != "kafka",
        reason="probes the Apache Kafka broker's door; WORKBENCH_TEST_BROKER=tansu runs the "
        "suite on the light mode, which has no authentication (README)",
    ),
]

_QUICK = {"request_timeout_ms": 3000, "bootstrap_timeout_ms": 3000}


def _admin_fails(**settings: object) -> None:
    with pytest.raises((KafkaError, OSError)):
        admin = KafkaAdminClient(**settings, **_QUICK)  # type: ignore[arg-type]
        try:
            admin.list_topics()
        finally:
            admin.close()


def test_a_client_without_credentials_is_refused(kafka_config: Config):
    _admin_fails(bootstrap_servers=kafka_config.bootstrap_servers)
    with pytest.raises((KafkaError, OSError)):
        producer = KafkaProducer(
            bootstrap_servers=kafka_config.bootstrap_servers, max_block_ms=3000, **_QUICK
        )
        try:
            producer.send(kafka_config.topic, b"forged").get(timeout=5)
        finally:
            producer.close(timeout=0)


def test_a_wrong_password_is_refused(kafka_config: Config):
    wrong = {**client_settings(kafka_config), "sasl_plain_password": "not-the-password"}
    _admin_fails(**wrong)
    other_user = {**client_settings(kafka_config), "sasl_plain_username": "admin"}
    _admin_fails(**other_user)


def test_the_controller_port_is_closed_to_strangers_too(kafka_config: Config):
    controller = f"{kafka_config.host}:{kafka_config.kafka_controller_port}"
    _admin_fails(bootstrap_servers=controller)
    wrong = {**client_settings(kafka_config), "sasl_plain_password": "not-the-password"}
    _admin_fails(**{**wrong, "bootstrap_servers": controller})


def test_the_workbench_credentials_write_and_read(kafka_config: Config):
    settings = client_settings(kafka_config)
    assert settings["security_protocol"] == "SASL_PLAINTEXT"
    value = uuid.uuid4().hex.encode()
    producer = KafkaProducer(**settings, acks="all")
    try:
        producer.send(kafka_config.topic, value).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        kafka_config.topic, **settings, auto_offset_reset="earliest", consumer_timeout_ms=10_000
    )
    try:
        assert value in {record.value for record in consumer}
    finally:
        consumer.close()


def test_the_password_and_the_files_that_hold_it_are_the_owners_alone(broker_config: Config):
    password = embedded_password(broker_config)
    assert kafka_security(broker_config).password == password
    kafka_dir = broker_config.home / "kafka"
    secret = secret_path(broker_config, "kafka-password")
    for path in (secret, kafka_dir / "server.properties", kafka_dir / "client.properties"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    assert password in (kafka_dir / "client.properties").read_text()
