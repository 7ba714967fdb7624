"""How far the processors' consumer group is behind the topic, read by :class:`LagReader`
(kept clients, for repeated reads) or :func:`consumer_lag` (one shot): per partition, the
end offset (high watermark) minus the offset the processors' group committed. The
processor commits Kafka offsets after each lake commit for exactly this purpose (the
lake's own offsets are the truth; the committed ones trail them by at most one batch).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from typing import Any

from workbench.config import Config
from workbench.exceptions import LagUnavailable
from workbench.kafka import client_settings, closing_on_failure
from workbench.tansu import FetchedEnds, under_reports_end_offsets

__all__ = [
    "ConsumerLag",
    "LagReader",
    "PartitionLag",
    "consumer_lag",
    "wait_for_group_coordinator",
]

logger = logging.getLogger(__name__)

_LAG_HINT = "check the broker with 'workbench status', or KAFKA_BOOTSTRAP_SERVERS"


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

    End offsets are ``ListOffsets(latest)`` answers; on the Tansu light mode, which
    under-reports them, also the high watermarks of fetch answers
    (:class:`workbench.tansu.FetchedEnds`).
    """

    def __init__(self, config: Config, *, group: str | None = None, timeout_s: float = 2.0) -> None:
        self.config = config
        self.group = group or config.processor_group
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._admin: Any = None
        self._fetched_ends: FetchedEnds | None = None
        self._closed = False

    def __enter__(self) -> LagReader:
        return self

    def __exit__(self, *exc: object) -> None:
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
        clients = [self._admin, self._fetched_ends]
        for client in clients:
            if client is not None:
                try:
                    client.close()
                except Exception as exc:  # closing a broken client must not hide the cause
                    logger.debug("closing a lag client failed: %s", exc)
        self._admin = self._fetched_ends = None

    @property
    def _timeout_ms(self) -> int:
        return max(100, int(self.timeout_s * 1000))

    def _admin_client(self) -> Any:
        if self._admin is None:
            from kafka import KafkaAdminClient

            self._admin = closing_on_failure(
                KafkaAdminClient,
                **client_settings(self.config),
                client_id="workbench-lag",
                request_timeout_ms=self._timeout_ms,
                bootstrap_timeout_ms=self._timeout_ms,
            )
        return self._admin

    def _fetching_consumer(self) -> Any:
        from kafka import KafkaConsumer

        return closing_on_failure(
            KafkaConsumer,
            **client_settings(self.config),
            client_id="workbench-lag",
            group_id=None,  # never joins, never commits: the processors' offsets stay theirs
            enable_auto_commit=False,
            request_timeout_ms=self._timeout_ms,
            bootstrap_timeout_ms=self._timeout_ms,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=64 * 1024,  # one batch is always returned whole
        )

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
        ends = {tp: int(listed[tp].offset) for tp in tps}
        if under_reports_end_offsets(self.config):
            if self._fetched_ends is None:
                self._fetched_ends = FetchedEnds(self._fetching_consumer)
            ends = self._fetched_ends.read(ends, self.timeout_s)
        committed = self._committed(admin, tps)
        partitions = []
        for tp in tps:
            mark = committed.get(tp)
            offset = None if mark is None or mark.offset < 0 else int(mark.offset)
            partitions.append(PartitionLag(tp.partition, ends[tp], offset))
        return ConsumerLag(self.group, topic, tuple(partitions))

    def _committed(self, admin: Any, tps: list[Any]) -> dict[Any, Any]:
        """The group's committed offsets. A retriable error — a fresh Apache Kafka answers
        ``CoordinatorNotAvailable`` while it creates its offsets topic, and a moved
        coordinator ``NotCoordinator`` — is asked again until the read's timeout."""
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                offsets: dict[Any, dict[Any, Any]] = admin.list_group_offsets({self.group: tps})
                return offsets.get(self.group, {})
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() >= deadline:
                    raise
            time.sleep(0.1)

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


def wait_for_group_coordinator(config: Config, *, timeout_s: float) -> None:
    """Return once the broker answers for the processors' consumer group: a fresh Apache
    Kafka first creates its offsets topic, and until then lag reads and group joins get
    ``CoordinatorNotAvailable``. Raises :class:`LagUnavailable` after ``timeout_s``."""
    with LagReader(config, timeout_s=timeout_s) as reader:
        reader.read()
