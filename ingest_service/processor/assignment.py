"""What a processor rebuilds from the lake when it takes partitions over.

Nothing a processor keeps in memory survives it: on start and on every assignment
(:meth:`~ingest_service.processor.processor.Processor.assign`) the new owner of a
partition rebuilds it from the lake — after the
:class:`~ingest_service.processor.checkpoint.Checkpoint` has read where the partition
landed — so that a restart neither widens the duplicate window nor loses an
aggregate:

* the dedup index and the event-time watermarks, from the last
  ``WORKBENCH_DEDUP_WINDOW`` of ``telemetry`` (:func:`recent_telemetry`,
  :func:`watermarks`);
* the ``building_metrics_1m`` rows a crash between the ``telemetry`` and metrics
  commits left out, read back from ``telemetry`` (:func:`repair_metrics`).
"""

from __future__ import annotations

import datetime as dt
import logging

import polars as pl

from ingest_service.processor import sink
from ingest_service.processor.checkpoint import Checkpoint, Offsets
from ingest_service.processor.dedup import SeenIndex
from ingest_service.processor.windows import (
    Clock,
    TumblingWindows,
    minute_partials,
    watermark_time,
)
from workbench.config import Config
from workbench.lake.tables import TELEMETRY, open_table

__all__ = ["recent_telemetry", "repair_metrics", "watermarks"]

logger = logging.getLogger(__name__)

_UTC_US = pl.Datetime("us", "UTC")


def _scan_telemetry(config: Config) -> pl.LazyFrame | None:
    table = open_table(config, TELEMETRY)
    return None if table is None else pl.scan_delta(table)


def recent_telemetry(
    config: Config, partitions: list[int], *, since: dt.datetime, windows: TumblingWindows
) -> pl.DataFrame:
    """What the dedup index and the watermarks need of the ``telemetry`` rows of
    ``partitions`` ingested since ``since`` (an empty frame when there is no table)."""
    scan = _scan_telemetry(config)
    if scan is None:
        return pl.DataFrame()
    return (
        scan.filter(
            pl.col("source_partition").is_in(partitions)
            & (pl.col("ingested_at") >= pl.lit(since, _UTC_US))
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
            window_start=windows.start(pl.col("ts")),
        )
        .collect()
    )


def watermarks(recent: pl.DataFrame) -> dict[int, dt.datetime]:
    """Each partition's event-time watermark as ``recent`` rows left it."""
    ends = recent.group_by("source_partition").agg(watermark_time(recent.columns).max().alias("ts"))
    return dict(zip(ends["source_partition"], ends["ts"], strict=True))


def repair_metrics(
    config: Config,
    checkpoint: Checkpoint,
    lagging: dict[int, Offsets],
    *,
    index: SeenIndex,
    windows: TumblingWindows,
    clock: Clock,
) -> None:
    """Add to ``building_metrics_1m`` the on-time ``telemetry`` rows of the ``lagging``
    partitions it does not hold (those above its offset, up to ``telemetry``'s), with the
    same app transactions a batch's merge records."""
    scan = _scan_telemetry(config)
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
            (pl.col("source_offset") > pl.col("_lo")) & (pl.col("source_offset") <= pl.col("_hi"))
        )
        .drop("_lo", "_hi")
        .with_columns(window_start=windows.start(pl.col("ts")))
        .sort("source_partition", "source_offset")
        .collect()
    )
    before = index.upto({p: o.metrics for p, o in lagging.items()})
    rows = rows.with_columns(before.new_device_mask(rows))
    partials = minute_partials(rows.filter(~pl.col("late")))
    target = {p: o.telemetry for p, o in lagging.items()}
    logger.warning(
        "building_metrics_1m lagged telemetry on partitions %s: adding %d events back",
        sorted(lagging),
        len(rows),
    )
    sink.merge_metrics(config, partials, target, checkpoint=checkpoint, now=clock.now())
    checkpoint.metrics_repaired(lagging)
