"""The processor's heart: one batch of Kafka records in, lake commits out, exactly once.

:meth:`Processor.process` is the commit protocol; :meth:`Processor.assign`
is where a processor takes over partitions (on start and on every rebalance)
and repairs what a crash may have left half-done. Kafka plumbing lives in
:mod:`ingest_service.processor.consumer`, Delta plumbing in
:mod:`ingest_service.processor.sink`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterable

import polars as pl
import pyarrow as pa

from ingest_service.processor import sink
from ingest_service.processor.decode import Limits, RecordBatch, decode
from ingest_service.processor.dedup import SeenIndex
from ingest_service.processor.sink import Incarnation, Offsets
from ingest_service.processor.windows import (
    Clock,
    SystemClock,
    TumblingWindows,
    mark_late,
    minute_partials,
    rolling_state,
    watermark_time,
)
from workbench.config import Config
from workbench.lake.tables import BUILDING_METRICS_1M, TELEMETRY, ensure_tables, open_table

__all__ = ["BatchResult", "Processor"]

logger = logging.getLogger(__name__)

_UTC_US = pl.Datetime("us", "UTC")
# The dedup index forgets events older than WORKBENCH_DEDUP_WINDOW this often.
_PRUNE_EVERY = dt.timedelta(seconds=60)
# Schema changes one telemetry commit may meet in a row before the processor gives up.
_SCHEMA_RETRIES = 10


@dataclasses.dataclass
class BatchResult:
    """What one batch did (counted for logs, the heartbeat and the bench)."""

    records: int = 0
    stored: int = 0
    rejected: int = 0
    duplicates: int = 0
    late: int = 0
    buildings: int = 0
    last_offsets: dict[int, int] = dataclasses.field(default_factory=dict, repr=False)
    stages_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    """Wall milliseconds of each step (decode, dedup, rejected, telemetry, metrics, state)."""

    def timed(self, stage: str, since: float) -> float:
        """Record ``stage`` as lasting from ``since`` (``time.perf_counter()``) to now;
        return now."""
        now = time.perf_counter()
        self.stages_ms[stage] = round((now - since) * 1000, 1)
        return now


class Processor:
    """Turns batches of records of the partitions it owns into lake commits."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        windows: TumblingWindows | None = None,
    ) -> None:
        self.config = config
        self.group = config.processor_group
        self.clock = clock or SystemClock()
        self.windows = windows or TumblingWindows(grace_s=config.late_grace)
        self.limits = Limits(max_future_s=config.processor_max_future)
        self.index = SeenIndex()
        self.offsets: dict[int, Offsets] = {}  # lake offsets
        self.incarnations: dict[int, Incarnation] = {}
        self.watermarks: dict[int, dt.datetime] = {}
        self._pruned_at = self.clock.now()
        ensure_tables(config)
        # telemetry's promoted reading columns, learned from the table (see _store_telemetry)
        self.readings: dict[str, pa.DataType] = sink.reading_columns(config)

    # --- taking over partitions ----------------------------------------------------------

    def assign(self, partitions: Iterable[int], *, topic_id: str | None = None) -> None:
        """Take over ``partitions`` (those not owned already); afterwards ``offsets[p].telemetry``
        is the last lake offset stored, so reading resumes one after it
        (:meth:`position`). ``topic_id`` is the topic's id now (None: unknown).

        1. read each table's last committed offset per partition (app transactions) and
           the incarnation of the topic they were read from: when the topic has been
           re-created since (its id differs), the new one is read from its beginning,
           its offsets continuing in the lake after everything stored (:meth:`rebase`);
        2. rebuild the dedup index and event-time watermarks from recent ``telemetry``;
        3. if ``building_metrics_1m`` lags ``telemetry`` (a crash between the two
           commits), add the missing rows, read back from ``telemetry``;
        4. recompute ``building_state`` from the metrics (a crash may have skipped it).
        """
        new = sorted(set(partitions) - set(self.offsets))
        if not new:
            return
        # Step 1
        offsets = sink.committed_offsets(self.config, self.group, new)
        self.offsets.update(offsets)
        recorded = sink.recorded_incarnations(self.config, self.group, new)
        for p in new:
            self.incarnations[p] = Incarnation(recorded[p].base or 0, topic_id)
        if topic_id is not None:
            mark = sink.fingerprint(topic_id)
            self.rebase(
                [p for p in new if recorded[p].fingerprint not in (None, mark)],
                topic_id=topic_id,
                why=f"it was re-created since the lake last read it (topic id now {topic_id})",
            )
        # Step 2
        recent = self._recent_telemetry(new)
        if len(recent):
            self.index.add(recent)
            ends = recent.group_by("source_partition").agg(
                watermark_time(recent.columns).max().alias("ts")
            )
            self.watermarks.update(zip(ends["source_partition"], ends["ts"], strict=True))
        # Step 3
        lagging = {p: o for p, o in offsets.items() if o.metrics < o.telemetry}
        if lagging:
            self._repair_metrics(lagging)
        # Step 4
        self.refresh_state(buildings=None)
        logger.info(
            "assigned partitions %s, resuming after lake offsets %s (dedup index: %d events)",
            new,
            {p: o.telemetry for p, o in offsets.items()},
            len(self.index),
        )

    def position(self, partition: int) -> int:
        """The Kafka offset to read ``partition`` from: the one after the last stored."""
        stored = self.incarnations[partition].kafka(self.offsets[partition].telemetry)
        return max(0, stored + 1)

    def check_topic(self, partitions: Iterable[int], topic_id: str | None) -> list[int]:
        """Owned ``partitions`` whose topic ``topic_id`` (the id Kafka reports now) is not the
        incarnation being read; they are re-based (:meth:`rebase`), to be read from the
        beginning."""
        if topic_id is None:
            return []
        mark = sink.fingerprint(topic_id)
        changed = []
        for p in sorted(set(partitions) & set(self.incarnations)):
            current = self.incarnations[p]
            if current.topic_id is None:  # learnt now (nothing to compare with)
                self.incarnations[p] = dataclasses.replace(current, topic_id=topic_id)
            elif sink.fingerprint(current.topic_id) != mark:
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
        stored: lake offsets keep growing though Kafka's start again, so the commit
        protocol's checks (offsets at or below what a table holds are done) stay right.
        The new base is recorded with the partition's next commits."""
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

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget ``partitions`` (their new owner rebuilds from the lake)."""
        gone = set(partitions)
        if not gone:
            return
        for p in gone:
            self.offsets.pop(p, None)
            self.incarnations.pop(p, None)
            self.watermarks.pop(p, None)
        self.index.forget_partitions(gone)

    def _scan_telemetry(self) -> pl.LazyFrame | None:
        table = open_table(self.config, TELEMETRY)
        return None if table is None else pl.scan_delta(table)

    def _recent_telemetry(self, partitions: list[int]) -> pl.DataFrame:
        cutoff = self.clock.now() - dt.timedelta(seconds=self.config.dedup_window)
        scan = self._scan_telemetry()
        if scan is None:
            return pl.DataFrame()
        return (
            scan.filter(
                pl.col("source_partition").is_in(partitions)
                & (pl.col("ingested_at") >= pl.lit(cutoff, _UTC_US))
            )
            .select(
                "source_partition",
                "source_offset",
                "device_id",
                "seq",
                "ts",
                "received_at",
                "late",
                "ingested_at",
                window_start=self.windows.start(pl.col("ts")),
            )
            .collect()
        )

    def _repair_metrics(self, lagging: dict[int, Offsets]) -> None:
        scan = self._scan_telemetry()
        assert scan is not None
        bounds = pl.DataFrame(
            {
                "source_partition": pl.Series(list(lagging), dtype=pl.Int32),
                "_lo": [o.metrics for o in lagging.values()],
                "_hi": [o.telemetry for o in lagging.values()],
            }
        )
        rows = (
            scan.filter(pl.col("source_partition").is_in(list(lagging)))
            .join(bounds.lazy(), on="source_partition")
            .filter(
                (pl.col("source_offset") > pl.col("_lo"))
                & (pl.col("source_offset") <= pl.col("_hi"))
            )
            .drop("_lo", "_hi")
            .with_columns(window_start=self.windows.start(pl.col("ts")))
            .sort("source_partition", "source_offset")
            .collect()
        )
        before = self.index.upto({p: o.metrics for p, o in lagging.items()})
        rows = rows.with_columns(before.new_device_mask(rows))
        partials = minute_partials(rows.filter(~pl.col("late")))
        target = {p: o.telemetry for p, o in lagging.items()}
        logger.warning(
            "building_metrics_1m lagged telemetry on partitions %s: adding %d events back",
            sorted(lagging),
            len(rows),
        )
        sink.merge_metrics(
            self.config,
            self.group,
            partials,
            target,
            incarnations=self.incarnations,
            now=self.clock.now(),
        )
        for p, o in lagging.items():
            self.offsets[p] = dataclasses.replace(o, metrics=o.telemetry)

    # --- the commit protocol ---------------------------------------------------------------

    def process(self, batch: RecordBatch) -> BatchResult:
        """Store one polled batch exactly once (step 1, polling it, is the caller's). Its
        offsets are lake offsets (:class:`~ingest_service.processor.sink.Incarnation`).

        2. decode and validate, vectorized: accepted rows and rejected rows;
        3. move duplicates of ``(device_id, seq)`` — within the batch or in the
           dedup index — to the rejected rows; mark late events and each device's
           first event in each window;
        4. commit the rejected rows to ``telemetry_rejected``, then the accepted
           rows to ``telemetry``, each in one Delta commit carrying the batch's
           last offset per partition as app transactions (the telemetry commit
           is the point of no return: a restart resumes after it); when a reading
           was promoted to a column since the batch was decoded, the accepted rows'
           readings are split again for the table's columns and the commit redone;
        5. merge the on-time rows' building-minute sums and counts into
           ``building_metrics_1m`` (same app transactions), then recompute
           ``building_state`` for the buildings touched;
        6. remember what was stored (index, watermarks, offsets); the caller then
           commits the Kafka offsets, for lag monitoring only.

        A crash between the telemetry and metrics commits is repaired by
        :meth:`assign` from ``telemetry``; a crash before the telemetry commit
        replays the batch, skipping rejected rows already committed.
        """
        batch = self._not_yet_stored(batch)
        result = BatchResult(records=len(batch))
        if not len(batch):
            return result
        now = self.clock.now()
        mark = time.perf_counter()
        # Step 2
        accepted, rejected = decode(batch, now=now, limits=self.limits, promoted=self.readings)
        mark = result.timed("decode", mark)
        # Step 3
        accepted = accepted.sort("source_partition", "source_offset")
        duplicate = self.index.duplicate_mask(accepted)
        dups = accepted.filter(duplicate)
        accepted = accepted.filter(~duplicate)
        accepted, watermarks = mark_late(accepted, self.watermarks, self.windows)
        accepted = accepted.with_columns(self.index.new_device_mask(accepted))
        if len(dups):
            rejected = pl.concat([rejected, self._duplicates(dups, batch)], how="vertical_relaxed")
        ends = (
            pl.DataFrame({"p": batch.partitions, "o": batch.offsets})
            .group_by("p")
            .agg(pl.col("o").max())
        )
        last: dict[int, int] = dict(zip(ends["p"].to_list(), ends["o"].to_list(), strict=True))
        mark = result.timed("dedup", mark)
        # Step 4
        rejected = self._not_yet_rejected(rejected)
        if len(rejected):
            sink.write_rejected(
                self.config,
                self.group,
                rejected.with_columns(
                    source_topic=pl.lit(self.config.topic),
                    rejected_at=pl.lit(now, _UTC_US),
                    rejected_date=pl.lit(now.date(), pl.Date),
                ),
                last,
                incarnations=self.incarnations,
            )
        mark = result.timed("rejected", mark)
        stored = accepted.with_columns(
            ingested_at=pl.lit(now, _UTC_US), event_date=pl.col("ts").dt.date()
        )
        stored = self._store_telemetry(stored, batch, last, now=now)
        mark = result.timed("telemetry", mark)
        # Step 5
        on_time = stored.filter(~pl.col("late"))
        if len(on_time):
            partials = minute_partials(on_time)
            sink.merge_metrics(
                self.config, self.group, partials, last, incarnations=self.incarnations, now=now
            )
            mark = result.timed("metrics", mark)
            earliest = partials["window_start"].min()
            assert isinstance(earliest, dt.datetime)
            self.refresh_state(buildings=partials["building_id"].unique().to_list(), since=earliest)
            mark = result.timed("state", mark)
            result.buildings = partials["building_id"].n_unique()
        # Step 6
        self.index.add(stored)
        if now - self._pruned_at >= _PRUNE_EVERY:
            self.index.prune(now - dt.timedelta(seconds=self.config.dedup_window))
            self._pruned_at = now
        self.watermarks = watermarks
        for p, o in last.items():
            old = self.offsets.get(p, Offsets(-1, -1, -1))
            self.offsets[p] = Offsets(
                telemetry=o,
                rejected=max(o, old.rejected),
                metrics=o if len(on_time) else old.metrics,
            )
        result.last_offsets = last
        result.stored = len(stored)
        result.rejected = len(rejected)
        result.duplicates = len(dups)
        result.late = len(stored) - len(on_time)
        return result

    def _store_telemetry(
        self, stored: pl.DataFrame, batch: RecordBatch, last: dict[int, int], *, now: dt.datetime
    ) -> pl.DataFrame:
        """Step 4's telemetry commit, against the table's current reading columns.

        The columns are checked at every commit (the commit opens the newest table
        version anyway), so a promotion is picked up within one batch, by every
        processor of the group, without a restart. A schema change never loses or
        duplicates a row: the commit that met it wrote nothing, and is redone with the
        same rows and offsets.
        """
        for _ in range(_SCHEMA_RETRIES):
            try:
                sink.write_telemetry(
                    self.config,
                    self.group,
                    stored,
                    last,
                    incarnations=self.incarnations,
                    readings=self.readings,
                )
                return stored
            except sink.SchemaChanged as change:
                logger.warning(
                    "telemetry's promoted reading columns changed from %s to %s: "
                    "committing the batch again with them",
                    sorted(self.readings),
                    sorted(change.readings),
                )
                before, self.readings = self.readings, change.readings
                stored = self._split_readings_again(stored, batch, before, now=now)
        raise sink.SchemaChanged(self.readings)

    def _split_readings_again(
        self,
        stored: pl.DataFrame,
        batch: RecordBatch,
        before: dict[str, pa.DataType],
        *,
        now: dt.datetime,
    ) -> pl.DataFrame:
        """``stored`` with ``extra`` and the promoted columns decoded again from ``batch``
        for :attr:`readings`. Promoted readings never decide acceptance, so decoding again
        accepts the same records; they are matched by their source offsets."""
        keys = ["source_partition", "source_offset"]
        again, _ = decode(batch, now=now, limits=self.limits, promoted=self.readings)
        return stored.drop("extra", *before).join(
            again.select(*keys, "extra", *self.readings), on=keys, how="left"
        )

    def _not_yet_stored(self, batch: RecordBatch) -> RecordBatch:
        """``batch`` without records of partitions this processor does not own, without
        records at or below the offset ``telemetry`` holds for their partition, and
        without a second copy of one record: whatever delivers a record again or too
        late (a stale seek, a poll spanning a rebalance, a client or broker quirk), it is
        stored once, and only by the partition's owner."""
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

    @staticmethod
    def _duplicates(dups: pl.DataFrame, batch: RecordBatch) -> pl.DataFrame:
        """Duplicate rows in the rejected table's shape, with their raw payload."""
        where = pl.DataFrame(
            {
                "source_partition": pl.Series(batch.partitions, dtype=pl.Int32),
                "source_offset": pl.Series(batch.offsets, dtype=pl.Int64),
            }
        ).with_row_index("_row")
        dups = dups.join(where, on=["source_partition", "source_offset"], how="left")
        raw = [batch.values[i] or b"" for i in dups["_row"].to_list()]
        return dups.with_columns(raw=pl.Series(raw, dtype=pl.Binary)).select(
            reason=pl.lit("duplicate"),
            raw="raw",
            key="device_id",
            device_id="device_id",
            seq="seq",
            source_partition="source_partition",
            source_offset="source_offset",
        )

    def _not_yet_rejected(self, rejected: pl.DataFrame) -> pl.DataFrame:
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

    def refresh_state(
        self, *, buildings: list[str] | None, since: dt.datetime | None = None
    ) -> None:
        """Recompute ``building_state`` for ``buildings`` (None: every building active in
        the last day of metrics) from ``building_metrics_1m``; ``since`` is the earliest
        window that changed."""
        table = sink.latest_table(self.config, BUILDING_METRICS_1M)
        if table is None:
            return
        version = int(table.version())
        scan = pl.scan_delta(table)
        if buildings is not None:
            scan = scan.filter(pl.col("building_id").is_in(buildings))
        if since is None:
            latest = scan.select(pl.col("window_start").max()).collect().item()
            if latest is None:
                return
            since = latest - dt.timedelta(days=1)
        assert since is not None
        metrics = scan.filter(
            pl.col("window_start") >= pl.lit(since - self.windows.rolling_span, _UTC_US)
        ).collect()
        if not len(metrics):
            return
        state = rolling_state(
            metrics, self.windows, as_of=self.clock.now(), metrics_version=version
        )
        sink.upsert_state(self.config, state)
