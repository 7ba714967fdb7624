"""Reading the lake: polars frames of telemetry, one-minute metrics and building state.

Filters are pushed down: ``start``/``end`` prune ``event_date`` partitions and
skip files by their ``ts`` statistics, ``building_id``/``device_id`` skip files
by theirs (compaction clusters telemetry by building and time), so "one
building, last three hours" reads a handful of files.

Every function takes the ``principal`` it reads for and returns only rows in
that principal's scope (docs/architecture.md, "Tenancy"): the scope predicate is
part of the scan, so another tenant's rows are never even read, whatever the
other filters say.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from workbench.config import Config
from workbench.lake import schemas
from workbench.lake.tables import (
    BUILDING_METRICS_1M,
    BUILDING_STATE,
    TELEMETRY,
    open_table,
)
from workbench.tenancy.principal import Principal

__all__ = ["building_metrics", "building_state", "freshness", "telemetry"]

_UTC_US = pl.Datetime("us", "UTC")


def _utc(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} is a naive datetime: pass a timezone-aware one")
    return value.astimezone(dt.UTC)


def _scan(config: Config, name: str) -> pl.LazyFrame | None:
    table = open_table(config, name)
    return None if table is None else pl.scan_delta(table)


def _empty(schema: object, columns: Sequence[str] | None = None) -> pl.DataFrame:
    frame = pl.DataFrame(schema=pl.Schema(pl.from_arrow(schema.empty_table()).schema))  # type: ignore[attr-defined,union-attr]
    return frame.select(columns) if columns else frame


def telemetry(
    config: Config,
    *,
    building_id: str | None = None,
    device_id: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    columns: Sequence[str] | None = None,
    principal: Principal,
) -> pl.DataFrame:
    """Stored events in ``principal``'s scope with ``start <= ts < end``, oldest first.

    >>> from workbench.config import Config
    >>> cfg = Config.from_env({"WORKBENCH_LAKE": "/nonexistent"})
    >>> telemetry(cfg, principal=Principal.system()).height
    0
    """
    scan = _scan(config, TELEMETRY)
    if scan is None:
        return _empty(schemas.TELEMETRY, columns)
    predicate = principal.scope_filter()
    if start is not None:
        start = _utc(start, "start")
        predicate &= (pl.col("event_date") >= start.date()) & (
            pl.col("ts") >= pl.lit(start, _UTC_US)
        )
    if end is not None:
        end = _utc(end, "end")
        predicate &= (pl.col("event_date") <= end.date()) & (pl.col("ts") < pl.lit(end, _UTC_US))
    if building_id is not None:
        predicate &= pl.col("building_id") == building_id
    if device_id is not None:
        predicate &= pl.col("device_id") == device_id
    scan = scan.filter(predicate)
    if columns:
        scan = scan.select(columns)
    sort = ["ts", "device_id"] if not columns else [c for c in ("ts", "device_id") if c in columns]
    return scan.sort(sort).collect() if sort else scan.collect()


def building_state(
    config: Config, *, building_id: str | None = None, principal: Principal
) -> pl.DataFrame:
    """The rolling five-minute view: one row per building in scope (or the one asked for)."""
    scan = _scan(config, BUILDING_STATE)
    if scan is None:
        return _empty(schemas.BUILDING_STATE)
    scan = scan.filter(principal.scope_filter())
    if building_id is not None:
        scan = scan.filter(pl.col("building_id") == building_id)
    return scan.sort("building_id").collect()


def freshness(
    config: Config, *, principal: Principal, now: dt.datetime | None = None
) -> float | None:
    """Seconds from the newest event reflected in ``building_state`` (in ``principal``'s
    scope) to ``now``; None while no building has a row.

    What ``workbench status`` and the gateway's ``workbench_freshness_seconds`` report:
    how far the rolling view trails the devices (commit interval plus consumer lag,
    or the time since the last event when the fleet is quiet).

    >>> from workbench.config import Config
    >>> cfg = Config.from_env({"WORKBENCH_LAKE": "/nonexistent"})
    >>> freshness(cfg, principal=Principal.system()) is None
    True
    """
    scan = _scan(config, BUILDING_STATE)
    if scan is None:
        return None
    newest = (
        scan.filter(principal.scope_filter()).select(pl.col("last_event_ts").max()).collect().item()
    )
    if not isinstance(newest, dt.datetime):
        return None
    now = dt.datetime.now(dt.UTC) if now is None else _utc(now, "now")
    return (now - newest).total_seconds()


def building_metrics(
    config: Config,
    *,
    building_id: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    principal: Principal,
) -> pl.DataFrame:
    """One building's one-minute windows with ``start <= window_start < end``, oldest first
    (empty when the building is not in ``principal``'s scope)."""
    scan = _scan(config, BUILDING_METRICS_1M)
    if scan is None:
        return _empty(schemas.BUILDING_METRICS_1M)
    scan = scan.filter(principal.scope_filter() & (pl.col("building_id") == building_id))
    if start is not None:
        scan = scan.filter(pl.col("window_start") >= pl.lit(_utc(start, "start"), _UTC_US))
    if end is not None:
        scan = scan.filter(pl.col("window_start") < pl.lit(_utc(end, "end"), _UTC_US))
    return scan.sort("window_start").collect()
