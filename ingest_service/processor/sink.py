"""Writing the processor's results to the lake, each commit carrying Kafka offsets.

Every write to ``telemetry``, ``telemetry_rejected`` and ``building_metrics_1m``
records, in the same Delta commit, the last offset of each Kafka partition it
covers as an app transaction ``<group>-<topic>-<partition>``. Reading those
back (:func:`committed_offsets`) tells the processor where each table stands.
``building_state`` is derived from ``building_metrics_1m`` and carries the
metrics version it was computed from instead.

``telemetry``'s columns come from the table, not from this code: a reading promoted
from ``extra`` (``workbench lake promote``) is a column the processor learns of at its
next commit (:class:`SchemaChanged`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import polars as pl
import pyarrow as pa

from workbench.config import Config
from workbench.exceptions import WorkbenchError
from workbench.lake import schemas
from workbench.lake.tables import (
    BUILDING_METRICS_1M,
    BUILDING_STATE,
    TELEMETRY,
    TELEMETRY_REJECTED,
    open_table,
    retry_on_conflict,
    storage_options,
    table_uri,
    telemetry_readings,
    writer_properties,
)

__all__ = [
    "Offsets",
    "SchemaChanged",
    "app_id",
    "committed_offsets",
    "merge_metrics",
    "reading_columns",
    "upsert_state",
    "write_rejected",
    "write_telemetry",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Offsets:
    """Last offset of one partition stored in each table (-1: nothing yet)."""

    telemetry: int
    rejected: int
    metrics: int


def app_id(group: str, topic: str, partition: int) -> str:
    """The app transaction id of one Kafka partition in one consumer group."""
    return f"{group}-{topic}-{partition}"


def committed_offsets(config: Config, group: str, partitions: list[int]) -> dict[int, Offsets]:
    """Where each table stands for each partition."""
    versions: dict[str, dict[int, int]] = {}
    for name in (TELEMETRY, TELEMETRY_REJECTED, BUILDING_METRICS_1M):
        table = open_table(config, name)
        versions[name] = {
            p: -1 if table is None else _version(table, app_id(group, config.topic, p))
            for p in partitions
        }
    return {
        p: Offsets(
            versions[TELEMETRY][p],
            versions[TELEMETRY_REJECTED][p],
            versions[BUILDING_METRICS_1M][p],
        )
        for p in partitions
    }


def _version(table: Any, app: str) -> int:
    version = table.transaction_version(app)
    return -1 if version is None else int(version)


def _commit(group: str, topic: str, offsets: Mapping[int, int]) -> Any:
    from deltalake import CommitProperties, Transaction

    return CommitProperties(
        app_transactions=[
            Transaction(app_id(group, topic, p), int(o)) for p, o in sorted(offsets.items())
        ]
    )


def _arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    return frame.select(schema.names).to_arrow().cast(schema)


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
    group: str,
    rows: pl.DataFrame,
    offsets: Mapping[int, int],
    *,
    readings: Mapping[str, pa.DataType],
) -> None:
    """Append ``rows`` to ``telemetry`` with ``offsets`` as app transactions, in one commit.

    ``rows`` hold the promoted reading columns ``readings``; the commit is made against
    the table version those columns were read from. Raises :class:`SchemaChanged`
    (nothing written) when the table's columns differ — seen before writing, or because
    a promotion committed while this commit was being made (Delta refuses a commit
    whose read version's metadata has changed since).
    """
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError

    table = open_table(config, TELEMETRY)
    assert table is not None
    current = telemetry_readings(table)
    if current != dict(readings):
        raise SchemaChanged(current)
    data = _arrow(rows.sort("building_id", "device_id", "ts"), schemas.telemetry_schema(readings))
    try:
        # the table object, not the URI: the commit's read version is the one checked above
        write_deltalake(
            table,
            data,
            mode="append",
            partition_by=["event_date"],
            writer_properties=writer_properties(TELEMETRY),
            commit_properties=_commit(group, config.topic, offsets),
        )
    except CommitFailedError:
        fresh = open_table(config, TELEMETRY)
        assert fresh is not None
        current = telemetry_readings(fresh)
        if current != dict(readings):
            raise SchemaChanged(current) from None
        raise


def write_rejected(
    config: Config, group: str, rows: pl.DataFrame, offsets: Mapping[int, int]
) -> None:
    """Append ``rows`` to ``telemetry_rejected`` with ``offsets``, in one commit."""
    from deltalake import write_deltalake

    write_deltalake(
        table_uri(config, TELEMETRY_REJECTED),
        _arrow(rows, schemas.TELEMETRY_REJECTED),
        mode="append",
        partition_by=["rejected_date"],
        storage_options=storage_options(config),
        writer_properties=writer_properties(TELEMETRY_REJECTED),
        commit_properties=_commit(group, config.topic, offsets),
    )


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
    group: str,
    partials: pl.DataFrame,
    offsets: Mapping[int, int],
    *,
    now: dt.datetime,
) -> int:
    """Add a batch's building-minute partials into ``building_metrics_1m``; return the
    table version that holds them. The offsets ride in the same commit, and a retry
    after a lost race first checks they are not already there.
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
        table = open_table(config, BUILDING_METRICS_1M)
        assert table is not None
        done = all(_version(table, app_id(group, config.topic, p)) >= o for p, o in offsets.items())
        if done:
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
                commit_properties=_commit(group, config.topic, offsets),
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
        table = open_table(config, BUILDING_STATE)
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
