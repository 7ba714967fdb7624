"""The config object: defaults, derived values, and one clear error per bad value."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from workbench.config import Config, settings_help
from workbench.exceptions import ConfigError


def test_defaults_match_the_design_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.from_env({})
    assert cfg.home == tmp_path / ".workbench"
    assert cfg.lake == str(tmp_path / ".workbench" / "lake")
    assert (cfg.host, cfg.kafka_port, cfg.gateway_port, cfg.legacy_port) == (
        "127.0.0.1",
        9092,
        8080,
        7070,
    )
    assert (cfg.hive_port, cfg.voila_port, cfg.lab_port) == (10000, 8866, 8888)
    assert (cfg.topic, cfg.topic_partitions) == ("telemetry", 2)
    assert cfg.embedded_broker
    assert cfg.bootstrap_servers == "127.0.0.1:9092"


def test_external_kafka_replaces_the_embedded_broker():
    cfg = Config.from_env({"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2:9092"})
    assert not cfg.embedded_broker
    assert cfg.bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_object_store_lake_uri_is_kept_verbatim():
    cfg = Config.from_env({"WORKBENCH_LAKE": "s3://bucket/lake"})
    assert cfg.lake == "s3://bucket/lake"


def test_config_is_frozen():
    cfg = Config.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.topic = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("WORKBENCH_KAFKA_PORT", "abc", "TCP port"),
        ("WORKBENCH_GATEWAY_PORT", "70000", "TCP port"),
        ("WORKBENCH_TOPIC_PARTITIONS", "0", "at least 1"),
        ("WORKBENCH_TOPIC_PARTITIONS", "eight", "whole number"),
        ("WORKBENCH_STARTUP_TIMEOUT", "-1", "positive"),
        ("KAFKA_BOOTSTRAP_SERVERS", "no-port-here", "host:port"),
        ("WORKBENCH_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
        ("WORKBENCH_HIVE_ENGINE", "hive", "duckdb (embedded) or spark"),
        ("WORKBENCH_SPARK_MASTER", "local[0]", "local[N], local[*], spark://host:port"),
        ("WORKBENCH_SPARK_MASTER", "spark://no-port", "local[N], local[*], spark://host:port"),
        ("WORKBENCH_SPARK_MASTER", "sc://h:port", "a Spark Connect URL sc://host:port"),
        ("WORKBENCH_SPARK_MASTER", "sc://h:15002/;session_id=x", "a Spark Connect URL"),
    ],
)
def test_invalid_values_name_variable_value_and_fix(var: str, value: str, expected: str):
    with pytest.raises(ConfigError) as info:
        Config.from_env({var: value})
    message = str(info.value)
    assert var in message
    assert repr(value) in message
    assert expected in message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_env_round_trips_through_child_processes(tmp_path: Path):
    cfg = Config.from_env({"WORKBENCH_HOME": str(tmp_path), "WORKBENCH_KAFKA_PORT": "19999"})
    assert Config.from_env(cfg.env()) == cfg


def test_settings_help_lists_every_variable_with_its_default():
    text = settings_help({"WORKBENCH_TOPIC": "events"})
    for field in dataclasses.fields(Config):
        assert field.metadata["setting"].env in text
    assert "events  [telemetry]" in text


def test_external_kafka_security_reaches_both_client_libraries():
    from workbench.kafka import client_settings, rdkafka_client_settings

    cfg = Config.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9093",
            "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "KAFKA_SASL_MECHANISM": "scram-sha-512",
            "KAFKA_SASL_USERNAME": "ingest",
            "KAFKA_SASL_PASSWORD": "s3cret",
            "KAFKA_SSL_CAFILE": "/etc/ca.pem",
        }
    )
    assert client_settings(cfg) == {
        "bootstrap_servers": "k1:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "ingest",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/ca.pem",
    }
    assert rdkafka_client_settings(cfg) == {
        "bootstrap.servers": "k1:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "ingest",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ca.pem",
    }


def test_a_sasl_user_alone_means_sasl_plain_and_plaintext_means_no_sasl(tmp_path: Path):
    from workbench.kafka import kafka_security

    user_only = Config.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": "p",
        }
    )
    assert (kafka_security(user_only).protocol, kafka_security(user_only).mechanism) == (
        "SASL_PLAINTEXT",
        "PLAIN",
    )
    plain = Config.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092"})
    assert kafka_security(plain).protocol == "PLAINTEXT" and not kafka_security(plain).mechanism
    home = tmp_path / "home"
    tansu = Config.from_env({"WORKBENCH_HOME": str(home), "WORKBENCH_BROKER": "tansu"})
    assert kafka_security(tansu).protocol == "PLAINTEXT"
    assert not home.exists()  # no password file is made either


def test_a_refused_spark_connect_url_does_not_echo_its_token():
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"WORKBENCH_SPARK_MASTER": "sc://h:1/;token=s3cret;session_id=x"})
    assert "s3cret" not in str(caught.value)
    assert ";token=…;session_id=x" in str(caught.value)


def test_an_unknown_kafka_security_protocol_names_the_choices():
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"KAFKA_SECURITY_PROTOCOL": "TLS"})
    assert "invalid KAFKA_SECURITY_PROTOCOL='TLS': expected PLAINTEXT or SASL_PLAINTEXT" in str(
        caught.value
    )


@pytest.mark.parametrize(
    "master",
    [
        "local",
        "local[2]",
        "local[*]",
        "spark://10.0.0.5:7077,10.0.0.6:7077",
        "yarn",
        "sc://localhost:15002",
        "sc://spark.example.com:443/;use_ssl=true;token=abc",
    ],
)
def test_spark_masters_are_accepted(master: str):
    config = Config.from_env({"WORKBENCH_HIVE_ENGINE": "Spark", "WORKBENCH_SPARK_MASTER": master})
    assert (config.hive_engine, config.spark_master) == ("spark", master)
