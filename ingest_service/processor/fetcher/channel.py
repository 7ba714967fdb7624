"""The channel between the processor and its Kafka member: length-prefixed pickles.

The two talk over the child's stdin/stdout; every message of the child is a request
the parent (:class:`~ingest_service.processor.consumer.Poller`) answers:

* ``("records", values, value_lengths, keys, key_lengths, partitions, offsets[,
  parsed, urgent])`` (values and keys packed, see :mod:`~ingest_service.processor.packed`;
  partitions and offsets numpy arrays; ``parsed`` and ``urgent``, from the librdkafka
  member only: the values' NDJSON parse as a ``pyarrow.Table``, or None when it failed,
  see :mod:`~ingest_service.processor.ndjson`, and whether the chunk holds a smoke or
  intrusion detector turning on, see :mod:`~ingest_service.processor.fetcher.flags`)
  and ``("idle",)`` after each poll — answered
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
"""

from __future__ import annotations

import pickle
import struct
from typing import IO, Any

__all__ = ["read_message", "write_message"]

_LENGTH = struct.Struct("!Q")


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
