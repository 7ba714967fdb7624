"""The exactly-once protocol: where this group's partitions landed in the lake.

Kafka's committed offsets are for lag monitoring only; the lake holds the truth.
Every Delta commit that stores records of a partition says, in the same commit, how
far the partition is stored: an app transaction ``<group>-<topic>-<partition>`` whose
version is the last offset stored. Rows and offset land together or not at all, so
after any crash the lake alone says what is stored. A :class:`Checkpoint` holds the
partitions a processor owns, and every step goes through it:

1. **Read** where each partition landed (:meth:`Checkpoint.take_over`, on start and on
   every assignment): each table's app-transaction version (``telemetry``,
   ``telemetry_rejected``, ``building_metrics_1m``: :class:`Offsets`) and the
   incarnation of the topic they were read from (:class:`Incarnation`).
2. **Seek** the group member to the offset after the one ``telemetry`` holds
   (:meth:`Checkpoint.position`; the log's beginning when it holds none). Records a
   poll still brings that are stored already, or of a partition not owned here, are
   dropped before decoding (:meth:`Checkpoint.not_yet_stored`,
   :meth:`Checkpoint.not_yet_rejected`).
3. **Write** each table's rows and the batch's last offset per partition in one Delta
   commit (:meth:`Checkpoint.transactions`): ``telemetry_rejected``, then ``telemetry``
   (the point of no return: a restart resumes after it), then ``building_metrics_1m``;
   then the partitions move on (:meth:`Checkpoint.stored`). A table's offset never
   moves back: a commit records the batch's offset or the one the table holds,
   whichever is larger (a replayed batch can end earlier than the crashed one).
   Kafka's offsets are committed after that, for lag monitoring only
   (:meth:`Checkpoint.kafka_positions`).
4. **Re-read** rather than trust memory:

   * *revoked*: once the batch in hand is committed, the partitions are forgotten
     (:meth:`Checkpoint.forget`); their next owner starts at step 1;
   * *assigned*: step 1 for the new partitions, then step 2 for *every* assigned one
     (records of kept partitions discarded with the queue are read again);
   * *commit conflict*: a merge that lost a race reads the table's app transactions
     again and is done when the batch's offsets are there (:meth:`Checkpoint.landed`);
     a commit that fails otherwise ends the member, and its successor starts at step 1;
   * *the topic was re-created, or a position is out of range*: the partition is
     re-based and sought anew (:meth:`Checkpoint.check_topic`,
     :meth:`Checkpoint.out_of_range`).

The offsets are *lake offsets*: a record's Kafka offset plus its partition's
:class:`Incarnation` base, which is 0 until the topic is deleted and created again (an
in-memory broker restarted) and then moves past everything stored, so that lake offsets
never repeat although Kafka's start at 0 again. The same commits record the base
(``<app id>-base``) and a fingerprint of the topic's id (``<app id>-topic``), which is
how a re-created topic is recognised. Only this module translates between the two
(:meth:`Checkpoint.in_lake_offsets`, :meth:`Checkpoint.position`).

A crash between the ``telemetry`` and ``building_metrics_1m`` commits leaves the
metrics behind (:meth:`Checkpoint.lagging_metrics`); the processor adds the missing
rows back when it takes the partition over
(:mod:`~ingest_service.processor.assignment`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import polars as pl

from ingest_service.processor.decode import RecordBatch
from workbench.config import Config
from workbench.lake.tables import BUILDING_METRICS_1M, TELEMETRY, TELEMETRY_REJECTED, open_table

__all__ = ["Checkpoint", "Incarnation", "Offsets", "Recorded", "app_id", "fingerprint"]

logger = logging.getLogger(__name__)

_OFFSET_TABLES = (TELEMETRY, TELEMETRY_REJECTED, BUILDING_METRICS_1M)


@dataclasses.dataclass(frozen=True)
class Offsets:
    """Last lake offset of one partition stored in each table (-1: nothing yet)."""

    telemetry: int
    rejected: int
    metrics: int

    @property
    def next(self) -> int:
        """The lake offset after everything any table holds (``telemetry_rejected`` is
        ahead of ``telemetry`` after a crash between their commits)."""
        return max(self.telemetry, self.rejected, self.metrics) + 1


@dataclasses.dataclass(frozen=True)
class Incarnation:
    """One incarnation of a partition's Kafka log and where it sits among lake offsets.

    ``base`` is the lake offset of the incarnation's Kafka offset 0: 0 for the topic a
    lake first read, one past everything stored when a re-created topic took over.
    ``topic_id`` is the topic's id (None when the broker reports none).

    >>> now = Incarnation(base=1_000, topic_id="01a21c61-eb0c-7060-892d-a1f44b4f9469")
    >>> now.lake(5), now.kafka(1_005)
    (1005, 5)
    """

    base: int = 0
    topic_id: str | None = None

    def lake(self, kafka_offset: int) -> int:
        """The lake offset of a Kafka offset of this incarnation."""
        return self.base + kafka_offset

    def kafka(self, lake_offset: int) -> int:
        """The Kafka offset of a lake offset of this incarnation."""
        return lake_offset - self.base


@dataclasses.dataclass(frozen=True)
class Recorded:
    """The newest incarnation a partition's commits recorded. ``base`` None: none recorded
    (a new partition, or a lake written before incarnations were recorded: base 0);
    ``fingerprint`` None: no topic id recorded with it."""

    base: int | None = None
    fingerprint: int | None = None


def app_id(group: str, topic: str, partition: int) -> str:
    """The app transaction id of one Kafka partition in one consumer group."""
    return f"{group}-{topic}-{partition}"


def fingerprint(topic_id: str) -> int:
    """A topic id as an app-transaction version (63 bits of its BLAKE2b digest).

    >>> fingerprint("01a21c61-eb0c-7060-892d-a1f44b4f9469") == fingerprint(
    ...     "01A21C61-EB0C-7060-892D-A1F44B4F9469")
    True
    """
    digest = hashlib.blake2b(uuid.UUID(topic_id).bytes, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _version(table: Any, app: str) -> int:
    version = table.transaction_version(app)
    return -1 if version is None else int(version)


class Checkpoint:
    """Where the partitions one processor owns landed in the lake, for one consumer group.

    ``offsets`` (partition -> :class:`Offsets`) are the owned partitions;
    ``incarnations`` say which Kafka log each one is read from.
    """

    def __init__(self, config: Config, group: str) -> None:
        self.config = config
        self.group = group
        self.offsets: dict[int, Offsets] = {}
        self.incarnations: dict[int, Incarnation] = {}

    @property
    def partitions(self) -> list[int]:
        """The partitions owned, in order."""
        return sorted(self.offsets)

    # --- 1. read where the partitions landed -----------------------------------------------

    def take_over(self, partitions: Iterable[int], *, topic_id: str | None) -> dict[int, Offsets]:
        """Own ``partitions`` (those not owned already); return the new ones' offsets.
        ``topic_id`` is the topic's id now (None: unknown).

        Each table's last committed offset per partition comes from its app
        transactions, with the incarnation of the topic they were read from: when the
        topic has been re-created since (its id differs), the new one is read from its
        beginning, its offsets continuing in the lake after everything stored
        (:meth:`rebase`).
        """
        new = sorted(set(partitions) - set(self.offsets))
        if not new:
            return {}
        offsets = self.read_offsets(new)
        self.offsets.update(offsets)
        recorded = self.read_incarnations(new)
        for p in new:
            self.incarnations[p] = Incarnation(recorded[p].base or 0, topic_id)
        if topic_id is not None:
            mark = fingerprint(topic_id)
            self.rebase(
                [p for p in new if recorded[p].fingerprint not in (None, mark)],
                topic_id=topic_id,
                why=f"it was re-created since the lake last read it (topic id now {topic_id})",
            )
        return offsets

    def read_offsets(self, partitions: list[int]) -> dict[int, Offsets]:
        """Where each table stands for each partition, as the lake says now."""
        versions: dict[str, dict[int, int]] = {}
        for name in _OFFSET_TABLES:
            table = open_table(self.config, name)
            versions[name] = {
                p: -1 if table is None else _version(table, self._app(p)) for p in partitions
            }
        return {
            p: Offsets(
                versions[TELEMETRY][p],
                versions[TELEMETRY_REJECTED][p],
                versions[BUILDING_METRICS_1M][p],
            )
            for p in partitions
        }

    def read_incarnations(self, partitions: list[int]) -> dict[int, Recorded]:
        """The incarnation each partition's commits last recorded, in whichever of the three
        tables recorded the newest (bases only grow; every commit records its partitions')."""

        def newness(recorded: Recorded) -> tuple[int, bool]:
            base = -1 if recorded.base is None else recorded.base
            return base, recorded.fingerprint is not None

        found: dict[int, Recorded] = dict.fromkeys(partitions, Recorded())
        for name in _OFFSET_TABLES:
            table = open_table(self.config, name)
            if table is None:
                continue
            for p in partitions:
                app = self._app(p)
                base = table.transaction_version(f"{app}-base")
                if base is None:
                    continue
                mark = table.transaction_version(f"{app}-topic")
                here = Recorded(int(base), None if mark is None else int(mark))
                if newness(here) > newness(found[p]):
                    found[p] = here
        return found

    def lagging_metrics(self, offsets: Mapping[int, Offsets]) -> dict[int, Offsets]:
        """Those of ``offsets`` whose ``building_metrics_1m`` is behind ``telemetry`` (a crash
        between the two commits)."""
        return {p: o for p, o in offsets.items() if o.metrics < o.telemetry}

    # --- 2. seek, and drop what is stored already ------------------------------------------

    def position(self, partition: int) -> int:
        """The Kafka offset to read ``partition`` from: the one after the last stored."""
        stored = self.incarnations[partition].kafka(self.offsets[partition].telemetry)
        return max(0, stored + 1)

    def positions(self, partitions: Iterable[int]) -> dict[int, int]:
        """:meth:`position` of each of ``partitions``."""
        return {p: self.position(p) for p in partitions}

    def in_lake_offsets(self, chunk: RecordBatch) -> RecordBatch:
        """``chunk`` (records as Kafka delivered them) with lake offsets."""
        bases = {p: i.base for p, i in self.incarnations.items() if i.base}
        if not bases:
            return chunk
        partitions = np.asarray(chunk.partitions, np.int64)
        by_partition = np.zeros(max(max(bases), int(partitions.max())) + 1, np.int64)
        for p, base in bases.items():
            by_partition[p] = base
        offsets = np.asarray(chunk.offsets, np.int64) + by_partition[partitions]
        return RecordBatch(chunk.values, chunk.keys, chunk.partitions, offsets, chunk.parsed)

    def not_yet_stored(self, batch: RecordBatch) -> RecordBatch:
        """``batch`` without records of partitions not owned here, without records at or
        below the offset ``telemetry`` holds for their partition, and without a second
        copy of one record: whatever delivers a record again or too late (a stale seek, a
        poll spanning a rebalance, a client or broker quirk), it is stored once, and only
        by the partition's owner."""
        done = {p: o.telemetry for p, o in self.offsets.items()}
        frame = pl.DataFrame(
            {
                "p": pl.Series(batch.partitions, dtype=pl.Int32),
                "o": pl.Series(batch.offsets, dtype=pl.Int64),
            }
        )
        owned = pl.col("p").is_in(list(done))
        keep = frame.select(
            owned
            & (pl.col("o") > pl.col("p").replace_strict(done, default=-1, return_dtype=pl.Int64))
            & pl.struct("p", "o").is_first_distinct()
        ).to_series()
        if keep.all():
            return batch
        foreign = frame.filter(~owned)
        if len(foreign):
            logger.warning(
                "skipping %d records of partitions not owned here: %s",
                len(foreign),
                sorted(foreign["p"].unique().to_list()),
            )
        again = len(keep) - int(keep.sum()) - len(foreign)
        if again:
            logger.warning(
                "skipping %d records delivered again (already stored, or twice in one batch)",
                again,
            )
        return batch.compress(keep.to_list())

    def not_yet_rejected(self, rejected: pl.DataFrame) -> pl.DataFrame:
        """Rejected rows a crashed predecessor did not commit already."""
        done = pl.DataFrame(
            {
                "source_partition": pl.Series(list(self.offsets), dtype=pl.Int32),
                "_done": pl.Series([o.rejected for o in self.offsets.values()], dtype=pl.Int64),
            }
        )
        return (
            rejected.join(done, on="source_partition", how="left")
            .filter(pl.col("source_offset") > pl.col("_done").fill_null(-1))
            .drop("_done")
        )

    # --- 3. write rows and offsets in one commit -------------------------------------------

    @staticmethod
    def last_offsets(batch: RecordBatch) -> dict[int, int]:
        """The batch's last lake offset per partition: what its commits record."""
        ends = (
            pl.DataFrame({"p": batch.partitions, "o": batch.offsets})
            .group_by("p")
            .agg(pl.col("o").max())
        )
        return dict(zip(ends["p"].to_list(), ends["o"].to_list(), strict=True))

    def transactions(self, offsets: Mapping[int, int], *, table: Any) -> Any:
        """The ``CommitProperties`` that make a Delta commit on ``table`` (the ``DeltaTable``
        whose version the commit is made against) record ``offsets``: each partition's last
        lake offset, its incarnation's base and topic fingerprint.

        A partition's offset never moves back: the commit records the larger of its offset
        in ``offsets`` and the one ``table`` holds already. A batch replayed after a crash
        between the ``telemetry_rejected`` and ``telemetry`` commits is cut anew and may
        end before the crashed one did; recording its end would tell the next owner that
        rejected rows stored by the crashed batch are not there, and they would be
        rejected a second time (the duplicates the five-SIGKILL test found on object
        stores, where the gap between the two commits is wide).
        """
        from deltalake import CommitProperties, Transaction

        transactions = []
        for p, o in sorted(offsets.items()):
            app = self._app(p)
            incarnation = self.incarnations.get(p, Incarnation())
            transactions.append(Transaction(app, max(int(o), _version(table, app))))
            transactions.append(Transaction(f"{app}-base", incarnation.base))
            if incarnation.topic_id is not None:
                transactions.append(Transaction(f"{app}-topic", fingerprint(incarnation.topic_id)))
        return CommitProperties(app_transactions=transactions)

    def landed(self, table: Any, offsets: Mapping[int, int]) -> bool:
        """Whether ``table`` (a ``DeltaTable``) holds ``offsets`` already: a commit retried
        after a lost race must not store its rows twice."""
        return all(_version(table, self._app(p)) >= o for p, o in offsets.items())

    def stored(self, last: Mapping[int, int], *, metrics: bool) -> None:
        """A batch ending at ``last`` is in ``telemetry`` and ``telemetry_rejected``, and in
        ``building_metrics_1m`` when ``metrics`` (it had on-time rows)."""
        for p, o in last.items():
            old = self.offsets.get(p, Offsets(-1, -1, -1))
            self.offsets[p] = Offsets(
                telemetry=o,
                rejected=max(o, old.rejected),
                metrics=o if metrics else old.metrics,
            )

    def metrics_repaired(self, lagging: Mapping[int, Offsets]) -> None:
        """``building_metrics_1m`` caught up with ``telemetry`` on the ``lagging``
        partitions (as :meth:`lagging_metrics` found them)."""
        for p, o in lagging.items():
            self.offsets[p] = dataclasses.replace(o, metrics=o.telemetry)

    def kafka_positions(self, last: Mapping[int, int]) -> dict[int, int]:
        """The Kafka offsets to commit (lag monitoring) after a batch ending at ``last``
        (lake offsets) is stored; none for records of an earlier incarnation."""
        positions = {}
        for p, o in last.items():
            incarnation = self.incarnations.get(p)
            position = -1 if incarnation is None else incarnation.kafka(o) + 1
            if position > 0:  # not a record of an earlier incarnation
                positions[p] = position
        return positions

    # --- 4. re-read: revoked, re-created, out of range -------------------------------------

    def forget(self, partitions: Iterable[int]) -> None:
        """No longer own ``partitions`` (their next owner reads the lake)."""
        for p in partitions:
            self.offsets.pop(p, None)
            self.incarnations.pop(p, None)

    def check_topic(self, partitions: Iterable[int], topic_id: str | None) -> list[int]:
        """Owned ``partitions`` whose topic ``topic_id`` (the id Kafka reports now) is not the
        incarnation being read; they are re-based (:meth:`rebase`), to be read from the
        beginning."""
        if topic_id is None:
            return []
        mark = fingerprint(topic_id)
        changed = []
        for p in sorted(set(partitions) & set(self.incarnations)):
            current = self.incarnations[p]
            if current.topic_id is None:  # learnt now (nothing to compare with)
                self.incarnations[p] = dataclasses.replace(current, topic_id=topic_id)
            elif fingerprint(current.topic_id) != mark:
                changed.append(p)
        self.rebase(changed, topic_id=topic_id, why=f"it was re-created (topic id now {topic_id})")
        return changed

    def rebase(
        self,
        partitions: Iterable[int],
        *,
        topic_id: str | None,
        why: str,
        kafka_from: int = 0,
    ) -> None:
        """Read ``partitions`` of a new incarnation of the topic (or of a truncated log) from
        Kafka offset ``kafka_from`` on, which becomes the lake offset after everything
        stored: lake offsets keep growing though Kafka's start again, so the checks of
        step 2 (offsets at or below what a table holds are done) stay right. The new base
        is recorded with the partition's next commits."""
        partitions = sorted(partitions)
        if not partitions:
            return
        before = {p: self.incarnations[p].base for p in partitions}
        for p in partitions:
            base = self.offsets[p].next - kafka_from
            self.incarnations[p] = Incarnation(base, topic_id)
        logger.warning(
            "topic %s, partitions %s: %s. Reading from Kafka offset %d, stored after "
            "what the lake holds (source_offset = Kafka offset + base; bases were %s, now "
            "%s). Events the old log held that were not stored yet are gone with it.",
            self.config.topic,
            partitions,
            why,
            kafka_from,
            before,
            {p: self.incarnations[p].base for p in partitions},
        )

    def out_of_range(
        self, ranges: Mapping[int, tuple[int, int, int]], topic_id: str | None
    ) -> tuple[dict[int, int], list[int]]:
        """Kafka has no record at a partition's position (``ranges``: partition -> position,
        log start, log end; ``topic_id``: the topic's id now). Below the start, retention
        deleted records before they were stored: read on from the start. Beyond the end,
        the log was re-created (a new topic id, or none to compare) or truncated (same id):
        it is re-based and read from its beginning, respectively from its end.

        Returns the Kafka offsets to seek to, and the partitions re-based because their
        log ends before the position."""
        changed = self.check_topic(list(self.offsets), topic_id)
        seeks = self.positions(changed)
        ended = []
        for p, (position, start, end) in sorted(ranges.items()):
            if p in seeks or p not in self.offsets:
                continue
            if position < start:
                logger.warning(
                    "topic %s partition %d: Kafka deleted offsets %d to %d before "
                    "they were stored (retention); those %d events are lost",
                    self.config.topic,
                    p,
                    position,
                    start - 1,
                    start - position,
                )
                seeks[p] = start
                continue
            # a new topic id was handled above: the same id means truncation
            recreated = topic_id is None
            seeks[p] = 0 if recreated else end
            self.rebase(
                [p],
                topic_id=topic_id,
                kafka_from=seeks[p],
                why=f"its log ends at {end}, before the position {position} "
                + ("(re-created)" if recreated else "(truncated by the broker)"),
            )
            ended.append(p)
        return seeks, ended

    def _app(self, partition: int) -> str:
        return app_id(self.group, self.config.topic, partition)
