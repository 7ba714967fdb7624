"""The processor's Kafka member: a child process that polls and hands record columns over.

kafka-python decodes every record in pure Python. In a thread of the processor
it would hold the GIL for most of its time and stall the processing thread at
every return from polars, pyarrow or deltalake; in its own process it runs
truly beside it. The child is the consumer-group member; the parent
(:class:`~ingest_service.processor.consumer.Poller`) keeps the processor state.

The two talk over the child's stdin/stdout in length-prefixed pickles; every
message of the child is a request the parent answers:

* ``("records", values, keys, partitions, offsets)`` and ``("idle",)`` after each
  poll — answered ``(commits, stop)`` once the parent's queue has room (that is
  the back-pressure): Kafka offsets to commit for lag monitoring, and whether to
  leave;
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
from typing import IO, Any, Literal

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


class _Member:
    """The consumer-group member; every exchange with the parent is request/answer."""

    def __init__(self, config: Config, inbox: IO[bytes], outbox: IO[bytes]) -> None:
        from kafka import KafkaConsumer

        self.config = config
        self.inbox = inbox
        self.outbox = outbox
        self.consumer = no_topic_auto_creation(
            KafkaConsumer(**consumer_settings(config, group=config.processor_group))
        )
        self.topic_id: str | None = None  # as the member's metadata last showed it

    def ask(self, message: object) -> Any:
        write_message(self.outbox, message)
        return read_message(self.inbox)

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
                commits, stop = self.ask(("records", values, keys, partitions, offsets))
            else:
                commits, stop = self.ask(("idle",))
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

    def _watch_topic_id(self) -> None:
        """Between rebalances, a new topic id in the metadata means the topic was deleted
        and created again: the parent re-bases its partitions and they are read anew."""
        now = self.metadata_topic_id()
        if now is None or now == self.topic_id:
            return
        if self.topic_id is not None and self.consumer.assignment():
            logger.warning(
                "topic %s has a new id (%s, was %s): it was re-created",
                self.config.topic,
                now,
                self.topic_id,
            )
            self.seek(self.ask(("topic_changed",)), "re-reading a re-created topic")
        self.topic_id = now

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
        _Member(config, inbox, outbox).run()
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
