"""The de-duplication index: which ``(device_id, seq)`` a partition has already stored.

A retry by a device, the gateway or a producer writes the same event again at
a new offset; the index recognises it. It holds, per Kafka partition, the
events stored in the last ``window`` of ingest time (``WORKBENCH_DEDUP_WINDOW``)
and is rebuilt from ``telemetry`` when the partition is assigned, so the
guarantee survives restarts and hand-overs: a copy arriving within that window
of the original is rejected as ``duplicate``. (Devices are keyed by id, so all
copies of an event land on the same partition.)

It also answers "was this device already counted in this window?", which makes
``building_metrics_1m.devices`` a distinct count.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

__all__ = ["SeenIndex"]

_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "source_partition": pl.Int32,
    "source_offset": pl.Int64,
    "device_id": pl.String,
    "seq": pl.Int64,
    "window_start": pl.Datetime("us", "UTC"),
    "late": pl.Boolean,
    "ingested_at": pl.Datetime("us", "UTC"),
}


class SeenIndex:
    """Recently stored events of the partitions this processor owns.

    >>> import datetime as dt
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> idx = SeenIndex()
    >>> rows = pl.DataFrame({"source_partition": [0, 0], "source_offset": [5, 6],
    ...     "device_id": ["d", "d"], "seq": [1, 1], "window_start": [t, t],
    ...     "late": [False, False], "ingested_at": [t, t]},
    ...     schema_overrides={"source_partition": pl.Int32})
    >>> idx.duplicate_mask(rows).to_list()
    [False, True]
    """

    def __init__(self) -> None:
        self._chunks: list[pl.DataFrame] = [pl.DataFrame(schema=_SCHEMA)]

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks)

    @property
    def _frame(self) -> pl.DataFrame:
        if len(self._chunks) > 1:
            self._chunks = [pl.concat(self._chunks, rechunk=True)]
        return self._chunks[0]

    def add(self, rows: pl.DataFrame) -> None:
        """Remember stored ``rows`` (columns of the index schema)."""
        if len(rows):
            self._chunks.append(rows.select(pl.col(n).cast(t) for n, t in _SCHEMA.items()))

    def upto(self, offsets: dict[int, int]) -> SeenIndex:
        """The part of the index stored at or before ``offsets`` (partition -> offset)."""
        limits = pl.DataFrame(
            {
                "source_partition": pl.Series(list(offsets), dtype=pl.Int32),
                "_upto": pl.Series(list(offsets.values()), dtype=pl.Int64),
            }
        )
        out = SeenIndex()
        out._chunks = [
            self._frame.join(limits, on="source_partition")
            .filter(pl.col("source_offset") <= pl.col("_upto"))
            .drop("_upto")
        ]
        return out

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop what this processor no longer owns."""
        self._chunks = [self._frame.filter(~pl.col("source_partition").is_in(list(partitions)))]

    def prune(self, before: dt.datetime) -> None:
        """Drop events ingested before ``before`` (the end of the guarantee window)."""
        self._chunks = [self._frame.filter(pl.col("ingested_at") >= before)]

    def duplicate_mask(self, rows: pl.DataFrame) -> pl.Series:
        """True for rows already stored, or repeating an earlier row of ``rows``."""
        seen = self._frame.select("device_id", "seq").with_columns(_seen=pl.lit(True))
        marked = rows.select("device_id", "seq").with_row_index("_i")
        if len(seen):
            marked = marked.join(seen, on=["device_id", "seq"], how="left")
        else:
            marked = marked.with_columns(_seen=pl.lit(None, pl.Boolean))
        marked = marked.sort("_i").with_columns(
            _repeat=pl.col("_i").rank("ordinal").over("device_id", "seq") > 1
        )
        return (marked["_seen"].fill_null(False) | marked["_repeat"]).alias("duplicate")

    def new_device_mask(self, rows: pl.DataFrame) -> pl.Series:
        """True on the first on-time row of each (device, window) not counted before."""
        counted = (
            self._frame.filter(~pl.col("late"))
            .select("device_id", "window_start")
            .unique()
            .with_columns(_counted=pl.lit(True))
        )
        marked = rows.select("device_id", "window_start", "late").with_row_index("_i")
        if len(counted):
            marked = marked.join(counted, on=["device_id", "window_start"], how="left")
        else:
            marked = marked.with_columns(_counted=pl.lit(None, pl.Boolean))
        marked = marked.sort("_i").with_columns(
            _first=pl.col("_i").rank("ordinal").over("device_id", "window_start", "late") == 1
        )
        return (~marked["late"] & ~marked["_counted"].fill_null(False) & marked["_first"]).alias(
            "new_device"
        )
