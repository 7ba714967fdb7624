"""Kafka helpers shared by the supervisor, the gateway and the processor.

The clients' settings (the broker authenticates: :func:`client_settings`,
:func:`rdkafka_client_settings`, :func:`external_env`), creating and describing the
topic, and telling a re-created one by its id (:func:`topic_id`). The processors'
consumer lag is read by :mod:`workbench.kafka_lag`.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
import uuid
from typing import Any

from workbench.config import Config
from workbench.exceptions import ComponentFailed
from workbench.secretfiles import load_secret, secret_path

__all__ = [
    "EMBEDDED_USER",
    "KafkaSecurity",
    "client_settings",
    "closing_on_failure",
    "describe_topic",
    "embedded_password",
    "ensure_topic",
    "external_env",
    "kafka_security",
    "no_topic_auto_creation",
    "rdkafka_client_settings",
    "topic_id",
    "wait_for_kafka",
]

logger = logging.getLogger(__name__)


EMBEDDED_USER = "workbench"
"""The one SASL user of the embedded Apache Kafka: the workbench's own services."""


@dataclasses.dataclass(frozen=True)
class KafkaSecurity:
    """How the workbench's Kafka clients authenticate (empty fields: not used)."""

    protocol: str = "PLAINTEXT"
    mechanism: str = ""
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    cafile: str = ""


def embedded_password(config: Config) -> str:
    """The embedded Apache Kafka's SASL password, created on first use in
    ``$WORKBENCH_HOME/secrets/kafka-password`` (owner-only): whoever cannot read the
    workbench's secrets cannot write events to its topic or read them."""
    path = secret_path(config, "kafka-password")
    secret = load_secret(
        path,
        what="embedded Kafka password",
        lost_hint=f"delete {path}, then 'workbench restart broker' makes a new one",
    )
    return base64.b64encode(secret).decode()


def kafka_security(config: Config) -> KafkaSecurity:
    """The embedded Apache Kafka takes SASL/PLAIN with the generated password; an external
    cluster, what ``KAFKA_SECURITY_PROTOCOL`` and the ``KAFKA_SASL_*``/``KAFKA_SSL_CAFILE``
    settings say; the Tansu light mode has no authentication."""
    if config.embedded_broker:
        if config.broker != "kafka":
            return KafkaSecurity()
        return KafkaSecurity("SASL_PLAINTEXT", "PLAIN", EMBEDDED_USER, embedded_password(config))
    sasl = bool(config.kafka_sasl_username or config.kafka_sasl_mechanism)
    protocol = config.kafka_security_protocol or ("SASL_PLAINTEXT" if sasl else "PLAINTEXT")
    return KafkaSecurity(
        protocol,
        (config.kafka_sasl_mechanism or "PLAIN") if "SASL" in protocol else "",
        config.kafka_sasl_username,
        config.kafka_sasl_password,
        config.kafka_ssl_cafile,
    )


# Each client library's names for: servers, protocol, mechanism, user, password, CA file
_NAMES = {
    "env": (
        "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE",
    ),
    "kafka-python": (
        "bootstrap_servers", "security_protocol", "sasl_mechanism",
        "sasl_plain_username", "sasl_plain_password", "ssl_cafile",
    ),
    "librdkafka": (
        "bootstrap.servers", "security.protocol", "sasl.mechanism",
        "sasl.username", "sasl.password", "ssl.ca.location",
    ),
}  # fmt: skip


def _named(config: Config, names: str) -> dict[str, str]:
    sec = kafka_security(config)
    servers, protocol, mechanism, user, password, cafile = _NAMES[names]
    out = {servers: config.bootstrap_servers, protocol: sec.protocol}
    if sec.mechanism:
        out |= {mechanism: sec.mechanism, user: sec.username, password: sec.password}
    if sec.cafile:
        out[cafile] = sec.cafile
    return out


def external_env(config: Config) -> dict[str, str]:
    """The environment with which another workbench reaches this config's Kafka as an
    external cluster (``KAFKA_BOOTSTRAP_SERVERS`` and the security settings): a bench's
    scratch gateway, a test's child process."""
    return _named(config, "env")


def client_settings(config: Config) -> dict[str, Any]:
    """kafka-python settings every client of the workbench's Kafka needs: where it is and
    how to authenticate (``KafkaProducer(**client_settings(config), acks="all")``)."""
    return dict(_named(config, "kafka-python"))


def rdkafka_client_settings(config: Config) -> dict[str, Any]:
    """The same for librdkafka (confluent-kafka, kcat): ``Consumer({**rdkafka_client_settings
    (config), "group.id": ...})``."""
    out: dict[str, Any] = _named(config, "librdkafka")
    out["security.protocol"] = out["security.protocol"].lower()  # librdkafka's own spelling
    return out


def _admin(config: Config, *, timeout_s: float = 5.0) -> Any:
    from kafka import KafkaAdminClient

    return closing_on_failure(
        KafkaAdminClient,
        **client_settings(config),
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),  # kafka-python's default waits 30 s
        client_id="workbench-admin",
    )


def describe_topic(config: Config, *, timeout_s: float = 5.0) -> int | None:
    """Number of partitions of the configured topic, or None when it does not exist.

    Raises :class:`kafka.errors.KafkaError` when the cluster cannot be reached.
    """
    admin = _admin(config, timeout_s=timeout_s)
    try:
        if config.topic not in admin.list_topics():
            return None
        (topic,) = admin.describe_topics([config.topic])
        return len(topic["partitions"])
    finally:
        admin.close()


def topic_id(config: Config, *, timeout_s: float = 5.0) -> str | None:
    """The configured topic's id (KIP-516; a topic deleted and created again gets a new
    one), or None when the topic does not exist or the broker reports no ids (Kafka
    before 2.8).

    Raises :class:`kafka.errors.KafkaError` when the cluster cannot be reached.
    """
    admin = _admin(config, timeout_s=timeout_s)
    try:
        (described,) = admin.describe_topics([config.topic])
    finally:
        admin.close()
    found = described.get("topic_id")
    if described.get("error_code") or found is None:
        return None
    parsed = found if isinstance(found, uuid.UUID) else uuid.UUID(str(found))
    return None if parsed.int == 0 else str(parsed)


def no_topic_auto_creation(client: Any) -> Any:
    """``client`` (a kafka-python producer or consumer), made to never create a topic by
    asking for its metadata; returns it.

    A producer or consumer asking for a missing topic makes a broker that allows it
    (Tansu does; Kafka by default) create it with the broker's default partition count,
    not ``WORKBENCH_TOPIC_PARTITIONS``. kafka-python
    3.0.12 accepts ``allow_auto_create_topics=False`` but does not hand it to the cluster
    metadata its requests are built from, so it is set there as well.
    """
    from kafka.cluster import ClusterMetadata

    for name in ("_metadata", "_cluster"):  # producer, consumer
        cluster = getattr(client, name, None)
        if isinstance(cluster, ClusterMetadata):
            cluster.config["allow_auto_create_topics"] = False
    return client


def ensure_topic(config: Config, *, timeout_s: float = 10.0) -> int:
    """Create the telemetry topic when missing; return its partition count."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    partitions = describe_topic(config, timeout_s=timeout_s)
    if partitions is not None:
        if partitions != config.topic_partitions:
            logger.warning(
                "topic %s has %d partitions, WORKBENCH_TOPIC_PARTITIONS asks for %d; keeping %d",
                config.topic,
                partitions,
                config.topic_partitions,
                partitions,
            )
        return partitions
    # An external cluster replicates the topic as its default.replication.factor says (-1:
    # the broker's default): a replicated cluster must not get a topic on one broker only.
    # The embedded broker is one node.
    replicas = 1 if config.embedded_broker else -1
    admin = _admin(config, timeout_s=timeout_s)
    try:
        admin.create_topics(
            [NewTopic(config.topic, config.topic_partitions, replicas)],
            timeout_ms=int(timeout_s * 1000),
        )
        logger.info("created topic %s with %d partitions", config.topic, config.topic_partitions)
    except TopicAlreadyExistsError:
        pass  # a concurrent creator won
    finally:
        admin.close()
    return describe_topic(config, timeout_s=timeout_s) or config.topic_partitions


def wait_for_kafka(config: Config, *, timeout_s: float) -> None:
    """Block until the cluster answers metadata requests, or raise ComponentFailed."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            describe_topic(config, timeout_s=2.0)
            return
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.2)
    raise ComponentFailed(
        f"Kafka at {config.bootstrap_servers} did not answer within {timeout_s:.0f}s ({last})",
        hint="check KAFKA_BOOTSTRAP_SERVERS, or unset it to use the embedded broker",
    )


def closing_on_failure(client_class: Any, **configs: Any) -> Any:
    """``client_class(**configs)``, closing its network client when the constructor fails:
    a kafka-python 3.0 client that cannot bootstrap leaves its network thread running
    otherwise, one more per attempt while Kafka is unreachable."""
    created: list[Any] = []
    make_net_client = client_class.DEFAULT_CONFIG["kafka_client"]

    def tracked(*args: Any, **kwargs: Any) -> Any:
        created.append(make_net_client(*args, **kwargs))
        return created[-1]

    try:
        return client_class(kafka_client=tracked, **configs)
    except BaseException:
        for net_client in created:
            try:
                net_client.close()
            except Exception as exc:
                logger.debug("closing a client that failed to start: %s", exc)
        raise
