"""The Kafka side of the processor: a group member polling in a child process, and the
:class:`Poller` that feeds its records to the processing thread.

Fetching and storing overlap: while this process stores one batch, the group
member (:mod:`ingest_service.processor.fetcher`, a child process) fetches the
next. In threads of one process they would not overlap: the member's Python side
holds the GIL for much of its time (all of it with kafka-python, which decodes
records in Python) and the processing thread waits for it at every return from
polars, pyarrow or deltalake (docs/ingest.md has the figures). So the member is a
child process, and this process keeps the :class:`Processor`.
A receiver thread here reads the child's record batches into a bounded queue (at
most ``WORKBENCH_COMMIT_MAX_EVENTS`` records wait; the child is not answered — and
does not poll — until there is room); the processing thread takes them with
:meth:`Poller.take` and reports each batch stored with :meth:`Poller.done`. Every
answer to the child also says when the next take is due, and the child paces its
fetches to it (:meth:`~ingest_service.processor.fetcher.rdkafka.RdkafkaMember._pause`).

Offsets live in the lake, not in Kafka, and the processor's
:class:`~ingest_service.processor.checkpoint.Checkpoint` is the one place that says
where each partition stands (its docstring has the protocol step by step). On a
rebalance (the child asks, and waits for the answer inside its rebalance callback):

1. *revoked*: every queued batch is discarded, and the answer waits until the
   batch being processed (if any) is committed to the lake — so a partition's
   next owner, which reads the lake's offsets, never races a commit of ours;
2. *assigned*: the processor forgets lost partitions and takes over new ones,
   and the child seeks *every* assigned partition to the offset after the last
   one ``telemetry`` holds (records of kept partitions that were queued and
   discarded in step 1 are simply read again).

The lake counts in *lake offsets* (Kafka offset + the partition's incarnation base,
see :class:`~ingest_service.processor.checkpoint.Incarnation`); the checkpoint
translates Kafka's here: records as they arrive, the positions the child seeks to,
the offsets it commits. A topic that was deleted and created again starts at offset 0: the
processor recognises it by the topic id Kafka reports (asked afresh at every
assignment), re-bases its partitions and has them read from the beginning. The
child also reports a topic id change it sees in its metadata between rebalances,
and a position Kafka says is out of range (``auto_offset_reset="none"``: nothing
is skipped silently); for both, every record already received is stored first.

The processor's state is only touched by one thread at a time: the processing
thread between :meth:`Poller.take` and :meth:`Poller.done`, the receiver thread
(steps 1-2) only while no batch is being processed.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.fetcher.channel import read_message, write_message
from ingest_service.processor.packed import Packed
from ingest_service.processor.processor import Processor
from workbench.config import Config
from workbench.kafka import topic_id

__all__ = ["Poller"]

logger = logging.getLogger(__name__)


class Poller:
    """Runs the group member (a child process) and queues its records for processing.

    The processing thread calls :meth:`take` (a batch, possibly empty), works on
    it, then :meth:`done`; everything it does with the :class:`Processor` in
    between is safe from the rebalance handling, which runs in the receiver thread.
    """

    def __init__(self, config: Config, processor: Processor, *, max_queued: int) -> None:
        self.config = config
        self.processor = processor
        self.checkpoint = processor.checkpoint
        self.max_queued = max(1, max_queued)
        self.first_record_at: float | None = None
        # when (time.monotonic()) the processing thread takes its next batch; it says so,
        # and the member paces its fetches to it
        self.next_take = 0.0
        self.joined = threading.Event()  # the first assignment (maybe empty) came in
        self._cond = threading.Condition()
        self._queue: collections.deque[RecordBatch] = collections.deque()
        self._queued = 0
        self._in_flight = False
        self._urgent = False  # a queued chunk holds a detector turning on (fetcher.flags)
        self._to_commit: dict[int, int] = {}  # partition -> next offset, for lag monitoring
        self._stop = False
        self._closed = False
        self._error: BaseException | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._receive, name="kafka-receiver", daemon=True)

    # --- the processing thread's side ------------------------------------------------------

    def start(self) -> None:
        """Start the group member and the receiver thread."""
        self._child = subprocess.Popen(
            [sys.executable, "-m", "ingest_service.processor.fetcher"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **self.config.env()},
        )
        self._thread.start()

    def take(
        self,
        *,
        max_events: int,
        deadline: float,
        stop: threading.Event,
        urgent_from: float | None = None,
    ) -> RecordBatch:
        """Queued records once ``max_events`` are queued, ``deadline`` (monotonic) has
        passed or ``stop`` is set — or, from ``urgent_from`` (monotonic) on, once a
        queued chunk holds a smoke or intrusion detector turning on — at most
        ``max_events`` of them, possibly none. Until :meth:`done`, the batch counts as
        being processed."""
        with self._cond:
            while (
                self._queued < max_events
                and self._error is None
                and not stop.is_set()
                and (left := deadline - time.monotonic()) > 0
            ):
                if self._urgent and urgent_from is not None:
                    if (early := urgent_from - time.monotonic()) <= 0:
                        break
                    left = min(left, early)
                self._cond.wait(min(left, 0.1))
            self._urgent = False
            if self._error is not None:
                raise self._error
            taken: list[RecordBatch] = []
            count = 0
            while self._queue and count < max_events:
                chunk = self._queue.popleft()
                room = max_events - count
                if len(chunk) > room:  # the rest stays first in line
                    chunk, rest = chunk[:room], chunk[room:]
                    self._queue.appendleft(rest)
                taken.append(chunk)
                count += len(chunk)
            self._queued -= count
            self._in_flight = True
            self._cond.notify_all()  # room in the queue
        if not taken:
            return RecordBatch([], [], [], [])
        return RecordBatch.concat(taken)

    def done(self, last: dict[int, int]) -> None:
        """The batch from :meth:`take` is in the lake (``last``: partition -> last lake
        offset)."""
        with self._cond:
            for p, position in self.checkpoint.kafka_positions(last).items():
                self._to_commit[p] = max(position, self._to_commit.get(p, 0))
            self._in_flight = False
            self._cond.notify_all()

    def close(self, timeout: float = 30) -> None:
        """Have the member commit the Kafka offsets (lag monitoring) and leave the group.

        Call after the last batch is done: a partition's next owner starts from the
        lake's offsets, which must already hold everything this process stored."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout)
        child = self._child
        if child is None:
            return
        try:
            child.wait(timeout=5 if self._closed else 0.5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=30)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()

    # --- the receiver thread -------------------------------------------------------------

    def _receive(self) -> None:
        child = self._child
        assert child is not None and child.stdin is not None and child.stdout is not None
        inbox, outbox = child.stdout, child.stdin
        try:
            while True:
                message = read_message(inbox)
                kind = message[0]
                if kind == "records":
                    values, keys = Packed(*message[1:3]), Packed(*message[3:5])
                    chunk = RecordBatch(values, keys, *message[5:8])
                    urgent = len(message) > 8 and bool(message[8])
                    write_message(outbox, self._records(chunk, urgent=urgent))
                elif kind == "idle":
                    write_message(outbox, self._answer())
                elif kind == "revoked":
                    self._revoked(message[1])
                    write_message(outbox, ("ok",))
                elif kind == "assigned":
                    write_message(outbox, self._assigned(message[1]))
                elif kind == "topic_changed":
                    write_message(outbox, self._topic_changed())
                elif kind == "out_of_range":
                    write_message(outbox, self._out_of_range(message[1]))
                elif kind == "closed":
                    self._closed = True
                    return
                else:
                    raise RuntimeError(f"Kafka member failed: {message[1]}")
        except BaseException as exc:
            if isinstance(exc, EOFError | BrokenPipeError):
                exc = RuntimeError("the Kafka member process exited")
            logger.error("%s", exc)
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _records(
        self, chunk: RecordBatch, *, urgent: bool = False
    ) -> tuple[dict[int, int], bool, float]:
        if self.first_record_at is None:
            self.first_record_at = time.time()
        chunk = self.checkpoint.in_lake_offsets(chunk)
        with self._cond:
            self._queue.append(chunk)
            self._queued += len(chunk)
            self._urgent = self._urgent or urgent
            self._cond.notify_all()
            while self._queued >= self.max_queued and not self._stop:
                self._cond.wait()  # back-pressure: the member waits for this answer
        return self._answer()

    def _answer(self) -> tuple[dict[int, int], bool, float]:
        with self._cond:
            commits, self._to_commit = self._to_commit, {}
            return commits, self._stop, self.next_take

    def _revoked(self, revoked: list[int]) -> None:
        with self._cond:
            self._queue.clear()
            self._queued = 0
            self._urgent = False
            self._to_commit.clear()
            while self._in_flight:
                self._cond.wait()
            self._cond.notify_all()
        logger.info("partitions revoked: %s", revoked)

    def _assigned(self, assigned: list[int]) -> tuple[str, Any]:
        try:
            current = topic_id(self.config)  # asked afresh: the member's metadata may lag
            with self._cond:
                while self._in_flight:
                    self._cond.wait()
                # Records received before this point belong to the old assignment.
                self._queue.clear()
                self._queued = 0
                now = set(assigned)
                self.processor.revoke(set(self.checkpoint.offsets) - now)
                self.checkpoint.check_topic(now, current)  # the kept ones
                # only the new ones; kept ones keep their state
                self.processor.assign(now, topic_id=current)
                self.joined.set()
                return "seek", self.checkpoint.positions(assigned)
        except Exception as exc:
            logger.exception("taking over partitions %s failed", assigned)
            return "failed", f"{type(exc).__name__}: {exc}"

    def _drained(self) -> bool:
        """(Holding the lock.) Wait until every record received is in the lake; False when
        the poller is stopping or failed first."""
        while (self._queue or self._in_flight) and not self._stop and self._error is None:
            self._cond.wait()
        return not (self._queue or self._in_flight)

    def _topic_changed(self) -> tuple[str, Any]:
        """The child's metadata shows a new topic id: partitions of a re-created topic are
        re-based once what was received is stored, and read from their beginning."""
        try:
            current = topic_id(self.config)
            with self._cond:
                if not self._drained():
                    return "seek", {}
                changed = self.checkpoint.check_topic(list(self.checkpoint.offsets), current)
                for p in changed:
                    self._to_commit.pop(p, None)
                return "seek", self.checkpoint.positions(changed)
        except Exception as exc:
            logger.exception("checking the topic's id failed")
            return "failed", f"{type(exc).__name__}: {exc}"

    def _out_of_range(self, ranges: dict[int, tuple[int, int, int]]) -> tuple[str, Any]:
        """Kafka has no record at a partition's position (partition -> position, log start,
        log end): once every record received is stored, the checkpoint says where to read
        on (:meth:`~ingest_service.processor.checkpoint.Checkpoint.out_of_range`)."""
        try:
            current = topic_id(self.config)
            with self._cond:
                if not self._drained():
                    return "seek", {}
                seeks, ended = self.checkpoint.out_of_range(ranges, current)
                for p in ended:
                    self._to_commit.pop(p, None)
                return "seek", seeks
        except Exception as exc:
            logger.exception("handling an out-of-range position failed")
            return "failed", f"{type(exc).__name__}: {exc}"
