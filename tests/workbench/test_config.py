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
