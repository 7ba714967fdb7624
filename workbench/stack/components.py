"""The components ``workbench up`` starts, in the order of their :func:`register` calls."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from workbench.config import Config
from workbench.stack.base import Component, Detail, Port, UpOptions, http_health, tcp_health
from workbench.stack.notifier import NOTIFIER

__all__ = ["register", "registered"]

_REGISTRY: dict[str, Component] = {}


def register(component: Component) -> Component:
    """Add ``component`` to the stack; components start in registration order."""
    _REGISTRY[component.name] = component
    return component


def registered() -> list[Component]:
    """Every registered component, in start order."""
    return list(_REGISTRY.values())


def _broker_command(config: Config, options: UpOptions) -> list[str]:
    if config.broker == "kafka":
        from workbench.stack.kafka_broker import broker_command

        return broker_command(config, report=_say)
    from workbench import tansu

    return tansu.broker_command(config, report=_say)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _broker_ports(config: Config) -> list[Port]:
    ports = [Port(config.host, config.kafka_port, "WORKBENCH_KAFKA_PORT")]
    if config.broker == "kafka":
        ports.append(
            Port(config.host, config.kafka_controller_port, "WORKBENCH_KAFKA_CONTROLLER_PORT")
        )
    return ports


def _broker_describe(config: Config) -> str:
    if config.broker == "kafka":
        from workbench.stack.kafka_broker import kafka_version, state_dir

        return f"Apache Kafka {kafka_version()} (KRaft, one node), log dirs in {state_dir(config)}"
    from workbench import tansu

    return tansu.DETAIL


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
    from workbench.kafka_lag import wait_for_group_coordinator

    ensure_topic(config)
    # 'up' returns when the processors can join and 'status' can read their lag
    wait_for_group_coordinator(config, timeout_s=config.startup_timeout)


register(
    Component(
        name="broker",
        command=_broker_command,
        address=lambda cfg: cfg.bootstrap_servers,
        ports=_broker_ports,
        health=_kafka_health,
        ready=_kafka_ready,
        enabled=lambda cfg: cfg.embedded_broker,
        after_healthy=_ensure_topic,
        describe=_broker_describe,
        env=lambda cfg: {"RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        # Apache Kafka shuts down cleanly (flushes, hands its leaderships over) within this
        stop_timeout_s=40.0,
        rolling="the embedded broker is a single node: restarting it pauses ingestion "
        "(Tansu, the light mode, also loses events not yet stored); use a replicated Kafka "
        "via KAFKA_BOOTSTRAP_SERVERS for broker upgrades without a pause",
    )
)

register(
    Component(
        name="kafka",
        command=None,  # external: KAFKA_BOOTSTRAP_SERVERS names it; only health-checked
        address=lambda cfg: cfg.bootstrap_servers,
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
    line = "ok: " + (_pool_line(config, "gateway", "workers") or "serving")
    return line + _registry_outage(config)


def _registry_outage(config: Config) -> str:
    """``; 2 of 2 workers cannot read the registry since 09:41:07 UTC (...), serving
    version 12`` while workers serve their last view of an unreadable registry (empty
    otherwise): they still serve, so the gateway stays healthy, but revocations committed
    meanwhile are not in force yet."""
    from workbench.registry.views import live_views, unreadable_line

    views = live_views(config)
    failing = [v for v in views if v.unreadable_since is not None]
    if not failing:
        return ""
    first = min(failing, key=lambda v: v.unreadable_since or 0.0)
    served = min(v.version for v in failing)
    return (
        f"; {len(failing)} of {len(views)} workers {unreadable_line(first)}, "
        f"serving registry version {served if served >= 0 else 'none'}"
    )


_gateway_http_health = http_health("/healthz", port=lambda cfg: cfg.gateway_port)
_gateway_mqtt_health = tcp_health(lambda cfg: cfg.mqtt_port)


def _gateway_health(config: Config) -> str | None:
    """Healthy when ``/healthz`` answers 2xx and the MQTT door accepts connections (a
    connection closed before its CONNECT is neither served nor counted as a refusal)."""
    return _gateway_http_health(config) or _gateway_mqtt_health(config)


def _gateway_command(config: Config, options: UpOptions) -> list[str]:
    return [sys.executable, "-m", "ingest_service", "gateway"]


register(
    Component(
        name="gateway",
        command=_gateway_command,
        address=lambda cfg: (
            f"http://{cfg.host}:{cfg.gateway_port} (legacy tcp {cfg.legacy_port}, "
            f"mqtt {cfg.mqtt_port})"
        ),
        ports=lambda cfg: [
            Port(cfg.host, cfg.gateway_port, "WORKBENCH_GATEWAY_PORT"),
            Port(cfg.host, cfg.legacy_port, "WORKBENCH_LEGACY_PORT"),
            Port(cfg.host, cfg.mqtt_port, "WORKBENCH_MQTT_PORT"),
        ],
        health=_gateway_health,
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
    import time

    from workbench.heartbeat import heartbeat_path, read_heartbeat
    from workbench.stack.pool import pool_state

    path = heartbeat_path(config, "processor")
    beat = read_heartbeat(path)
    if beat is None:
        return f"no heartbeat yet at {path} (joining the consumer group?)"
    if beat.stale:
        return (
            f"last heartbeat {beat.age_s:.0f}s ago (pid {beat.get('pid')}); "
            "see 'workbench logs processor'"
        )
    if beat.get("lake_error"):  # a member waits for the lake's store: the precise reason
        return f"lake unavailable: {beat.get('lake_error')}"
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
    """Consumer lag, freshness (now minus the newest event in building_state), the
    processor's counts and the last lake maintenance; the lag per partition, the freshness
    and the maintenance record also as ``metrics``."""
    import time

    from workbench.exceptions import LagUnavailable
    from workbench.heartbeat import heartbeat_path, read_heartbeat
    from workbench.kafka_lag import consumer_lag
    from workbench.lake.maintain import last_maintenance, maintenance_summary
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
    beat = read_heartbeat(heartbeat_path(config, "processor"))
    if beat is not None:
        parts.append(
            f"stored {beat.get('stored', 0):,}, rejected {beat.get('rejected', 0):,}, "
            f"duplicates {beat.get('duplicates', 0):,}, late {beat.get('late', 0):,}, "
            f"refusals noted by the gateway {beat.get('refused_at_gateway', 0):,}"
            + (f", alarms over flood limit {n:,}" if (n := beat.get("alarms_suppressed")) else "")
        )
    maintenance = last_maintenance(config)
    parts.append(maintenance_summary(maintenance, now=time.time()))
    metrics["last_maintenance"] = maintenance
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


register(NOTIFIER)  # after the processor, whose alarms it tells


def _hive_command(config: Config, options: UpOptions) -> list[str]:
    return [sys.executable, "-m", "workbench.query.hiveserver2"]


def _hive_health(config: Config) -> str | None:
    """Healthy when the port answers; else why (a failed engine leaves its reason in run/)."""
    import socket

    try:
        with socket.create_connection((config.host, config.hive_port), timeout=2.0):
            return None
    except OSError as exc:
        failed = config.run_dir / "hiveserver2-engine.error"
        why = failed.read_text().strip() if failed.is_file() else f"not answering ({exc})"
        return f"HiveServer2 at {config.host}:{config.hive_port}: {why}"


register(
    Component(
        name="hiveserver2",
        command=_hive_command,
        address=lambda cfg: f"jdbc:hive2://{cfg.host}:{cfg.hive_port}/default",
        ports=lambda c: [
            Port(c.host, c.hive_port, "WORKBENCH_HIVE_PORT"),
            Port(c.host, c.flight_port, "WORKBENCH_FLIGHT_PORT"),
        ],
        # the Flight door listens before HiveServer2: its port answering is the last step
        health=_hive_health,
    )
)


def _voila_command(config: Config, options: UpOptions) -> list[str]:
    return [sys.executable, "-m", "workbench.dashboards"]


def _voila_describe(config: Config) -> str | Detail:
    from workbench.dashboards.kernels import kernel_count_line

    line = kernel_count_line(config)
    return "" if line is None else Detail(*line)


register(
    Component(
        name="voila",
        command=_voila_command,
        address=lambda cfg: (
            f"http://{cfg.host}:{cfg.panel_port}/ (dashboards, login required; "
            f"provisioning on :{cfg.voila_port})"
        ),
        ports=lambda cfg: [
            Port(cfg.host, cfg.voila_port, "WORKBENCH_VOILA_PORT"),
            Port(cfg.host, cfg.panel_port, "WORKBENCH_PANEL_PORT"),
        ],
        health=http_health("/login", port=lambda cfg: cfg.voila_port),
        describe=_voila_describe,
    )
)


def _hub_command(config: Config, options: UpOptions) -> list[str]:
    return [sys.executable, "-m", "workbench.hub"]


def _hub_enabled(config: Config) -> bool:
    # the hub gives each user an OS account of their own: only root can (see docs/hub.md)
    return os.geteuid() == 0


def _hub_describe(config: Config) -> Detail:
    """Running notebook servers against the cap, and servers that failed to start."""
    from workbench.hub.api import status_line

    return Detail(*status_line(config))


def _hub_stop_servers(config: Config) -> None:
    from workbench.hub.api import stop_all_servers

    stop_all_servers(config)


register(
    Component(
        name="hub",
        command=_hub_command,
        address=lambda cfg: f"http://{cfg.host}:{cfg.hub_port}/ (notebooks, login required)",
        ports=lambda cfg: [
            Port(cfg.host, cfg.hub_port, "WORKBENCH_HUB_PORT"),
            Port(cfg.host, cfg.hub_api_port, "WORKBENCH_HUB_API_PORT"),
            Port(cfg.host, cfg.hub_proxy_api_port, "WORKBENCH_HUB_PROXY_API_PORT"),
        ],
        # through the proxy: healthy when both the proxy and the hub answer
        health=http_health("/hub/health", port=lambda cfg: cfg.hub_port),
        enabled=_hub_enabled,
        describe=_hub_describe,
        before_down=_hub_stop_servers,
        stop_timeout_s=30.0,
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
    from workbench.heartbeat import read_heartbeat

    path = _simulator_status_path(config)
    beat = read_heartbeat(path)
    if beat is None:
        return f"no heartbeat yet at {path}"
    if beat.get("state") == "preparing":
        return f"provisioning {beat.get('devices')} simulated devices through the registry"
    if beat.get("state") != "running" or beat.stale:
        return (
            f"state {beat.get('state')}, last heartbeat {beat.age_s:.0f}s ago; "
            "see 'workbench logs simulator'"
        )
    return None


def _simulator_address(config: Config) -> str:
    from workbench.heartbeat import read_heartbeat

    beat = read_heartbeat(_simulator_status_path(config))
    if beat is None:
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
