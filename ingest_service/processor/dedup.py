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


_DEVICES: dict[str, pl.DataType | type[pl.DataType]] = {
    "device_id": pl.String,
    "max_seq": pl.Int64,
    "max_window": pl.Datetime("us", "UTC"),
}


def _device_bounds(rows: pl.DataFrame) -> pl.DataFrame:
    """Per device: the largest seq and the latest on-time window among ``rows``."""
    return rows.group_by("device_id").agg(
        max_seq=pl.col("seq").max(),
        max_window=pl.col("window_start").filter(~pl.col("late")).max(),
    )


class SeenIndex:
    """Recently stored events of the partitions this processor owns.

    Next to the events it keeps, per device, the largest ``seq`` and the latest
    on-time window stored (never lower than what the events hold). Devices count
    up and report in order, so almost every new event is above both: it can be
    neither a duplicate nor a device already counted in its window, and only the
    few others are looked up among the stored events.

    >>> import datetime as dt
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> idx = SeenIndex()
    >>> rows = pl.DataFrame({"source_partition": [0, 0], "source_offset": [5, 6],
    ...     "device_id": ["d", "d"], "seq": [1, 1], "window_start": [t, t],
    ...     "late": [False, False], "ingested_at": [t, t]},
    ...     schema_overrides={"source_partition": pl.Int32})
    >>> idx.duplicate_mask(rows).to_list()
    [False, True]
    >>> idx.add(rows[:1]); idx.duplicate_mask(rows.with_columns(seq=pl.Series([1, 2]))).to_list()
    [True, False]
    """

    def __init__(self) -> None:
        self._chunks: list[pl.DataFrame] = [pl.DataFrame(schema=_SCHEMA)]
        self._devices = pl.DataFrame(schema=_DEVICES)

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks)

    @property
    def _frame(self) -> pl.DataFrame:
        if len(self._chunks) > 1:
            self._chunks = [pl.concat(self._chunks, rechunk=True)]
        return self._chunks[0]

    def _rebuild_devices(self) -> None:
        self._devices = _device_bounds(self._frame).select(
            pl.col(n).cast(t) for n, t in _DEVICES.items()
        )

    def add(self, rows: pl.DataFrame) -> None:
        """Remember stored ``rows`` (columns of the index schema)."""
        if not len(rows):
            return
        chunk = rows.select(pl.col(n).cast(t) for n, t in _SCHEMA.items())
        self._chunks.append(chunk)
        merged = pl.concat(
            [self._devices, _device_bounds(chunk).select(self._devices.columns)],
            how="vertical_relaxed",
        )
        self._devices = merged.group_by("device_id").agg(
            pl.col("max_seq").max(), pl.col("max_window").max()
        )

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
        out._rebuild_devices()
        return out

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop what this processor no longer owns."""
        self._chunks = [self._frame.filter(~pl.col("source_partition").is_in(list(partitions)))]
        self._rebuild_devices()

    def prune(self, before: dt.datetime) -> None:
        """Drop events ingested before ``before`` (the end of the guarantee window)."""
        self._chunks = [self._frame.filter(pl.col("ingested_at") >= before)]
        self._rebuild_devices()

    def _with_bounds(self, rows: pl.DataFrame, *columns: str) -> pl.DataFrame:
        return (
            rows.select(*columns)
            .with_row_index("_i")
            .join(self._devices, on="device_id", how="left", maintain_order="left")
        )

    def duplicate_mask(self, rows: pl.DataFrame) -> pl.Series:
        """True for rows already stored, or repeating an earlier row of ``rows``."""
        marked = self._with_bounds(rows, "device_id", "seq")
        repeat = ~marked.select(pl.struct("device_id", "seq").is_first_distinct()).to_series()
        # only a seq at or below the device's largest stored one can have been stored
        suspects = marked.filter(pl.col("seq") <= pl.col("max_seq"))
        seen = pl.repeat(False, len(rows), dtype=pl.Boolean, eager=True)
        if len(suspects):
            stored = self._frame.select("device_id", "seq")
            hits = suspects.join(stored, on=["device_id", "seq"], how="semi")["_i"]
            seen = seen.scatter(hits, True)
        return (seen | repeat).alias("duplicate")

    def new_device_mask(self, rows: pl.DataFrame) -> pl.Series:
        """True on the first on-time row of each (device, window) not counted before."""
        marked = self._with_bounds(rows, "device_id", "window_start", "late")
        first = marked.select(
            pl.struct("device_id", "window_start", "late").is_first_distinct()
        ).to_series()
        # only a window at or before the device's latest counted one can have been counted
        suspects = marked.filter(~pl.col("late") & (pl.col("window_start") <= pl.col("max_window")))
        counted = pl.repeat(False, len(rows), dtype=pl.Boolean, eager=True)
        if len(suspects):
            done = self._frame.filter(~pl.col("late")).select("device_id", "window_start")
            hits = suspects.join(done, on=["device_id", "window_start"], how="semi")["_i"]
            counted = counted.scatter(hits, True)
        return (~marked["late"] & ~counted & first).alias("new_device")
