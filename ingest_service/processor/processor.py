"""The processor's batch pipeline: one batch of Kafka records in, lake commits out.

:meth:`Processor.process` turns a polled batch into the lake commits of the exactly-once
protocol (:mod:`~ingest_service.processor.checkpoint` owns the offsets those commits
carry); :meth:`Processor.assign` is where a processor takes over partitions (on start
and on every rebalance) and rebuilds its memory of them from the lake
(:mod:`~ingest_service.processor.assignment`). Kafka plumbing lives in
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

from ingest_service.processor import assignment, sink
from ingest_service.processor.alarms import AlarmStage
from ingest_service.processor.checkpoint import Checkpoint
from ingest_service.processor.decode import GATEWAY_REFUSAL, Limits, RecordBatch, decode
from ingest_service.processor.dedup import SeenIndex
from ingest_service.processor.windows import (
    Clock,
    SystemClock,
    TumblingWindows,
    mark_late,
    minute_partials,
    rolling_state,
)
from workbench.config import Config
from workbench.lake.tables import BUILDING_METRICS_1M, ensure_tables, latest_table

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
    rejected: int = 0  # what the processor itself refused (duplicates among them)
    refused_at_gateway: int = 0  # the gateway's notes of requests it refused
    duplicates: int = 0
    late: int = 0
    buildings: int = 0
    alarms: int = 0
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
        self.checkpoint = Checkpoint(config, self.group)  # the owned partitions' lake offsets
        self.watermarks: dict[int, dt.datetime] = {}
        self._pruned_at = self.clock.now()
        ensure_tables(config)
        # telemetry's promoted reading columns, learned from the table (see _store_telemetry)
        self.readings: dict[str, pa.DataType] = sink.reading_columns(config)
        self.alarms = AlarmStage(config, self.checkpoint)  # the tenants' alarm rules

    # --- taking over partitions ----------------------------------------------------------

    def assign(self, partitions: Iterable[int], *, topic_id: str | None = None) -> None:
        """Take over ``partitions`` (those not owned already); afterwards reading resumes
        after the last lake offset ``telemetry`` holds
        (:meth:`Checkpoint.position <ingest_service.processor.checkpoint.Checkpoint.position>`).
        ``topic_id`` is the topic's id now (None: unknown).

        1. read where each partition landed in the lake, and from which incarnation of
           the topic (:meth:`Checkpoint.take_over
           <ingest_service.processor.checkpoint.Checkpoint.take_over>`);
        2. rebuild the dedup index and event-time watermarks from recent ``telemetry``;
        3. if ``building_metrics_1m`` lags ``telemetry`` (a crash between the two
           commits), add the missing rows, read back from ``telemetry``;
        4. recompute ``building_state`` from the metrics (a crash may have skipped it);
        5. rebuild the alarm conditions from recent ``telemetry`` and record what a crash
           left unrecorded (:mod:`~ingest_service.processor.alarms`).
        """
        # Step 1
        offsets = self.checkpoint.take_over(partitions, topic_id=topic_id)
        if not offsets:
            return
        new = list(offsets)
        # Step 2
        recent = assignment.recent_telemetry(
            self.config,
            new,
            since=self.clock.now() - dt.timedelta(seconds=self.config.dedup_window),
            windows=self.windows,
        )
        if len(recent):
            self.index.add(recent)
            self.watermarks.update(assignment.watermarks(recent))
        # Step 3
        lagging = self.checkpoint.lagging_metrics(offsets)
        if lagging:
            assignment.repair_metrics(
                self.config,
                self.checkpoint,
                lagging,
                index=self.index,
                windows=self.windows,
                clock=self.clock,
            )
        # Step 4
        self.refresh_state(buildings=None)
        # Step 5
        self.alarms.take_over(new, self.watermarks, now=self.clock.now())
        logger.info(
            "assigned partitions %s, resuming after lake offsets %s (dedup index: %d events)",
            new,
            {p: o.telemetry for p, o in offsets.items()},
            len(self.index),
        )

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget ``partitions`` (their new owner rebuilds from the lake)."""
        gone = set(partitions)
        if not gone:
            return
        self.checkpoint.forget(gone)
        self.alarms.forget(gone)
        for p in gone:
            self.watermarks.pop(p, None)
        self.index.forget_partitions(gone)

    # --- a batch in, lake commits out -------------------------------------------------------

    def process(self, batch: RecordBatch) -> BatchResult:
        """Store one polled batch exactly once (step 1, polling it, is the caller's). Its
        offsets are lake offsets (:class:`~ingest_service.processor.checkpoint.Incarnation`);
        the offsets the commits carry come from, and go back to, :attr:`checkpoint`.

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
        5. evaluate the tenants' alarm rules on the on-time rows, and their buildings'
           rejected-event rates on the committed refusals, and record what they raise
           and end in ``alarms`` (same app transactions;
           :mod:`~ingest_service.processor.alarms`) — before the aggregates, so an
           emergency does not wait for the dashboards' minute rows;
        6. merge the on-time rows' building-minute sums and counts into
           ``building_metrics_1m`` (same app transactions), then recompute
           ``building_state`` for the buildings touched;
        7. remember what was stored (index, watermarks, offsets); the caller then
           commits the Kafka offsets, for lag monitoring only.

        A crash between the telemetry and metrics commits is repaired by
        :meth:`assign` from ``telemetry``; a crash before the telemetry commit
        replays the batch, skipping rejected rows already committed.
        """
        batch = self.checkpoint.not_yet_stored(batch)
        result = BatchResult(records=len(batch))
        if not len(batch):
            return result
        now = self.clock.now()
        mark = time.perf_counter()
        # Step 2
        accepted, rejected = decode(batch, now=now, limits=self.limits, promoted=self.readings)
        mark = result.timed("decode", mark)
        # Step 3
        accepted = _in_offset_order(accepted)
        duplicate = self.index.duplicate_mask(accepted)
        dups = accepted.filter(duplicate)
        accepted = accepted.filter(~duplicate)
        accepted, watermarks = mark_late(accepted, self.watermarks, self.windows)
        accepted = accepted.with_columns(self.index.new_device_mask(accepted))
        if len(dups):
            rejected = pl.concat([rejected, self._duplicates(dups, batch)], how="vertical_relaxed")
        last = self.checkpoint.last_offsets(batch)
        mark = result.timed("dedup", mark)
        # Step 4
        rejected = self.checkpoint.not_yet_rejected(rejected)
        if len(rejected):
            sink.write_rejected(
                self.config,
                rejected.with_columns(
                    source_topic=pl.lit(self.config.topic),
                    rejected_at=pl.lit(now, _UTC_US),
                    rejected_date=pl.lit(now.date(), pl.Date),
                ),
                last,
                checkpoint=self.checkpoint,
            )
        mark = result.timed("rejected", mark)
        stored = accepted.with_columns(
            ingested_at=pl.lit(now, _UTC_US), event_date=pl.col("ts").dt.date()
        )
        stored = self._store_telemetry(stored, batch, last, now=now)
        mark = result.timed("telemetry", mark)
        # Step 5: before the aggregates, so that an alarm never waits for them
        on_time = stored.filter(~pl.col("late"))
        if len(on_time) or len(rejected):
            result.alarms = self.alarms.process(on_time, last, now=now, refusals=rejected)
            mark = result.timed("alarms", mark)
        # Step 6
        if len(on_time):
            partials = minute_partials(on_time)
            sink.merge_metrics(self.config, partials, last, checkpoint=self.checkpoint, now=now)
            mark = result.timed("metrics", mark)
            earliest = partials["window_start"].min()
            assert isinstance(earliest, dt.datetime)
            self.refresh_state(buildings=partials["building_id"].unique().to_list(), since=earliest)
            mark = result.timed("state", mark)
            result.buildings = partials["building_id"].n_unique()
        # Step 7
        self.index.add(stored)
        if now - self._pruned_at >= _PRUNE_EVERY:
            self.index.prune(now - dt.timedelta(seconds=self.config.dedup_window))
            self._pruned_at = now
        self.watermarks = watermarks
        self.checkpoint.stored(last, metrics=bool(len(on_time)))
        result.last_offsets = last
        result.stored = len(stored)
        noted = rejected["reason"].str.starts_with(GATEWAY_REFUSAL).sum() if len(rejected) else 0
        result.rejected = len(rejected) - int(noted)
        result.refused_at_gateway = int(noted)
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
                    self.config, stored, last, checkpoint=self.checkpoint, readings=self.readings
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
            # a retry is not a bad event: duplicates count against no building
            tenant_id=pl.lit(None, pl.String),
            building_id=pl.lit(None, pl.String),
            received_at=pl.lit(None, _UTC_US),
        )

    def refresh_state(
        self, *, buildings: list[str] | None, since: dt.datetime | None = None
    ) -> None:
        """Recompute ``building_state`` for ``buildings`` (None: every building active in
        the last day of metrics) from ``building_metrics_1m``; ``since`` is the earliest
        window that changed."""
        table = latest_table(self.config, BUILDING_METRICS_1M)
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


def _in_offset_order(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` sorted by partition, then offset.

    A batch holds each partition's records in offset order already, so a stable sort
    by partition alone gives that order (in a third of the time of sorting by both);
    checked, and sorted by both when a batch breaks the rule.

    >>> rows = pl.DataFrame({"source_partition": [1, 0, 1, 0], "source_offset": [5, 7, 6, 8]})
    >>> _in_offset_order(rows)["source_offset"].to_list()
    [7, 8, 5, 6]
    >>> _in_offset_order(rows.reverse())["source_offset"].to_list()
    [7, 8, 5, 6]
    """
    by_partition = rows.sort("source_partition", maintain_order=True)
    ordered = by_partition.select(
        ((pl.col("source_offset").diff() > 0) | (pl.col("source_partition").diff() != 0))
        .slice(1)
        .all()
    ).item()
    return by_partition if ordered else rows.sort("source_partition", "source_offset")
