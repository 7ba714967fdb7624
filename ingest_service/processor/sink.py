"""Writing the processor's results to the lake, each commit carrying its offsets.

Every write to ``telemetry``, ``telemetry_rejected`` and ``building_metrics_1m``
records, in the same Delta commit, the last offset of each Kafka partition it covers
(app transactions made by the processor's
:class:`~ingest_service.processor.checkpoint.Checkpoint`, which also reads them back:
step 3 of the protocol described there). ``building_state`` is derived from
``building_metrics_1m`` and carries the metrics version it was computed from instead.

``telemetry``'s columns come from the table, not from this code: a reading promoted
from ``extra`` (``workbench lake promote``) is a column the processor learns of at its
next commit (:class:`SchemaChanged`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import polars as pl
import pyarrow as pa

from ingest_service.processor.checkpoint import Checkpoint
from workbench.config import Config
from workbench.exceptions import WorkbenchError
from workbench.lake import schemas
from workbench.lake.tables import (
    BUILDING_METRICS_1M,
    BUILDING_STATE,
    TELEMETRY,
    TELEMETRY_REJECTED,
    latest_table,
    open_table,
    retry_on_conflict,
    telemetry_readings,
    writer_properties,
)

__all__ = [
    "SchemaChanged",
    "clustered",
    "merge_metrics",
    "reading_columns",
    "upsert_state",
    "write_rejected",
    "write_telemetry",
]


def _arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    return frame.select(schema.names).to_arrow().cast(schema)


def clustered(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` in ``telemetry``'s file order: by building, device and time (rows equal in
    all three keep their order).

    Sorting a batch by the two text columns is most of the sort's cost (about 180 ms of
    one core for 200,000 rows); the far fewer distinct building and device pairs are
    sorted instead, and the rows by their pair's rank and their time, two numbers
    (about 85 ms, the same order).

    >>> rows = pl.DataFrame({"building_id": ["b2", "b1", "b1", "b2"],
    ...                      "device_id": ["d9", "d5", "d1", "d9"], "ts": [2, 7, 3, 1]})
    >>> clustered(rows).rows()
    [('b1', 'd1', 3), ('b1', 'd5', 7), ('b2', 'd9', 1), ('b2', 'd9', 2)]
    """
    keys = ["building_id", "device_id"]
    pairs = (
        rows.select(keys)
        .unique()
        .sort(keys)
        .with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_rank"))
    )
    order = (
        rows.select(*keys, "ts")
        .join(pairs, on=keys, how="left", maintain_order="left", nulls_equal=True)
        .select(pl.arg_sort_by("_rank", "ts", maintain_order=True))
        .to_series()
    )
    return rows[order]


class SchemaChanged(WorkbenchError):
    """``telemetry``'s reading columns are not the ones a batch was decoded for (a reading
    was promoted meanwhile); nothing was written. ``readings`` are the table's now."""

    def __init__(self, readings: dict[str, pa.DataType]) -> None:
        super().__init__(
            f"telemetry's promoted reading columns are now {sorted(readings) or 'none'}",
            hint="decode the batch again for these columns and commit it again",
        )
        self.readings = readings


def reading_columns(config: Config) -> dict[str, pa.DataType]:
    """``telemetry``'s promoted reading columns and their types (none when it does not
    exist yet)."""
    table = open_table(config, TELEMETRY)
    return {} if table is None else telemetry_readings(table)


def write_telemetry(
    config: Config,
    rows: pl.DataFrame,
    offsets: Mapping[int, int],
    *,
    checkpoint: Checkpoint,
    readings: Mapping[str, pa.DataType],
) -> None:
    """Append ``rows`` to ``telemetry`` with ``offsets`` recorded by ``checkpoint``, in one
    commit.

    ``rows`` hold the promoted reading columns ``readings``; the commit is made against
    the table version those columns were read from. Raises :class:`SchemaChanged`
    (nothing written) when the table's columns differ — seen before writing, or because
    a promotion committed while this commit was being made (Delta refuses a commit
    whose read version's metadata has changed since).
    """
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError

    data = _arrow(clustered(rows), schemas.telemetry_schema(readings))

    def attempt() -> None:
        table = latest_table(config, TELEMETRY)
        assert table is not None
        current = telemetry_readings(table)
        if current != dict(readings):
            raise SchemaChanged(current)
        # an earlier attempt that committed after all: storing the rows again would
        # duplicate them
        if offsets and checkpoint.landed(table, offsets):
            return
        try:
            # the table object, not the URI: the commit's read version is the one checked
            write_deltalake(
                table,
                data,
                mode="append",
                partition_by=["event_date"],
                writer_properties=writer_properties(TELEMETRY),
                commit_properties=checkpoint.transactions(offsets, table=table),
            )
        except CommitFailedError:
            fresh = open_table(config, TELEMETRY)
            assert fresh is not None
            current = telemetry_readings(fresh)
            if current != dict(readings):
                raise SchemaChanged(current) from None
            # Otherwise lake maintenance rewrote a partition this append's snapshot
            # listed ("a concurrent transaction deleted data this operation read"): a
            # blind append depends on nothing it read, so it is made again on the newest
            # version (it used to end the member, seen after 75 min of `make demo`).
            raise

    retry_on_conflict(attempt, what="telemetry append")


def write_rejected(
    config: Config,
    rows: pl.DataFrame,
    offsets: Mapping[int, int],
    *,
    checkpoint: Checkpoint,
) -> None:
    """Append ``rows`` to ``telemetry_rejected`` with ``offsets`` recorded by
    ``checkpoint``, in one commit: the same commit protocol as :func:`write_telemetry`
    (a lost race is retried, unless the retried commit landed after all)."""
    from deltalake import write_deltalake

    data = _arrow(rows, schemas.TELEMETRY_REJECTED)

    def attempt() -> None:
        table = latest_table(config, TELEMETRY_REJECTED)
        assert table is not None
        if offsets and checkpoint.landed(table, offsets):
            return
        write_deltalake(
            table,
            data,
            mode="append",
            partition_by=["rejected_date"],
            writer_properties=writer_properties(TELEMETRY_REJECTED),
            commit_properties=checkpoint.transactions(offsets, table=table),
        )

    retry_on_conflict(attempt, what="telemetry_rejected append")


def _case_min(col: str) -> str:
    return (
        f"CASE WHEN s.{col} IS NULL THEN t.{col} "
        f"WHEN t.{col} IS NULL OR s.{col} < t.{col} THEN s.{col} ELSE t.{col} END"
    )


def _case_max(col: str) -> str:
    return (
        f"CASE WHEN s.{col} IS NULL THEN t.{col} "
        f"WHEN t.{col} IS NULL OR s.{col} > t.{col} THEN s.{col} ELSE t.{col} END"
    )


def _sum_avg(name: str) -> str:
    count = f"(t.{name}_count + s.{name}_count)"
    return f"CASE WHEN {count} > 0 THEN (t.{name}_sum + s.{name}_sum) / {count} ELSE NULL END"


_METRICS_UPDATE = {
    "readings": "t.readings + s.readings",
    "devices": "t.devices + s.devices",
    "temperature_sum": "t.temperature_sum + s.temperature_sum",
    "temperature_count": "t.temperature_count + s.temperature_count",
    "humidity_sum": "t.humidity_sum + s.humidity_sum",
    "humidity_count": "t.humidity_count + s.humidity_count",
    "light_sum": "t.light_sum + s.light_sum",
    "light_count": "t.light_count + s.light_count",
    "temperature_avg": _sum_avg("temperature"),
    "humidity_avg": _sum_avg("humidity"),
    "light_avg": _sum_avg("light"),
    "temperature_min": _case_min("temperature_min"),
    "temperature_max": _case_max("temperature_max"),
    "smoke_alarms": "t.smoke_alarms + s.smoke_alarms",
    "intrusion_alarms": "t.intrusion_alarms + s.intrusion_alarms",
    "last_event_ts": _case_max("last_event_ts"),
    "updated_at": "s.updated_at",
}


def merge_metrics(
    config: Config,
    partials: pl.DataFrame,
    offsets: Mapping[int, int],
    *,
    checkpoint: Checkpoint,
    now: dt.datetime,
) -> int:
    """Add a batch's building-minute partials into ``building_metrics_1m``; return the
    table version that holds them. The offsets ride in the same commit, and a retry
    after a lost race first checks they are not already there (step 4 of the protocol,
    :meth:`~ingest_service.processor.checkpoint.Checkpoint.landed`).
    """

    def avg(name: str) -> pl.Expr:
        count = pl.col(f"{name}_count")
        return pl.when(count > 0).then(pl.col(f"{name}_sum") / count).otherwise(None)

    source = _arrow(
        partials.with_columns(
            temperature_avg=avg("temperature"),
            humidity_avg=avg("humidity"),
            light_avg=avg("light"),
            temperature_sum=pl.col("temperature_sum").fill_null(0.0),
            humidity_sum=pl.col("humidity_sum").fill_null(0.0),
            light_sum=pl.col("light_sum").fill_null(0.0),
            updated_at=pl.lit(now, pl.Datetime("us", "UTC")),
        ),
        schemas.BUILDING_METRICS_1M,
    )
    earliest = partials["window_start"].min() if len(partials) else None

    def attempt() -> int:
        table = latest_table(config, BUILDING_METRICS_1M)
        assert table is not None
        if checkpoint.landed(table, offsets):
            return int(table.version())
        predicate = (
            "t.building_id = s.building_id AND t.tenant_id = s.tenant_id "
            "AND t.window_start = s.window_start"
        )
        if isinstance(earliest, dt.datetime):
            # lets the merge skip files of older windows
            predicate += f" AND t.window_start >= '{earliest.isoformat()}'"
        (
            table.merge(
                source,
                predicate,
                source_alias="s",
                target_alias="t",
                writer_properties=writer_properties(BUILDING_METRICS_1M),
                commit_properties=checkpoint.transactions(offsets, table=table),
            )
            .when_matched_update(_METRICS_UPDATE)
            .when_not_matched_insert_all()
            .execute()
        )
        return int(table.version())

    return retry_on_conflict(attempt, what="building_metrics_1m merge")


def upsert_state(config: Config, rows: pl.DataFrame) -> None:
    """Replace the buildings' rows of ``building_state`` unless a fresher row is there."""
    if not len(rows):
        return
    source = _arrow(rows, schemas.BUILDING_STATE)

    def attempt() -> None:
        table = latest_table(config, BUILDING_STATE)
        assert table is not None
        (
            table.merge(
                source,
                "t.building_id = s.building_id",
                source_alias="s",
                target_alias="t",
                writer_properties=writer_properties(BUILDING_STATE),
            )
            .when_matched_update_all(predicate="s.metrics_version >= t.metrics_version")
            .when_not_matched_insert_all()
            .execute()
        )

    retry_on_conflict(attempt, what="building_state merge")
