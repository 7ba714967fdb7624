"""The consumer-group member on librdkafka (confluent-kafka), the default client.

librdkafka fetches and decodes record batches in its own C threads, ahead of what the
member asks for; this process only turns each poll into the message for the parent,
so the parent's processing has the CPU. What the member adds to a plain consumer:

* its fetches are paced to the parent's takes once it has caught up
  (:meth:`RdkafkaMember._pause`, :meth:`RdkafkaMember._rest`);
* it keeps its own position per partition and hands over only records that continue
  it (:class:`~ingest_service.processor.fetcher.sequence.Sequence`);
* it asks the parent where to seek at every assignment, when the topic's id changes
  and when a position is out of range (``auto.offset.reset=error``).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import IO, Any, Literal

import numpy as np

from ingest_service.processor.fetcher.channel import write_message
from ingest_service.processor.fetcher.flags import FlagWatch
from ingest_service.processor.fetcher.member import POLL_RECORDS, Member
from ingest_service.processor.fetcher.sequence import Sequence
from ingest_service.processor.ndjson import parse_chunk
from ingest_service.processor.packed import Packed, pack
from workbench import tansu
from workbench.config import Config
from workbench.kafka import rdkafka_client_settings

__all__ = ["RdkafkaMember", "rdkafka_settings"]

logger = logging.getLogger(__name__)


def rdkafka_settings(
    config: Config,
    *,
    group: str,
    offset_reset: Literal["error", "earliest"] = "error",
) -> dict[str, Any]:
    """confluent-kafka (librdkafka) settings of the processor's member and the bench's
    bare librdkafka consumer; the counterpart of
    :func:`~ingest_service.processor.fetcher.kafka_python.consumer_settings`."""
    return {
        **rdkafka_client_settings(config),
        "group.id": group,
        "client.id": "workbench-processor",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": offset_reset,
        "allow.auto.create.topics": False,
        # eager rebalancing, as with kafka-python: everything is revoked, then assigned
        "partition.assignment.strategy": "range",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1500,
        "max.poll.interval.ms": 300_000,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        # librdkafka prefetches in its own threads, bounded by the bytes waiting in its
        # queue; its default message floor (100,000) would stop it fetching long before
        # that bound with records this small (docs/ingest.md has the figures)
        "queued.min.messages": 1_000_000,
        "queued.max.messages.kbytes": 64 * 1024,
        "socket.receive.buffer.bytes": 4 * 1024 * 1024,
        # a caught-up member keeps fetching on Apache Kafka (RdkafkaMember._rest): the
        # broker answers once a mebibyte is there or after 0.1 s, not for every few
        # records (that cost the broker half again its CPU at the seed rate)
        "fetch.min.bytes": 1024 * 1024,
        "fetch.wait.max.ms": 100,
        "log_level": 4,  # warnings and worse
    }


class RdkafkaMember(Member):
    """The consumer-group member on librdkafka (confluent-kafka), the default.

    Same exchanges with the parent as
    :class:`~ingest_service.processor.fetcher.kafka_python.KafkaPythonMember`; what
    differs is where the time goes: librdkafka fetches and decodes records in its own C
    threads, so this process spends far less per record than kafka-python's decoding in
    Python, and the parent's processing has the CPU.
    """

    _TOPIC_ID_EVERY_S = 2.0
    # a fetch resumed this long before the parent's next take is in that batch: the
    # broker answers, then the records cross the pipe (both take milliseconds when
    # the machine is not overloaded)
    _FETCH_LEAD_S = 0.15
    _GATHER_S = 0.02
    # a caught-up member fetches at least this often, so that a detector turning on
    # reaches the parent (which then takes its batch early) within this time
    _TAIL_EVERY_S = 0.2
    _KAFKA_LEAD_S = 0.05
    _REST_MIN_S = 0.05

    def __init__(self, config: Config, inbox: IO[bytes], outbox: IO[bytes]) -> None:
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        self.config = config
        self.inbox = inbox
        self.outbox = outbox
        self.consumer = Consumer(
            rdkafka_settings(config, group=config.processor_group), logger=logger
        )
        self.admin = AdminClient({**rdkafka_client_settings(config), "log_level": 4}, logger=logger)
        self.topic_id: str | None = None  # as last described
        self._topic_id_at = 0.0
        self._closing = False
        self.sequence = Sequence(self._seek_to)  # where each partition's reading goes on
        self._rebalanced = False  # during the current poll
        self.flags = FlagWatch()
        # once caught up: whether the partitions are paused (Tansu), and how long the
        # member rests at most before it polls again (see _rest)
        self._pauses = tansu.fetches_once_per_batch(config)
        self._tail_every_s = (
            config.commit_interval
            if self._pauses
            else min(self._TAIL_EVERY_S, config.commit_interval)
        )

    def run(self) -> None:
        from confluent_kafka import KafkaError, Message

        def on_assign(consumer: Any, partitions: list[Any]) -> None:
            answer = self.ask(("assigned", sorted(tp.partition for tp in partitions)))
            positions = self._positions(answer, partitions, "taking over partitions")
            consumer.assign(positions)
            self.sequence.restart({tp.partition: tp.offset for tp in positions})
            self._rebalanced = True
            self.topic_id = self.describe_topic_id()
            self._topic_id_at = time.monotonic()

        def on_revoke(consumer: Any, partitions: list[Any]) -> None:
            if not self._closing:  # close() revokes too, after the parent's last commit
                self.ask(("revoked", sorted(tp.partition for tp in partitions)))
            consumer.unassign()
            self.sequence.restart({})
            self._rebalanced = True

        self.consumer.subscribe(
            [self.config.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke
        )
        value, key, partition, offset, error = (
            Message.value,
            Message.key,
            Message.partition,
            Message.offset,
            Message.error,
        )
        while True:
            polled = self._poll()
            if polled:
                errors = list(map(error, polled))
                if any(errors):
                    self._errors(
                        [(m, e) for m, e in zip(polled, errors, strict=True) if e is not None],
                        KafkaError,
                    )
                    polled = [m for m, e in zip(polled, errors, strict=True) if e is None]
            # caught up: no fetch from now until just before the parent's next take (but
            # not just after a rebalance: the new assignment's first fetch is under way)
            caught_up = 0 < len(polled) < POLL_RECORDS and not self._rebalanced
            paused = self._pause() if caught_up and self._pauses else []
            if polled:
                n = len(polled)
                partitions = np.fromiter(map(partition, polled), np.int32, n)
                offsets = np.fromiter(map(offset, polled), np.int64, n)
                keep = self.sequence.check(partitions, offsets, rebalanced=self._rebalanced)
                if keep is not None:
                    polled = list(itertools.compress(polled, keep))
                    partitions, offsets = partitions[keep], offsets[keep]
            if polled:
                values = pack(list(map(value, polled)))
                # parsed here, on the other core, while the parent stores
                parsed = parse_chunk(Packed(*values))
                commits, stop, take_at = self.ask(
                    (
                        "records",
                        *values,
                        *pack(list(map(key, polled))),
                        partitions,
                        offsets,
                        parsed,
                        # a member that is behind hands over full chunks, which the
                        # parent takes at once anyway: only a caught-up one looks
                        caught_up and self.flags.turned_on(parsed),
                    )
                )
            else:
                commits, stop, take_at = self.ask(("idle",))
            self._commit(commits, sync=stop)
            if stop:
                break
            if time.monotonic() - self._topic_id_at >= self._TOPIC_ID_EVERY_S:
                self._watch_topic_id()
            if caught_up:
                self._rest(paused, take_at - self._FETCH_LEAD_S - time.monotonic())
        self._closing = True
        self.consumer.close()  # leaves the group (after the parent's last lake commit)
        write_message(self.outbox, ("closed",))

    def _poll(self) -> list[Any]:
        """What librdkafka has fetched within ``_GATHER_S`` (20 ms), up to
        ``POLL_RECORDS``: short, so that a caught-up member pauses soon after the fetch
        that answered it (see :meth:`_pause`); a longer wait for ``n`` records would
        let librdkafka fetch again and again meanwhile.
        """
        # One call: the rebalance callbacks run inside it, and the records it returns
        # may have been fetched before them (see Sequence.check).
        self._rebalanced = False
        return list(self.consumer.consume(POLL_RECORDS, self._GATHER_S))

    def _pause(self) -> list[Any]:
        """Stop fetching, once caught up with the topic (Tansu only); the partitions
        paused.

        To serve a fetch of new records Tansu walks every record batch the partition
        holds (:func:`workbench.tansu.fetches_once_per_batch`), so a tailing consumer
        would saturate it at the seed rate. The parent stores what it has queued once
        per WORKBENCH_COMMIT_INTERVAL: :meth:`_rest` resumes fetching just before the
        parent's next take, and an event still reaches, at the latest, the batch after
        the one it arrived during. Pausing drops what librdkafka prefetched; it fetches
        that again after the resume.
        """
        owned = self.consumer.assignment()
        if owned:
            self.consumer.pause(owned)
        return list(owned)

    def _rest(self, paused: list[Any], after: float) -> None:
        """Once caught up, wait ``after`` seconds before the next poll, but at most
        ``_TAIL_EVERY_S`` (0.2 s) on Apache Kafka, where librdkafka goes on fetching
        meanwhile, so that a detector turning on reaches the parent soon enough for it
        to take its batch early (:mod:`~ingest_service.processor.fetcher.flags`); then
        resume the ``paused`` partitions (on Tansu, :meth:`_pause`).

        (Pausing on Apache Kafka as well, fetching again every 0.2 s, delivered what
        arrived meanwhile only about once a second.) librdkafka resumes from the record
        after the last one it delivered; seeking there explicitly would delay the next
        fetch, and with it freshness (docs/ingest.md). Should it skip records,
        :meth:`Sequence.check <ingest_service.processor.fetcher.sequence.Sequence.check>`
        sees the gap and reads them again.
        """
        if not self._pauses:
            # librdkafka has fetched meanwhile: no lead needed, and no more than a poll
            # every _REST_MIN_S while the parent's take is due (or overdue)
            after = max(after + self._FETCH_LEAD_S - self._KAFKA_LEAD_S, self._REST_MIN_S)
        after = min(after, self._tail_every_s)
        try:
            if after > 0:
                time.sleep(after)
        finally:
            if paused:
                self.consumer.resume(paused)

    def _seek_to(self, p: int, offset: int) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            self.consumer.seek(TopicPartition(self.config.topic, p, offset))
        except KafkaException as exc:  # e.g. not fetching yet, just after the assignment
            logger.warning("partition %d: seeking to %d failed: %s", p, offset, exc)

    def _positions(self, answer: tuple[str, Any], partitions: list[Any], what: str) -> list[Any]:
        """``partitions`` with the offsets of the parent's answer (the log's first offset
        for position 0, as with a fresh partition)."""
        from confluent_kafka import TopicPartition

        if answer[0] != "seek":
            raise RuntimeError(f"{what} failed: {answer[1]}")
        positions = answer[1]
        out = []
        for tp in partitions:
            position = positions.get(tp.partition, 0)
            if position <= 0:
                position = self._log_start(tp.partition)
            out.append(TopicPartition(self.config.topic, tp.partition, position))
        return out

    def _log_start(self, p: int) -> int:
        """Partition ``p``'s first offset, as a number (the records read next are checked
        against it, see :class:`~ingest_service.processor.fetcher.sequence.Sequence`);
        OFFSET_BEGINNING when Kafka does not say."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        try:
            start, _ = self.consumer.get_watermark_offsets(
                TopicPartition(self.config.topic, p), timeout=5, cached=False
            )
        except KafkaException as exc:
            logger.warning("partition %d: asking where its log starts failed: %s", p, exc)
            return int(OFFSET_BEGINNING)
        return int(start) if start >= 0 else int(OFFSET_BEGINNING)

    def seek(self, answer: tuple[str, Any], what: str) -> None:
        """Seek the partitions the parent's answer names (those still assigned)."""
        from confluent_kafka import TopicPartition

        if answer[0] != "seek":
            raise RuntimeError(f"{what} failed: {answer[1]}")
        owned = {tp.partition for tp in self.consumer.assignment()}
        named = [TopicPartition(self.config.topic, p) for p in answer[1] if p in owned]
        for tp in self._positions(answer, named, what):
            self.consumer.seek(tp)
            self.sequence.sought(tp.partition, tp.offset)

    def describe_topic_id(self) -> str | None:
        """The topic's id as the cluster reports it now (None when it does not exist)."""
        from confluent_kafka import KafkaException, TopicCollection

        topics = TopicCollection([self.config.topic])
        futures = self.admin.describe_topics(topics, request_timeout=5)
        try:
            found = futures[self.config.topic].result()
        except KafkaException:
            return None
        text = str(found.topic_id) if found.topic_id is not None else ""
        return None if not text or set(text) <= {"0", "-", "A"} else text

    def has_partitions(self) -> bool:
        return bool(self.consumer.assignment())

    def _watch_topic_id(self) -> None:
        """Between rebalances: the topic id as the cluster describes it."""
        now = self.describe_topic_id()
        self._topic_id_at = time.monotonic()
        self.topic_id_now(now)

    def _errors(self, failed: list[tuple[Any, Any]], kafka_error: Any) -> None:
        """Errors librdkafka delivers as messages: a position Kafka has no record at is
        asked about (``auto.offset.reset=error``: nothing is skipped silently); the rest
        are logged (librdkafka retries them itself)."""
        from confluent_kafka import TopicPartition

        out_of_range = {}
        for message, error in failed:
            if error.code() == kafka_error._AUTO_OFFSET_RESET and message.partition() is not None:
                out_of_range[message.partition()] = message.offset()
            else:
                logger.warning("Kafka: %s", error.str())
        owned = {tp.partition for tp in self.consumer.assignment()}
        ranges = {}
        for p, position in out_of_range.items():
            if p not in owned:
                continue
            start, end = self.consumer.get_watermark_offsets(
                TopicPartition(self.config.topic, p), timeout=5, cached=False
            )
            ranges[p] = (position, start, end)
        if ranges:
            logger.warning(
                "offsets out of range (partition: position, log start, log end): %s", ranges
            )
            self.seek(self.ask(("out_of_range", ranges)), "handling out-of-range offsets")

    def _commit(self, commits: dict[int, int], *, sync: bool) -> None:
        from confluent_kafka import TopicPartition

        owned = {tp.partition for tp in self.consumer.assignment()}
        offsets = [
            TopicPartition(self.config.topic, p, o) for p, o in commits.items() if p in owned
        ]
        if not offsets:
            return
        try:  # lag figures only: the lake holds the truth
            if sync:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=True)
        except Exception as exc:
            logger.info("Kafka offset commit failed: %s", exc)
