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
from typing import IO, Any

from workbench.config import Config

__all__ = ["consumer_settings", "read_message", "write_message"]

logger = logging.getLogger(__name__)

# Records per poll: big enough to amortise the poll's fixed costs, small enough that
# a batch starts being processed soon after its first records arrive.
POLL_RECORDS = 20_000

_LENGTH = struct.Struct("!Q")
_VALUE, _KEY, _OFFSET = (operator.attrgetter(a) for a in ("value", "key", "offset"))


def consumer_settings(config: Config, *, group: str | None) -> dict[str, Any]:
    """kafka-python settings shared by the processor and the bench's bare consumer."""
    return {
        "bootstrap_servers": config.bootstrap_servers,
        "group_id": group,
        "client_id": "workbench-processor",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
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
        self.consumer = KafkaConsumer(**consumer_settings(config, group=config.processor_group))

    def ask(self, message: object) -> Any:
        write_message(self.outbox, message)
        return read_message(self.inbox)

    def run(self) -> None:
        from kafka import ConsumerRebalanceListener

        member = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: list[Any]) -> None:
                member.ask(("revoked", sorted(tp.partition for tp in revoked)))

            def on_partitions_assigned(self, assigned: list[Any]) -> None:
                answer = member.ask(("assigned", sorted(tp.partition for tp in assigned)))
                if answer[0] != "seek":
                    raise RuntimeError(f"taking over partitions failed: {answer[1]}")
                for tp in assigned:
                    position = answer[1][tp.partition]
                    if position > 0:
                        member.consumer.seek(tp, position)
                    else:
                        member.consumer.seek_to_beginning(tp)

        self.consumer.subscribe([self.config.topic], listener=Listener())
        while True:
            polled = self.consumer.poll(timeout_ms=200, max_records=POLL_RECORDS)
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
        self.consumer.close()  # leaves the group (after the parent's last lake commit)
        write_message(self.outbox, ("closed",))

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
