"""The processor's Kafka member: a child process that polls and hands record columns over.

kafka-python decodes every record in pure Python. In a thread of the processor
it would hold the GIL for most of its time and stall the processing thread at
every return from polars, pyarrow or deltalake; in its own process it runs
truly beside it. The child is the consumer-group member; the parent
(:class:`~ingest_service.processor.consumer.Poller`) keeps the processor state.

The two talk over the child's stdin/stdout in length-prefixed pickles; every
message of the child is a request the parent answers:

* ``("records", values, value_lengths, keys, key_lengths, partitions, offsets)``
  (values and keys packed, see :mod:`~ingest_service.processor.packed`; partitions
  and offsets numpy arrays) and ``("idle",)`` after each poll — answered
  ``(commits, stop, take_at)`` once the parent's queue has room (that is the
  back-pressure): Kafka offsets to commit for lag monitoring, whether to leave, and
  when (``time.monotonic()``) the parent takes its next batch, which the librdkafka
  member paces its fetches to;
* ``("revoked", partitions)`` from ``on_partitions_revoked`` — answered once the
  batch being stored is in the lake and queued records are discarded;
* ``("assigned", partitions)`` from ``on_partitions_assigned`` — answered with the
  position of every assigned partition (from the lake), where the child seeks;
* ``("topic_changed",)`` when the member's metadata shows the topic with a new id (it
  was deleted and created again), and ``("out_of_range", {partition: (position,
  log_start, log_end)})`` when Kafka has no record at a position — both answered, once
  every record received is stored, with the positions to seek to;
* ``("closed",)`` after leaving the group, or ``("error", text)``.

The child ignores SIGTERM/SIGINT (the parent decides when to leave) and exits as
soon as the parent is gone (its stdin closes).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import operator
import os
import pickle
import signal
import struct
import sys
import time
from typing import IO, Any, Literal

import numpy as np

from ingest_service.processor.packed import pack
from workbench.config import Config
from workbench.kafka import no_topic_auto_creation

__all__ = ["consumer_settings", "read_message", "write_message"]

logger = logging.getLogger(__name__)

# Records per poll: big enough to amortise the poll's fixed costs, small enough that
# a batch starts being processed soon after its first records arrive.
POLL_RECORDS = 20_000

_LENGTH = struct.Struct("!Q")
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
        "bootstrap_servers": config.bootstrap_servers,
        "group_id": group,
        "client_id": "workbench-processor",
        "enable_auto_commit": False,
        "auto_offset_reset": offset_reset,
        "allow_auto_create_topics": False,
        # The Tansu broker's group join waits about half the session timeout.
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1500,
        "max_poll_interval_ms": 300_000,
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "receive_buffer_bytes": 4 * 1024 * 1024,
    }


def write_message(stream: IO[bytes], message: object) -> None:
    """Send one message (a length-prefixed pickle)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def read_message(stream: IO[bytes]) -> Any:
    """Receive one message; ``EOFError`` when the other side is gone."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError("peer closed the channel")
    size = _LENGTH.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("peer closed the channel mid-message")
    return pickle.loads(data)


def rdkafka_settings(
    config: Config,
    *,
    group: str,
    offset_reset: Literal["error", "earliest"] = "error",
) -> dict[str, Any]:
    """confluent-kafka (librdkafka) settings of the processor's member and the bench's
    bare librdkafka consumer; the counterpart of :func:`consumer_settings`."""
    return {
        "bootstrap.servers": config.bootstrap_servers,
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
        # queue; the default message floor (100,000) stops fetching early and halved the
        # rate here (measured: 200k vs 500k records/s from the embedded broker)
        "queued.min.messages": 1_000_000,
        "queued.max.messages.kbytes": 64 * 1024,
        "socket.receive.buffer.bytes": 4 * 1024 * 1024,
        "log_level": 4,  # warnings and worse
    }


class _Asking:
    """What both members share: every exchange with the parent is request/answer, and a
    new topic id seen between rebalances is reported."""

    config: Config
    inbox: IO[bytes]
    outbox: IO[bytes]
    topic_id: str | None

    def ask(self, message: object) -> Any:
        write_message(self.outbox, message)
        return read_message(self.inbox)

    def seek(self, answer: tuple[str, Any], what: str) -> None:
        raise NotImplementedError

    def has_partitions(self) -> bool:
        raise NotImplementedError

    def topic_id_now(self, now: str | None) -> None:
        """``now`` is the topic's id as just seen: a new one means the topic was deleted
        and created again, so the parent re-bases its partitions and they are read anew."""
        if now is None or now == self.topic_id:
            return
        if self.topic_id is not None and self.has_partitions():
            logger.warning(
                "topic %s has a new id (%s, was %s): it was re-created",
                self.config.topic,
                now,
                self.topic_id,
            )
            self.seek(self.ask(("topic_changed",)), "re-reading a re-created topic")
        self.topic_id = now


class _Member(_Asking):
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


class _RdkafkaMember(_Asking):
    """The consumer-group member on librdkafka (confluent-kafka), the default.

    Same exchanges with the parent as :class:`_Member`; what differs is where the time
    goes: librdkafka fetches and decodes records in its own C threads, so this process
    spends about 2 µs per record (librdkafka included; packing what the parent gets)
    instead of kafka-python's 5, and the parent's processing has the CPU.
    """

    _TOPIC_ID_EVERY_S = 2.0
    # a fetch resumed this long before the parent's next take is in that batch: the
    # broker answers, then the records cross the pipe (both take milliseconds when
    # the machine is not overloaded)
    _FETCH_LEAD_S = 0.15
    _GATHER_S = 0.02
    _GAP_REREADS = 2

    def __init__(self, config: Config, inbox: IO[bytes], outbox: IO[bytes]) -> None:
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        self.config = config
        self.inbox = inbox
        self.outbox = outbox
        self.consumer = Consumer(
            rdkafka_settings(config, group=config.processor_group), logger=logger
        )
        self.admin = AdminClient(
            {"bootstrap.servers": config.bootstrap_servers, "log_level": 4}, logger=logger
        )
        self.topic_id: str | None = None  # as last described
        self._topic_id_at = 0.0
        self._closing = False
        # partition -> the offset after the last record handed to the parent (or where it
        # was last sought to, possibly a logical offset): where reading must go on
        self._next: dict[int, int] = {}
        # (partition, offset) -> how often a gap there was read again, since the position
        # was last set
        self._gaps: dict[tuple[int, int], int] = {}
        self._rebalanced = False  # during the current poll

    def run(self) -> None:
        from confluent_kafka import KafkaError, Message

        def on_assign(consumer: Any, partitions: list[Any]) -> None:
            answer = self.ask(("assigned", sorted(tp.partition for tp in partitions)))
            positions = self._positions(answer, partitions, "taking over partitions")
            consumer.assign(positions)
            self._next = {tp.partition: tp.offset for tp in positions}
            self._gaps = {}
            self._rebalanced = True
            self.topic_id = self.describe_topic_id()
            self._topic_id_at = time.monotonic()

        def on_revoke(consumer: Any, partitions: list[Any]) -> None:
            if not self._closing:  # close() revokes too, after the parent's last commit
                self.ask(("revoked", sorted(tp.partition for tp in partitions)))
            consumer.unassign()
            self._next = {}
            self._gaps = {}
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
            paused = self._pause() if caught_up else []
            if polled:
                n = len(polled)
                partitions = np.fromiter(map(partition, polled), np.int32, n)
                offsets = np.fromiter(map(offset, polled), np.int64, n)
                keep = self._in_sequence(partitions, offsets, rebalanced=self._rebalanced)
                if keep is not None:
                    polled = list(itertools.compress(polled, keep))
                    partitions, offsets = partitions[keep], offsets[keep]
            if polled:
                commits, stop, take_at = self.ask(
                    (
                        "records",
                        *pack(list(map(value, polled))),
                        *pack(list(map(key, polled))),
                        partitions,
                        offsets,
                    )
                )
            else:
                commits, stop, take_at = self.ask(("idle",))
            self._commit(commits, sync=stop)
            if stop:
                break
            if time.monotonic() - self._topic_id_at >= self._TOPIC_ID_EVERY_S:
                self._watch_topic_id()
            if paused:
                self._resume(paused, take_at - self._FETCH_LEAD_S - time.monotonic())
        self._closing = True
        self.consumer.close()  # leaves the group (after the parent's last lake commit)
        write_message(self.outbox, ("closed",))

    def _poll(self) -> list[Any]:
        """What librdkafka has fetched within ``_GATHER_S`` (20 ms), up to
        ``POLL_RECORDS``: short, so that a caught-up member pauses soon after the fetch
        that answered it (see :meth:`_pause`); ``consume(n, 0.1)`` waited 0.1 s while
        librdkafka fetched again and again.
        """
        # One call: the rebalance callbacks run inside it, and the records it returns
        # may have been fetched before them (see _in_sequence).
        self._rebalanced = False
        return list(self.consumer.consume(POLL_RECORDS, self._GATHER_S))

    def _pause(self) -> list[Any]:
        """Stop fetching, once caught up with the topic; the partitions paused.

        A tailing consumer fetches again as soon as records arrive, and every fetch
        of new records costs the embedded broker a walk over all the record batches
        the partition holds (docs/operations.md), so at the seed rate a tailing
        consumer saturated it within minutes. The parent stores what it has queued
        once per WORKBENCH_COMMIT_INTERVAL, so fetching more often than that gains an
        event nothing: :meth:`_resume` starts fetching again just before the parent's
        next take, and an event still reaches, at the latest, the batch after the one
        it arrived during. Pausing drops what librdkafka prefetched; it fetches that
        again after :meth:`_resume`.
        """
        owned = self.consumer.assignment()
        if owned:
            self.consumer.pause(owned)
        return list(owned)

    def _resume(self, paused: list[Any], after: float) -> None:
        """Resume fetching ``paused`` partitions ``after`` seconds (at most one interval).

        librdkafka resumes from the record after the last one it delivered. (Seeking
        there explicitly was tried: it delayed the next fetch often enough to put the
        freshness p99 at 3.4-4.4 s instead of 1.5 s.) Should it skip records,
        :meth:`_in_sequence` sees the gap and reads them again.
        """
        after = min(after, self.config.commit_interval)
        try:
            if after > 0:
                time.sleep(after)
        finally:
            self.consumer.resume(paused)

    def _in_sequence(
        self,
        partitions: np.ndarray[Any, Any],
        offsets: np.ndarray[Any, Any],
        *,
        rebalanced: bool = False,
    ) -> Any:
        """Check that polled records go on where the last ones ended, per partition; the
        mask of records to hand over, or None for all of them.

        Only records of an assigned partition that continue its sequence are handed
        over: a poll that spans a rebalance returns records fetched for the old
        assignment ahead of the new one's (``rebalanced``), and they must neither
        reach a processor that no longer owns their partition nor move a position.

        * a partition no longer assigned: its records are dropped;
        * offsets going backwards within the poll: only the last run counts;
        * a record before the expected offset (delivered already) is dropped;
        * a gap (a record beyond the expected offset): the records from the gap on are
          dropped and the partition is read again from the expected offset. After a
          rebalance that is always so (the new assignment's records start exactly at
          its position; later ones are the old assignment's). Otherwise the same gap
          seen ``_GAP_REREADS`` + 1 times is taken as the log's own (compaction or
          transaction markers leave gaps in a real Kafka's offsets) and logged.
        """
        keep = np.ones(len(partitions), bool)
        for p in np.unique(partitions).tolist():
            where = np.flatnonzero(partitions == p)
            expected = self._next.get(p)
            if expected is None:
                logger.warning(
                    "partition %d: %d records of a partition no longer assigned dropped",
                    p,
                    len(where),
                )
                keep[where] = False
                continue
            back = np.flatnonzero(np.diff(offsets[where]) <= 0)
            if len(back):
                stale, where = where[: back[-1] + 1], where[back[-1] + 1 :]
                logger.warning(
                    "partition %d: %d records of an earlier position dropped", p, len(stale)
                )
                keep[stale] = False
            run = offsets[where]
            if expected < 0:  # a logical position (the beginning): nothing to compare
                if rebalanced:  # but the records may be the old assignment's
                    keep[where] = False
                    self._seek_to(p, expected)
                else:
                    self._next[p] = int(run[-1]) + 1
                continue
            keep[where[run < expected]] = False
            where, run = where[run >= expected], run[run >= expected]
            # the records that continue the sequence: a prefix of the run
            follows = int(np.count_nonzero(run == expected + np.arange(len(run))))
            if follows == len(run) or not self._read_again(
                p, expected + follows, int(run[follows]), rebalanced=rebalanced
            ):
                self._next[p] = max(expected, int(run[-1]) + 1) if len(run) else expected
                continue
            keep[where[follows:]] = False
            self._next[p] = expected + follows
        return None if keep.all() else keep

    def _read_again(self, p: int, gap: int, found: int, *, rebalanced: bool) -> bool:
        """Offsets ``gap`` to ``found - 1`` did not come: seek back to read them again
        (True), or take them as the log's own gap (False)."""
        after = found - 1
        if rebalanced:
            logger.info(
                "partition %d: records from offset %d on were fetched for an earlier "
                "assignment; reading from %d",
                p,
                found,
                gap,
            )
        else:
            seen = self._gaps.get((p, gap), 0)
            if seen >= self._GAP_REREADS:
                logger.warning(
                    "partition %d: offsets %d-%d are not in the log (read %d times)",
                    p,
                    gap,
                    after,
                    seen + 1,
                )
                return False
            self._gaps[(p, gap)] = seen + 1
            logger.warning(
                "partition %d: the Kafka client skipped offsets %d-%d; reading them again",
                p,
                gap,
                after,
            )
        self._seek_to(p, gap)
        return True

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
        against it, see :meth:`_in_sequence`); OFFSET_BEGINNING when Kafka does not say."""
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
            self._next[tp.partition] = tp.offset
            self._gaps = {k: n for k, n in self._gaps.items() if k[0] != tp.partition}

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


def main() -> int:
    """Entry point of the child (``python -m ingest_service.processor.fetcher``)."""
    from workbench.logs import configure_logging

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = Config.from_env()
    configure_logging(config.log_level)
    inbox, outbox = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the channel
    try:
        member = _Member if config.processor_client == "kafka-python" else _RdkafkaMember
        logger.info(
            "Kafka member on %s joining group %s for topic %s",
            config.processor_client,
            config.processor_group,
            config.topic,
        )
        member(config, inbox, outbox).run()
    except (EOFError, BrokenPipeError):
        return 0  # the parent is gone: so are we (the group notices after the session timeout)
    except BaseException as exc:
        logger.exception("polling Kafka failed")
        with contextlib.suppress(OSError):
            write_message(outbox, ("error", f"{type(exc).__name__}: {exc}"))
        return 1
    return 0


if __name__ == "__main__":
    os._exit(main())
