"""Schema evolution without downtime: promote a reading from ``telemetry.extra`` to a column.

Devices may send readings the workbench does not know yet (``co2``); the
processor keeps them in ``extra``, a JSON object per row. :func:`promote`
(``workbench lake promote co2 --type double``) makes one of them a typed,
nullable column while processors keep writing:

1. check the principal (admins only), the name (a lower-case identifier, not a
   reserved word, not a column yet) and the type;
2. add the column: one Delta commit that changes only the table's metadata and
   names the actor in its commit info (``DeltaTable.history()`` is the audit
   trail, as for the registry). Old data files are not touched: readers see
   null in the new column for the rows they hold;
3. processors learn of the column at their next commit (they read the table's
   columns at every commit); a commit that was being made against the old
   schema is refused by Delta and redone with the new columns — nothing is lost
   or stored twice. From then on, a value the column's type holds exactly goes
   to the column instead of ``extra``; any other value (text for a ``double``
   column, say) stays in ``extra``;
4. with ``backfill=True``, :func:`backfill` moves the reading out of ``extra``
   of the rows stored before, one ``event_date`` partition per commit, beside
   live ingestion.

The backfill is a MERGE per partition that updates only rows it read, keyed by
their source offsets, and bounded by ``ingested_at <= `` the newest of those
rows: Delta's conflict check then ignores files appended meanwhile (their rows
were all written with the new column), so live appends do not make it retry,
while a concurrent rewrite of the files it read (compaction) does. Re-running it
is harmless: moved values are no longer in ``extra``.

>>> check_reading_name("co2", existing=["device_id", "extra"])
>>> check_reading_name("select", existing=[])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
workbench.exceptions.InvalidInput: 'select' is a reserved word of HiveQL or DuckDB; ...
>>> coerce(412, "double"), coerce(412.0, "bigint"), coerce("412", "double")
(412.0, 412, None)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from workbench.config import Config
from workbench.exceptions import AccessDenied, AlreadyExists, InvalidInput, NotFound
from workbench.lake.tables import (
    TELEMETRY,
    ensure_tables,
    open_table,
    retry_on_conflict,
    table_schema,
    telemetry_readings,
    writer_properties,
)
from workbench.tenancy.principal import Principal

__all__ = [
    "PROMOTE_TYPES",
    "BackfillReport",
    "Promotion",
    "ReadingType",
    "backfill",
    "check_reading_name",
    "coerce",
    "promote",
]

logger = logging.getLogger(__name__)

ReadingType = Literal["double", "bigint", "boolean", "string"]

# Hive type name -> (Delta primitive type, Arrow type)
PROMOTE_TYPES: dict[str, tuple[str, pa.DataType]] = {
    "double": ("double", pa.float64()),
    "bigint": ("long", pa.int64()),
    "boolean": ("boolean", pa.bool_()),
    "string": ("string", pa.string()),
}

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# Hive's reserved keywords (Hive 3 language manual); DuckDB's are added at run time.
_HIVE_RESERVED = frozenset(
    """
    all alter and array as authorization between bigint binary boolean both by cache case
    cast char column commit conf constraint create cross cube current current_date
    current_timestamp cursor database date dayofweek decimal delete describe distinct
    double drop else end exchange exists extended external extract false fetch float floor
    following for foreign from full function grant group grouping having if import in inner
    insert int integer intersect interval into is join lateral left less like local macro
    map more none not null numeric of on only or order out outer over partialscan partition
    percent preceding precision preserve primary procedure range reads reduce references
    regexp revoke right rlike rollback rollup row rows select set smallint start sync table
    tablesample then time timestamp to transform trigger true truncate unbounded union
    uniquejoin update user using utc_tmestamp values varchar views when where window with
    """.split()  # noqa: SIM905 - a list literal would take one line per word
)

# Rows one backfill MERGE reads at most (unless one building has more).
_BACKFILL_MAX_ROWS = 2_000_000
_KEYS = ("device_id", "seq", "source_partition", "source_offset")


@dataclasses.dataclass(frozen=True)
class BackfillReport:
    """What :func:`backfill` did: partitions looked at, rows whose value moved to the
    column, rows whose value stays in ``extra`` (not of the column's type), commits."""

    reading: str
    partitions: int
    moved: int
    kept: int
    commits: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class Promotion:
    """What :func:`promote` did: the column, its type, the table version that added it
    (None when it existed already and only the backfill ran) and who did it."""

    reading: str
    type: str
    version: int | None
    actor: str
    backfill: BackfillReport | None = None

    def to_json(self) -> dict[str, Any]:
        """A plain dict (for ``--json``)."""
        return dataclasses.asdict(self)


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise AccessDenied(
            f"not authorized: {principal.user} ({principal.role}) may not change the lake's schema",
            hint="ask an admin to promote the reading",
        )


@functools.cache
def _reserved() -> frozenset[str]:
    import duckdb

    with duckdb.connect(":memory:") as con:
        rows = con.execute(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'"
        ).fetchall()
    return _HIVE_RESERVED | {str(r[0]).lower() for r in rows}


def check_reading_name(name: str, *, existing: Iterable[str]) -> None:
    """Raise unless ``name`` can become a column of ``telemetry`` (whose columns are
    ``existing``): :class:`InvalidInput` for a name that is not a lower-case identifier or
    is a reserved word, :class:`AlreadyExists` for a column that is there already."""
    if not _NAME.match(name):
        raise InvalidInput(
            f"invalid reading name {name!r}: a column name is a lower-case letter, then "
            "lower-case letters, digits or _ (at most 64)",
            hint="promote the name exactly as devices send it; devices must send it in "
            "lower case (HiveQL column names are case-insensitive)",
        )
    if name in _reserved():
        raise InvalidInput(
            f"{name!r} is a reserved word of HiveQL or DuckDB",
            hint="every query would have to quote such a column: have devices send the "
            "reading under another name",
        )
    taken = {c.lower() for c in existing}
    if name in taken:
        raise AlreadyExists(
            f"telemetry already has a column {name!r}",
            hint="DESCRIBE telemetry lists the columns; --backfill on a promoted reading "
            "moves the values older rows still hold in extra",
        )


def coerce(value: object, type_name: str) -> object:
    """``value`` (decoded from ``extra``) as a value of a ``type_name`` column, or None
    when that type does not hold it exactly — the processor's rule
    (``ingest_service.processor.decode._cast_promoted``) for one value."""
    if type_name == "double":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else None  # type: ignore[arg-type]
    if type_name == "bigint":
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value if -(2**63) <= value < 2**63 else None
        if isinstance(value, float) and value.is_integer() and abs(value) < 2.0**63:
            return int(value)
        return None
    if type_name == "boolean":
        return value if isinstance(value, bool) else None
    if type_name == "string":
        return value if isinstance(value, str) else None
    return None


def _type_name(arrow_type: pa.DataType) -> str | None:
    for name, (_, arrow) in PROMOTE_TYPES.items():
        if arrow == arrow_type:
            return name
    if pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return "string"
    return None


def promote(
    config: Config,
    reading: str,
    *,
    type: str = "double",
    principal: Principal,
    backfill: bool = False,
    on_partition: Callable[[str, int, int], None] | None = None,
) -> Promotion:
    """Add ``reading`` to ``telemetry`` as a nullable ``type`` column, while processors
    keep writing (see the module docstring for the steps).

    With ``backfill=True`` the values older rows hold in ``extra`` move to the column
    too; when the column exists already with that type, only the backfill runs (so an
    interrupted backfill is resumed by running the same command again).
    ``on_partition(day, moved, kept)`` reports the backfill's progress.
    """
    from deltalake import CommitProperties
    from deltalake.schema import Field, PrimitiveType

    # Step 1
    _require_admin(principal)
    if type not in PROMOTE_TYPES:
        raise InvalidInput(
            f"unknown column type {type!r}",
            hint=f"use one of {', '.join(PROMOTE_TYPES)}",
        )
    ensure_tables(config)
    actor = principal.user
    delta_type, _ = PROMOTE_TYPES[type]
    props = CommitProperties(
        custom_metadata={"actor": actor, "workbench.operation": f"promote {reading} {type}"}
    )

    def attempt() -> int | None:
        table = open_table(config, TELEMETRY)
        assert table is not None
        promoted = telemetry_readings(table)
        if backfill and reading in promoted:
            have = _type_name(promoted[reading])
            if have != type:
                raise AlreadyExists(
                    f"telemetry.{reading} exists already, of type {have or promoted[reading]}",
                    hint=f"backfill it with --type {have}" if have else "it cannot be backfilled",
                )
            return None
        check_reading_name(reading, existing=table_schema(table).names)
        # Step 2: a metadata-only commit; Delta rebases it over concurrent appends
        table.alter.add_columns(
            [Field(reading, PrimitiveType(delta_type), nullable=True)], commit_properties=props
        )
        fresh = open_table(config, TELEMETRY)
        assert fresh is not None
        return int(fresh.version())

    version = retry_on_conflict(attempt, what=f"promote {reading}")
    if version is not None:
        logger.info(
            "promoted %s to telemetry.%s (%s) at version %d", reading, reading, type, version
        )
    # Step 3 is the processors'; step 4
    report = (
        _backfill(config, reading, type, actor=actor, on_partition=on_partition)
        if backfill
        else None
    )
    return Promotion(reading, type, version, actor, report)


def backfill(
    config: Config,
    reading: str,
    *,
    principal: Principal,
    on_partition: Callable[[str, int, int], None] | None = None,
) -> BackfillReport:
    """Move ``reading``'s values from ``extra`` to its promoted column in the rows stored
    before the promotion, one ``event_date`` partition per commit, beside live ingestion."""
    _require_admin(principal)
    table = open_table(config, TELEMETRY)
    promoted = {} if table is None else telemetry_readings(table)
    type_name = _type_name(promoted[reading]) if reading in promoted else None
    if type_name is None:
        raise NotFound(
            f"telemetry has no promoted column {reading!r} of a type that can be backfilled",
            hint=f"run 'workbench lake promote {reading} --type TYPE' first",
        )
    return _backfill(config, reading, type_name, actor=principal.user, on_partition=on_partition)


def _backfill(
    config: Config,
    reading: str,
    type_name: str,
    *,
    actor: str,
    on_partition: Callable[[str, int, int], None] | None,
) -> BackfillReport:
    from deltalake import CommitProperties

    started = time.monotonic()
    table = open_table(config, TELEMETRY)
    assert table is not None
    days = _partition_days(table)
    props = CommitProperties(
        custom_metadata={"actor": actor, "workbench.operation": f"backfill {reading}"}
    )
    moved = kept = commits = 0
    for day in days:
        day_moved = day_kept = 0
        for low, high in _building_ranges(config, reading, day):
            done_moved, done_kept = retry_on_conflict(
                functools.partial(
                    _backfill_range, config, reading, type_name, day, (low, high), props
                ),
                what=f"backfill {reading} {day}",
            )
            day_moved += done_moved
            day_kept += done_kept
            commits += 1 if done_moved else 0
        moved += day_moved
        kept += day_kept
        if on_partition is not None:
            on_partition(day.isoformat(), day_moved, day_kept)
    report = BackfillReport(
        reading, len(days), moved, kept, commits, round(time.monotonic() - started, 2)
    )
    logger.info("backfilled telemetry.%s: %s", reading, report)
    return report


def _partition_days(table: Any) -> list[dt.date]:
    actions = pa.table(table.get_add_actions(flatten=True))
    days = set()
    for value in actions.column("partition.event_date").to_pylist():
        if value is not None:
            days.add(value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)))
    return sorted(days)


def _candidates(table: Any, reading: str, day: dt.date) -> pl.LazyFrame:
    """Rows of partition ``day`` whose ``extra`` may hold ``reading`` and whose column is
    empty."""
    return pl.scan_delta(table).filter(
        (pl.col("event_date") == day)
        & pl.col(reading).is_null()
        & pl.col("extra").str.contains(f'"{reading}":', literal=True)
    )


def _building_ranges(config: Config, reading: str, day: dt.date) -> list[tuple[str, str]]:
    """Contiguous ranges of building ids holding at most :data:`_BACKFILL_MAX_ROWS`
    candidate rows each (a building with more is a range of its own): the memory bound
    of one MERGE, and the order compaction clusters files in."""
    table = open_table(config, TELEMETRY)
    assert table is not None
    counts = (
        _candidates(table, reading, day)
        .group_by("building_id")
        .agg(n=pl.len())
        .sort("building_id")
        .collect()
    )
    ranges: list[tuple[str, str]] = []
    low: str | None = None
    high = ""
    total = 0
    for building, n in counts.iter_rows():
        if low is not None and total + n > _BACKFILL_MAX_ROWS:
            ranges.append((low, high))
            low, total = None, 0
        if low is None:
            low = building
        high, total = building, total + n
    if low is not None:
        ranges.append((low, high))
    return ranges


def _split_extra(extra: str, reading: str, type_name: str) -> tuple[object, str | None] | None:
    """(the column's value, ``extra`` without it) when ``extra`` holds a value of
    ``reading`` the column's type holds exactly; None otherwise."""
    try:
        obj = json.loads(extra)
    except ValueError:
        return None
    if not isinstance(obj, dict) or reading not in obj:
        return None
    value = coerce(obj.pop(reading), type_name)
    if value is None:
        return None
    return value, json.dumps(obj, separators=(",", ":")) if obj else None


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _backfill_range(
    config: Config,
    reading: str,
    type_name: str,
    day: dt.date,
    buildings: tuple[str, str],
    props: Any,
) -> tuple[int, int]:
    """Backfill the rows of one partition and range of buildings in one MERGE commit;
    return (rows moved, rows whose value stays in ``extra``)."""
    table = open_table(config, TELEMETRY)
    assert table is not None
    low, high = buildings
    rows = (
        _candidates(table, reading, day)
        .filter(pl.col("building_id").is_between(pl.lit(low), pl.lit(high)))
        .select(*_KEYS, "ingested_at", "extra")
        .collect()
    )
    if not len(rows):
        return 0, 0
    split = [_split_extra(e, reading, type_name) for e in rows["extra"]]
    moving = [s for s in split if s is not None]
    if not moving:
        return 0, len(rows)
    _, arrow_type = PROMOTE_TYPES[type_name]
    source = (
        rows.filter(pl.Series([s is not None for s in split]))
        .rename({"extra": "extra_before"})
        .with_columns(
            pl.Series("extra", [s[1] for s in moving], dtype=pl.String),
            pl.Series("_value", pa.array([s[0] for s in moving], arrow_type)).alias(reading),
        )
        .unique(subset=list(_KEYS), keep="first")  # a MERGE source row must match once
        .to_arrow()
    )
    newest = rows["ingested_at"].max()
    assert isinstance(newest, dt.datetime)
    column = f'"{reading}"'
    # The partition, the buildings and ingested_at bound what the MERGE reads, so Delta's
    # conflict check ignores files appended meanwhile (their ingested_at is newer).
    predicate = " AND ".join(
        [
            f"t.event_date = '{day.isoformat()}'",
            f"t.building_id >= {_sql_str(low)}",
            f"t.building_id <= {_sql_str(high)}",
            f"t.ingested_at <= '{newest.isoformat()}'",
            *(f"t.{k} = s.{k}" for k in _KEYS),
        ]
    )
    metrics: dict[str, Any] = (
        table.merge(
            source,
            predicate,
            source_alias="s",
            target_alias="t",
            writer_properties=writer_properties(TELEMETRY),
            commit_properties=props,
        )
        .when_matched_update(
            {reading: f"s.{column}", "extra": "s.extra"},
            predicate=f"t.{column} IS NULL AND t.extra = s.extra_before",
        )
        .execute()
    )
    moved = int(metrics.get("num_target_rows_updated", 0))
    logger.info("backfill %s %s %s..%s: %d rows moved from extra", reading, day, low, high, moved)
    return moved, len(rows) - len(moving)
