"""The consumer-group member on kafka-python, the fallback client
(``WORKBENCH_PROCESSOR_CLIENT=kafka-python``).

kafka-python decodes every record in Python, in this process: that is why the member
runs in a child process, beside the processor rather than in a thread of it. Its
exchanges with the parent are those of the librdkafka member; it has neither that
member's paced fetches nor its sequence checks.
"""

from __future__ import annotations

import itertools
import logging
import operator
from typing import IO, Any, Literal

import numpy as np

from ingest_service.processor.fetcher.channel import write_message
from ingest_service.processor.fetcher.member import POLL_RECORDS, Member
from ingest_service.processor.packed import pack
from workbench.config import Config
from workbench.kafka import client_settings, no_topic_auto_creation

__all__ = ["KafkaPythonMember", "consumer_settings"]

logger = logging.getLogger(__name__)

_VALUE, _KEY, _OFFSET = (operator.attrgetter(a) for a in ("value", "key", "offset"))


def consumer_settings(
    config: Config,
    *,
    group: str | None,
    offset_reset: Literal["none", "earliest"] = "none",
) -> dict[str, Any]:
    """kafka-python settings shared by the processor and the bench's bare consumer.

    The processor seeks every partition it is assigned, so a position Kafka has no
    record at is an event to handle, not to reset silently (``offset_reset="none"``);
    the bench's bare consumer starts from the beginning (``"earliest"``). Neither
    creates the topic by asking for it (see :func:`workbench.kafka.no_topic_auto_creation`).
    """
    return {
        **client_settings(config),
        "group_id": group,
        "client_id": "workbench-processor",
        "enable_auto_commit": False,
        "auto_offset_reset": offset_reset,
        "allow_auto_create_topics": False,
        # Kafka's smallest allowed session: a SIGKILLed member's partitions move on soon.
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1500,
        "max_poll_interval_ms": 300_000,
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "receive_buffer_bytes": 4 * 1024 * 1024,
    }


class KafkaPythonMember(Member):
    """The consumer-group member on kafka-python."""

    def __init__(self, config: Config, inbox: IO[bytes], outbox: IO[bytes]) -> None:
        from kafka import KafkaConsumer

        self.config = config
        self.inbox = inbox
        self.outbox = outbox
        self.consumer = no_topic_auto_creation(
            KafkaConsumer(**consumer_settings(config, group=config.processor_group))
        )
        self.topic_id: str | None = None  # as the member's metadata last showed it

    def run(self) -> None:
        from kafka import ConsumerRebalanceListener
        from kafka.errors import OffsetOutOfRangeError

        member = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: list[Any]) -> None:
                # kafka-python 3.0.12 lacks KAFKA-9815's fix: a rebalance started because
                # the topic's metadata changed (it vanished with a restarted broker, say)
                # is abandoned when the metadata changes back before the JoinGroup answer,
                # and the member never gets its assignment. Asking for the rejoin keeps
                # it going until it completes.
                member.consumer._coordinator.request_rejoin()
                member.ask(("revoked", sorted(tp.partition for tp in revoked)))

            def on_partitions_assigned(self, assigned: list[Any]) -> None:
                answer = member.ask(("assigned", sorted(tp.partition for tp in assigned)))
                member.seek(answer, "taking over partitions")
                member.topic_id = member.metadata_topic_id()

        self.consumer.subscribe([self.config.topic], listener=Listener())
        while True:
            try:
                polled = self.consumer.poll(timeout_ms=200, max_records=POLL_RECORDS)
            except OffsetOutOfRangeError as exc:  # records polled before it came first
                self._out_of_range(exc.args[0])
                continue
            if polled:
                values: list[bytes] = []
                keys: list[bytes | None] = []
                partitions: list[int] = []
                offsets: list[int] = []
                for tp, records in polled.items():  # C-level loops
                    values.extend(map(_VALUE, records))
                    keys.extend(map(_KEY, records))
                    offsets.extend(map(_OFFSET, records))
                    partitions.extend(itertools.repeat(tp.partition, len(records)))
                commits, stop, _ = self.ask(
                    (
                        "records",
                        *pack(values),
                        *pack(keys),
                        np.array(partitions, np.int32),
                        np.array(offsets, np.int64),
                    )
                )
            else:
                commits, stop, _ = self.ask(("idle",))
            self._commit(commits, sync=stop)
            if stop:
                break
            self._watch_topic_id()
        self.consumer.close()  # leaves the group (after the parent's last lake commit)
        write_message(self.outbox, ("closed",))

    def seek(self, answer: tuple[str, Any], what: str) -> None:
        """Seek the partitions the parent's answer names to their positions (those still
        assigned: a partition lost meanwhile is sought by its next assignment)."""
        from kafka import TopicPartition

        if answer[0] != "seek":
            raise RuntimeError(f"{what} failed: {answer[1]}")
        owned = self.consumer.assignment()
        for p, position in answer[1].items():
            tp = TopicPartition(self.config.topic, p)
            if tp not in owned:
                continue
            if position > 0:
                self.consumer.seek(tp, position)
            else:
                self.consumer.seek_to_beginning(tp)

    def metadata_topic_id(self) -> str | None:
        """The topic's id in the member's metadata (None until known)."""
        found = self.consumer._cluster.topic_id(self.config.topic)
        return None if found is None or found.int == 0 else str(found)

    def has_partitions(self) -> bool:
        return bool(self.consumer.assignment())

    def _watch_topic_id(self) -> None:
        """Between rebalances: the topic id in the member's metadata."""
        self.topic_id_now(self.metadata_topic_id())

    def _out_of_range(self, positions: dict[Any, int]) -> None:
        """Ask the parent what to do about positions Kafka has no record at, then seek."""
        tps = [tp for tp in positions if tp in self.consumer.assignment()]
        if not tps:
            return
        starts = self.consumer.beginning_offsets(tps)
        ends = self.consumer.end_offsets(tps)
        ranges = {tp.partition: (positions[tp], starts[tp], ends[tp]) for tp in tps}
        logger.warning("offsets out of range (partition: position, log start, log end): %s", ranges)
        self.seek(self.ask(("out_of_range", ranges)), "handling out-of-range offsets")

    def _commit(self, commits: dict[int, int], *, sync: bool) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        owned = {tp.partition for tp in self.consumer.assignment()}
        offsets = {
            TopicPartition(self.config.topic, p): OffsetAndMetadata(o, "", -1)
            for p, o in commits.items()
            if p in owned
        }
        if not offsets:
            return
        try:  # lag figures only: the lake holds the truth
            if sync:
                self.consumer.commit(offsets)
            else:
                self.consumer.commit_async(offsets)
        except Exception as exc:
            logger.info("Kafka offset commit failed: %s", exc)
