"""Writing the processor's results to the lake, each commit carrying Kafka offsets.

Every write to ``telemetry``, ``telemetry_rejected`` and ``building_metrics_1m``
records, in the same Delta commit, the last offset of each Kafka partition it
covers as an app transaction ``<group>-<topic>-<partition>``. Reading those
back (:func:`committed_offsets`) tells the processor where each table stands.
``building_state`` is derived from ``building_metrics_1m`` and carries the
metrics version it was computed from instead.

The offsets are *lake offsets*: a record's Kafka offset plus its partition's
:class:`Incarnation` base, which is 0 until the topic is deleted and created again
(an in-memory broker restarted) and then moves past everything stored, so that lake
offsets never repeat although Kafka's start at 0 again. The same commits record the
base (``<app id>-base``) and a fingerprint of the topic's id (``<app id>-topic``), which
is how a re-created topic is recognised (:func:`recorded_incarnations`).

``telemetry``'s columns come from the table, not from this code: a reading promoted
from ``extra`` (``workbench lake promote``) is a column the processor learns of at its
next commit (:class:`SchemaChanged`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import threading
import uuid
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
    "Incarnation",
    "Offsets",
    "Recorded",
    "SchemaChanged",
    "app_id",
    "committed_offsets",
    "fingerprint",
    "merge_metrics",
    "reading_columns",
    "recorded_incarnations",
    "upsert_state",
    "write_rejected",
    "write_telemetry",
]

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


_LATEST: dict[str, Any] = {}
_LATEST_LOCK = threading.Lock()


def latest_table(config: Config, name: str) -> Any | None:
    """``name``'s ``DeltaTable`` at its newest version, or None when it does not exist.

    The processor commits about once a second: opening a table anew replays its log
    from the last checkpoint every time (≈ 30-50 ms once a table has a few hundred
    commits), while bringing a kept one up to date reads only the new commits (≈ 5 ms).
    One kept table per table URI and process, brought up to date by each caller.
    """
    uri = table_uri(config, name)
    with _LATEST_LOCK:
        table = _LATEST.get(uri)
        if table is None:
            table = open_table(config, name)
            if table is not None:
                _LATEST[uri] = table
        else:
            table.update_incremental()
        return table


def committed_offsets(config: Config, group: str, partitions: list[int]) -> dict[int, Offsets]:
    """Where each table stands for each partition."""
    versions: dict[str, dict[int, int]] = {}
    for name in _OFFSET_TABLES:
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


def recorded_incarnations(config: Config, group: str, partitions: list[int]) -> dict[int, Recorded]:
    """The incarnation each partition's commits last recorded, in whichever of the three
    tables recorded the newest (bases only grow; every commit records its partitions')."""

    def newness(recorded: Recorded) -> tuple[int, bool]:
        base = -1 if recorded.base is None else recorded.base
        return base, recorded.fingerprint is not None

    found: dict[int, Recorded] = dict.fromkeys(partitions, Recorded())
    for name in _OFFSET_TABLES:
        table = open_table(config, name)
        if table is None:
            continue
        for p in partitions:
            app = app_id(group, config.topic, p)
            base = table.transaction_version(f"{app}-base")
            if base is None:
                continue
            mark = table.transaction_version(f"{app}-topic")
            here = Recorded(int(base), None if mark is None else int(mark))
            if newness(here) > newness(found[p]):
                found[p] = here
    return found


def _version(table: Any, app: str) -> int:
    version = table.transaction_version(app)
    return -1 if version is None else int(version)


def _commit(
    group: str, topic: str, offsets: Mapping[int, int], incarnations: Mapping[int, Incarnation]
) -> Any:
    """Each partition's last lake offset, its incarnation's base and topic fingerprint."""
    from deltalake import CommitProperties, Transaction

    transactions = []
    for p, o in sorted(offsets.items()):
        app = app_id(group, topic, p)
        incarnation = incarnations.get(p, Incarnation())
        transactions.append(Transaction(app, int(o)))
        transactions.append(Transaction(f"{app}-base", incarnation.base))
        if incarnation.topic_id is not None:
            transactions.append(Transaction(f"{app}-topic", fingerprint(incarnation.topic_id)))
    return CommitProperties(app_transactions=transactions)


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
    incarnations: Mapping[int, Incarnation],
    readings: Mapping[str, pa.DataType],
) -> None:
    """Append ``rows`` to ``telemetry`` with ``offsets`` (and the partitions'
    ``incarnations``) as app transactions, in one commit.

    ``rows`` hold the promoted reading columns ``readings``; the commit is made against
    the table version those columns were read from. Raises :class:`SchemaChanged`
    (nothing written) when the table's columns differ — seen before writing, or because
    a promotion committed while this commit was being made (Delta refuses a commit
    whose read version's metadata has changed since).
    """
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError

    table = latest_table(config, TELEMETRY)
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
            commit_properties=_commit(group, config.topic, offsets, incarnations),
        )
    except CommitFailedError:
        fresh = open_table(config, TELEMETRY)
        assert fresh is not None
        current = telemetry_readings(fresh)
        if current != dict(readings):
            raise SchemaChanged(current) from None
        raise


def write_rejected(
    config: Config,
    group: str,
    rows: pl.DataFrame,
    offsets: Mapping[int, int],
    *,
    incarnations: Mapping[int, Incarnation],
) -> None:
    """Append ``rows`` to ``telemetry_rejected`` with ``offsets`` (and ``incarnations``),
    in one commit."""
    from deltalake import write_deltalake

    write_deltalake(
        table_uri(config, TELEMETRY_REJECTED),
        _arrow(rows, schemas.TELEMETRY_REJECTED),
        mode="append",
        partition_by=["rejected_date"],
        storage_options=storage_options(config),
        writer_properties=writer_properties(TELEMETRY_REJECTED),
        commit_properties=_commit(group, config.topic, offsets, incarnations),
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
    incarnations: Mapping[int, Incarnation],
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
        table = latest_table(config, BUILDING_METRICS_1M)
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
                commit_properties=_commit(group, config.topic, offsets, incarnations),
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
