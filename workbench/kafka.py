"""Kafka helpers shared by the supervisor, the gateway and the processor.

Besides creating and describing the topic (and telling a re-created one by its
id, :func:`topic_id`), this is where the processors' consumer lag is read
(:func:`consumer_lag`, :class:`LagReader`): per partition, the end offset (high
watermark) minus the offset the processors' group committed. The
processor commits Kafka offsets after each lake commit for exactly this purpose
(the lake's own offsets are the truth; the committed ones trail them by at most
one batch).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
import uuid
from types import TracebackType
from typing import Any

from workbench.config import Config
from workbench.exceptions import ComponentFailed, LagUnavailable

__all__ = [
    "ConsumerLag",
    "LagReader",
    "PartitionLag",
    "consumer_lag",
    "describe_topic",
    "ensure_topic",
    "no_topic_auto_creation",
    "topic_id",
    "wait_for_kafka",
]

logger = logging.getLogger(__name__)

_LAG_HINT = "check the broker with 'workbench status', or KAFKA_BOOTSTRAP_SERVERS"


def _admin(config: Config, *, timeout_s: float = 5.0) -> Any:
    from kafka import KafkaAdminClient

    return _closing_on_failure(
        KafkaAdminClient,
        bootstrap_servers=config.bootstrap_servers,
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
    admin = _admin(config, timeout_s=timeout_s)
    try:
        admin.create_topics(
            [NewTopic(config.topic, config.topic_partitions, 1)],
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


@dataclasses.dataclass(frozen=True)
class PartitionLag:
    """One partition of the topic as the processors' consumer group sees it.

    >>> PartitionLag(3, end_offset=1500, committed=1100).lag
    400
    >>> PartitionLag(0, end_offset=70, committed=None).lag  # nothing committed yet
    70
    """

    partition: int
    end_offset: int  # the high watermark: the offset the next record will get
    committed: int | None  # the group's committed offset (next to read); None: none yet

    @property
    def lag(self) -> int:
        """Records not consumed yet: the whole partition until the group commits."""
        if self.committed is None:
            return self.end_offset
        return max(0, self.end_offset - self.committed)

    def to_json(self) -> dict[str, Any]:
        """``{"partition", "end_offset", "committed", "lag"}``."""
        return {**dataclasses.asdict(self), "lag": self.lag}


@dataclasses.dataclass(frozen=True)
class ConsumerLag:
    """The consumer lag of ``group`` on ``topic``, partition by partition.

    >>> lag = ConsumerLag("g", "t", (PartitionLag(0, 900, 66), PartitionLag(3, 1500, 1100)))
    >>> lag.total, lag.worst.partition, lag.summary()
    (1234, 0, 'lag 1,234 (max p0: 834)')
    """

    group: str
    topic: str
    partitions: tuple[PartitionLag, ...]

    @property
    def total(self) -> int:
        """Records not consumed yet, over every partition."""
        return sum(p.lag for p in self.partitions)

    @property
    def worst(self) -> PartitionLag | None:
        """The partition furthest behind (the lowest-numbered on a tie); None without any."""
        return min(self.partitions, key=lambda p: (-p.lag, p.partition), default=None)

    def summary(self) -> str:
        """One line for ``workbench status``: ``lag 1,234 (max p3: 400)``."""
        worst = self.worst
        if worst is None or self.total == 0:
            return f"lag {self.total:,}"
        return f"lag {self.total:,} (max p{worst.partition}: {worst.lag:,})"

    def to_json(self) -> dict[str, Any]:
        """``{"group", "topic", "total", "partitions": [...]}``."""
        return {
            "group": self.group,
            "topic": self.topic,
            "total": self.total,
            "partitions": [p.to_json() for p in self.partitions],
        }


class LagReader:
    """Reads the consumer lag of the processors' group, keeping its Kafka clients open.

    The clients (an admin client and a consumer without a group, which never
    commits anything) are created on the first :meth:`read`, reused by the next
    ones, and dropped after a failure so that the read after it reconnects.
    Every Kafka request is bounded by ``timeout_s``. Reads and :meth:`close` may
    come from different threads (they are serialised).

    End offsets are the high watermarks of fetch responses, not ``ListOffsets``
    answers alone: the embedded Tansu broker answers ``ListOffsets(latest)`` with
    the last *batch*'s first offset + 1, too low whenever producers batch. So
    each read lists the offsets, then fetches from just before each listed end
    (one batch per partition; with a correct broker, the partition's last record)
    and takes the larger of the two.
    """

    def __init__(self, config: Config, *, group: str | None = None, timeout_s: float = 2.0) -> None:
        self.config = config
        self.group = group or config.processor_group
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._admin: Any = None
        self._consumer: Any = None
        self._left_at: dict[Any, int] = {}  # partition -> where its fetch position was left
        self._closed = False

    def __enter__(self) -> LagReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def read(self) -> ConsumerLag:
        """The group's lag now.

        Raises :class:`~workbench.exceptions.LagUnavailable` when Kafka does not
        answer within the timeout or the topic does not exist.
        """
        from kafka.errors import KafkaError

        with self._lock:
            if self._closed:
                raise LagUnavailable("the lag reader is closed")
            try:
                return self._read()
            except LagUnavailable:
                raise
            except (KafkaError, OSError) as exc:
                self._drop()
                raise LagUnavailable(
                    f"Kafka at {self.config.bootstrap_servers} did not answer ({_explain(exc)})",
                    hint=_LAG_HINT,
                ) from None
            except BaseException:
                self._drop()  # a client in an unknown state is not reused
                raise

    def close(self) -> None:
        """Close the Kafka clients; later reads raise LagUnavailable."""
        with self._lock:
            self._closed = True
            self._drop()

    def _drop(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                try:
                    client.close()
                except Exception as exc:  # closing a broken client must not hide the cause
                    logger.debug("closing a lag client failed: %s", exc)
        self._admin = self._consumer = None
        self._left_at.clear()

    @property
    def _timeout_ms(self) -> int:
        return max(100, int(self.timeout_s * 1000))

    def _admin_client(self) -> Any:
        if self._admin is None:
            from kafka import KafkaAdminClient

            self._admin = _closing_on_failure(
                KafkaAdminClient,
                bootstrap_servers=self.config.bootstrap_servers,
                client_id="workbench-lag",
                request_timeout_ms=self._timeout_ms,
                bootstrap_timeout_ms=self._timeout_ms,
            )
        return self._admin

    def _consumer_client(self) -> Any:
        if self._consumer is None:
            from kafka import KafkaConsumer

            self._consumer = _closing_on_failure(
                KafkaConsumer,
                bootstrap_servers=self.config.bootstrap_servers,
                client_id="workbench-lag",
                group_id=None,  # never joins, never commits: the processors' offsets stay theirs
                enable_auto_commit=False,
                request_timeout_ms=self._timeout_ms,
                bootstrap_timeout_ms=self._timeout_ms,
                fetch_max_wait_ms=50,
                max_partition_fetch_bytes=64 * 1024,  # one batch is always returned whole
            )
        return self._consumer

    def _read(self) -> ConsumerLag:
        from kafka import TopicPartition
        from kafka.admin import OffsetSpec

        if self._admin is None:
            self._check_reachable()
        admin = self._admin_client()
        topic = self.config.topic
        if topic not in admin.list_topics():
            raise LagUnavailable(
                f"topic {topic!r} does not exist", hint="'workbench up' creates it"
            )
        (described,) = admin.describe_topics([topic])
        tps = [TopicPartition(topic, p["partition_index"]) for p in described["partitions"]]
        tps.sort(key=lambda tp: tp.partition)
        listed = admin.list_partition_offsets(
            {tp: OffsetSpec.LATEST for tp in tps}, timeout_ms=self._timeout_ms
        )
        ends = self._high_watermarks({tp: int(listed[tp].offset) for tp in tps})
        committed = admin.list_group_offsets({self.group: tps}).get(self.group, {})
        partitions = []
        for tp in tps:
            mark = committed.get(tp)
            offset = None if mark is None or mark.offset < 0 else int(mark.offset)
            partitions.append(PartitionLag(tp.partition, ends[tp], offset))
        return ConsumerLag(self.group, topic, tuple(partitions))

    def _check_reachable(self) -> None:
        """Fail at once, without creating a client, when no bootstrap server accepts a
        connection (a client would wait out its bootstrap timeout first)."""
        failures = []
        for server in self.config.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]"), int(port)), self.timeout_s):
                    return
            except (OSError, ValueError) as exc:
                failures.append(f"{server.strip()}: {getattr(exc, 'strerror', None) or exc}")
        raise LagUnavailable(
            f"Kafka at {self.config.bootstrap_servers} did not answer ({'; '.join(failures)})",
            hint=_LAG_HINT,
        )

    def _high_watermarks(self, listed: dict[Any, int]) -> dict[Any, int]:
        """Each partition's end offset: the listed one, or the fetched high watermark when
        larger (see the class docstring).

        1. fetch each non-empty partition from just before its listed end (any offset in
           the log would do: a fetch answer carries the partition's high watermark);
        2. take one record per poll: the high watermark is known as soon as a
           partition's answer is parsed; seeking that partition to its end then makes the
           consumer drop the rest of the batch undecoded (decoding costs ~13 µs a record);
        3. leave the assignment. An answer to a fetch still in flight (from the seek in
           step 2) arrives after the read and is parsed by the next one only if that read
           fetches from the same offset: step 1 then starts one record earlier.
        """
        ends = dict(listed)
        fetch = [tp for tp, offset in listed.items() if offset > 0]
        if not fetch:
            return ends
        consumer = self._consumer_client()
        consumer.assign(fetch)  # fresh fetch state: no high watermark of an earlier read
        try:
            for tp in fetch:  # 1.
                start = listed[tp] - 1
                consumer.seek(tp, start - 1 if start == self._left_at.get(tp) else start)
            pending = set(fetch)
            deadline = time.monotonic() + self.timeout_s
            while pending:  # 2.
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    raise TimeoutError(
                        f"no fetch answer for partition(s) {sorted(tp.partition for tp in pending)}"
                    )
                consumer.poll(timeout_ms=min(left_ms, 200), max_records=1)
                for tp in list(pending):
                    mark = consumer.highwater(tp)
                    if mark is not None:
                        ends[tp] = max(ends[tp], int(mark))
                        pending.discard(tp)
                        consumer.seek(tp, int(mark))
                        self._left_at[tp] = int(mark)
        finally:
            consumer.unsubscribe()  # 3.
        return ends


def _closing_on_failure(client_class: Any, **configs: Any) -> Any:
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


def _explain(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def consumer_lag(
    config: Config, *, group: str | None = None, timeout_s: float = 2.0
) -> ConsumerLag:
    """The consumer lag of the processors' group (``WORKBENCH_PROCESSOR_GROUP``) now.

    One-shot: connects, reads and disconnects (a :class:`LagReader` keeps its
    clients for repeated reads). A group that never committed has lag = end
    offset on every partition. Raises :class:`~workbench.exceptions.LagUnavailable`
    when Kafka does not answer within ``timeout_s`` per request or the topic is missing.
    """
    with LagReader(config, group=group, timeout_s=timeout_s) as reader:
        return reader.read()
