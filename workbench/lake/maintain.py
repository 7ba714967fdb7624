"""Lake maintenance: compaction, checkpoints, vacuum — beside live ingestion.

:func:`maintain` (``workbench lake maintain``; the processor also runs it every
``WORKBENCH_MAINTAIN_INTERVAL``) does, per table:

1. compaction: the recent ``event_date`` partitions of ``telemetry`` that hold
   several small files are rewritten sorted by ``building_id, device_id, ts`` (one
   building's data sits together; each device's readings compress well) — or
   Z-ordered by ``building_id, ts`` when too large to sort in memory — once devices
   no longer send into them; until then (today's) they are bin-packed, as the small
   tables are;
   the registry's tables (``registry/tenants``, ``buildings``, ``devices``), which
   gain a small file with every device provisioned on its own, are rewritten sorted
   by their key once they hold more than twice the files their size needs;
2. a checkpoint, so readers replay a short log;
3. vacuum: files replaced longer ago than ``WORKBENCH_LAKE_RETENTION_HOURS``
   are deleted (readers of older versions than that lose time travel only).

Each run, whoever ran it, leaves its outcome in ``run/lake-maintenance.json`` under
``WORKBENCH_HOME`` (:func:`last_maintenance`), which ``workbench status`` shows on the
processor's line (:func:`maintenance_summary`).

Compaction only rewrites data, so it commits beside appending processors
(Delta's optimistic concurrency); when a concurrent commit does conflict (a
metrics merge rewriting the same file) the step is retried on the new
version, and never blocks a writer.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from workbench.config import Config
from workbench.filemodes import write_json
from workbench.lake.schemas import telemetry_schema
from workbench.lake.tables import (
    TABLES,
    TELEMETRY,
    open_table,
    retry_on_conflict,
    telemetry_readings,
    writer_properties,
)

__all__ = ["REGISTRY_KEYS", "last_maintenance", "maintain", "maintenance_summary"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SMALL_FILE = 32 * 1024 * 1024


def _small_files_by_date(table: Any, since: dt.date) -> dict[str, int]:
    actions = table.get_add_actions(flatten=True)
    dates = actions.column("partition.event_date").to_pylist()
    sizes = actions.column("size_bytes").to_pylist()
    out: dict[str, int] = {}
    for date, size in zip(dates, sizes, strict=True):
        if date is None or size >= _SMALL_FILE:
            continue
        day = date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date))
        if day >= since:
            out[day.isoformat()] = out.get(day.isoformat(), 0) + 1
    return out


_SORTED_REWRITE_MAX_ROWS = 20_000_000


def _rewrite_sorted(
    config: Config, day: str, *, before_write: Callable[[], None] | None = None
) -> tuple[int, int]:
    """Rewrite one ``event_date`` partition of telemetry sorted by building, device, time.

    The sort clusters a building's rows (file and row-group statistics skip the
    rest) and puts each device's readings next to each other, where dictionary,
    run-length and delta encodings shrink them. Files appended meanwhile are not
    touched (the overwrite removes only the files it read); a conflicting commit
    makes the caller retry. Partitions too large to sort in memory are Z-ordered.
    """
    import polars as pl
    import pyarrow as pa
    from deltalake import write_deltalake

    table = open_table(config, TELEMETRY)
    assert table is not None
    actions = pa.table(table.get_add_actions(flatten=True))
    files = [a for a in actions.to_pylist() if str(a["partition.event_date"]) == day]
    rows = sum(int(a.get("num_records") or 0) for a in files)
    if rows > _SORTED_REWRITE_MAX_ROWS:
        result: dict[str, Any] = table.optimize.z_order(
            TABLES[TELEMETRY].cluster_by,
            partition_filters=[("event_date", "=", day)],
            writer_properties=writer_properties(TELEMETRY),
        )
        return int(result.get("numFilesRemoved", 0)), int(result.get("numFilesAdded", 0))
    data = (
        pl.scan_delta(table)
        .filter(pl.col("event_date") == dt.date.fromisoformat(day))
        .sort("building_id", "device_id", "ts")
        .collect()
    )
    if before_write is not None:  # tests: a processor appends between our read and write
        before_write()
    # The overwrite must start from the snapshot we read (`table`, not the URI, which
    # would load the newest version): its removes are then exactly the files we read,
    # and rows a processor appended meanwhile survive. One record batch: the writer
    # may reorder several. The snapshot's own columns: promoted readings included.
    schema = telemetry_schema(telemetry_readings(table))
    write_deltalake(
        table,
        data.to_arrow().select(schema.names).cast(schema).combine_chunks(),
        mode="overwrite",
        predicate=f"event_date = '{day}'",
        partition_by=TABLES[TELEMETRY].partition_by,
        writer_properties=writer_properties(TELEMETRY),
    )
    return len(files), 1


def _bin_pack(config: Config, day: str) -> tuple[int, int]:
    """Bin-pack the small files of one ``event_date`` partition of telemetry (the data is
    unchanged, so appends committed meanwhile do not conflict with it)."""
    table = open_table(config, TELEMETRY)
    assert table is not None
    result: dict[str, Any] = table.optimize.compact(
        partition_filters=[("event_date", "=", day)],
        writer_properties=writer_properties(TELEMETRY),
    )
    return int(result.get("numFilesRemoved", 0)), int(result.get("numFilesAdded", 0))


_RECORD = "lake-maintenance.json"


def maintain(
    config: Config, *, days: int = 2, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Compact, checkpoint and vacuum every lake table; return one report row per table.
    The outcome, a failure included, is recorded for :func:`last_maintenance`."""
    started = time.time()
    try:
        report = _maintain(config, days=days, now=now or dt.datetime.now(dt.UTC))
    except Exception as exc:
        _record(config, started, [], error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        raise
    _record(config, started, report, error=None)
    return report


def _record(
    config: Config, started: float, report: list[dict[str, Any]], *, error: str | None
) -> None:
    record = {
        "started_at": started,
        "at": time.time(),
        "outcome": "failed" if error else "ok",
        "error": error,
        "tables": len(report),
        **{
            key: sum(int(row.get(key, 0)) for row in report)
            for key in ("files_removed", "files_added", "files_vacuumed")
        },
    }
    path = config.run_dir / _RECORD
    try:
        write_json(path, record)
    except OSError as exc:  # the record is for status; maintenance itself is done
        logger.warning("could not record the lake maintenance outcome at %s: %s", path, exc)


def last_maintenance(config: Config) -> dict[str, Any] | None:
    """The outcome of the last :func:`maintain` run under ``config``'s home (None: none
    recorded): ``at`` (epoch seconds), ``outcome`` (``ok`` or ``failed``), ``error``,
    ``tables`` and the files removed, added (compaction) and vacuumed in all."""
    try:
        record: dict[str, Any] = json.loads((config.run_dir / _RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record


def maintenance_summary(record: dict[str, Any] | None, *, now: float) -> str:
    """One phrase for ``workbench status`` about :func:`last_maintenance`'s ``record``.

    >>> maintenance_summary(None, now=0.0)
    'no lake maintenance yet'
    >>> maintenance_summary({"at": 100.0, "started_at": 98.5, "outcome": "ok", "tables": 4,
    ...     "files_removed": 12, "files_added": 3, "files_vacuumed": 5}, now=400.0)
    'lake maintained 5m ago: 12 files compacted into 3, 5 vacuumed, 4 tables (1.5 s)'
    >>> maintenance_summary({"at": 100.0, "started_at": 99.0, "outcome": "failed",
    ...     "error": "OSError: disk full"}, now=130.0)
    'lake maintenance FAILED 30s ago: OSError: disk full'
    """
    if record is None:
        return "no lake maintenance yet"
    ago = max(0.0, now - float(record.get("at", now)))
    when = (
        f"{ago:.0f}s" if ago < 120 else f"{ago / 60:.0f}m" if ago < 7200 else f"{ago / 3600:.0f}h"
    )
    if record.get("outcome") != "ok":
        return f"lake maintenance FAILED {when} ago: {record.get('error')}"
    seconds = float(record.get("at", 0)) - float(record.get("started_at", 0))
    return (
        f"lake maintained {when} ago: {record.get('files_removed', 0)} files compacted into "
        f"{record.get('files_added', 0)}, {record.get('files_vacuumed', 0)} vacuumed, "
        f"{record.get('tables', 0)} tables ({seconds:.1f} s)"
    )


REGISTRY_KEYS = {"tenants": "tenant_id", "buildings": "building_id", "devices": "device_id"}
"""The registry's tables (``registry/<name>``) and the key their rows are kept sorted by."""

_REGISTRY_FILE = 1 << 20  # the registry tables' delta.targetFileSize


def _scattered(table: Any) -> bool:
    """Whether a registry table holds more than twice the files its size needs (plus a
    few): every device provisioned on its own adds a file, so after an onboarding wave
    a full load (a gateway worker's start-up) opens thousands of tiny files."""
    sizes: list[int] = table.get_add_actions(flatten=True).column("size_bytes").to_pylist()
    needed = max(1, -(-sum(sizes) // _REGISTRY_FILE))
    return len(sizes) > 2 * needed + 8


def _maintain_registry(config: Config) -> list[dict[str, Any]]:
    """Step 1 for the registry's tables: rewritten in files of about 1 MiB sorted by
    their key, once scattered. A Z-order on one column sorts by it, so each file again
    holds a narrow range of ids (a single-device MERGE skips the others by their
    statistics), and it commits as a rearrangement (``dataChange=false``), which the
    change data feed the gateway workers follow does not report: no worker reloads."""
    report: list[dict[str, Any]] = []
    for name, key in REGISTRY_KEYS.items():
        path = f"registry/{name}"
        table = open_table(config, path)
        if table is None:
            continue
        row: dict[str, Any] = {"table": path, "version": table.version()}
        started = time.monotonic()
        removed = added = 0
        if _scattered(table):

            def rewrite(path: str = path, key: str = key) -> dict[str, Any]:
                fresh = open_table(config, path)
                assert fresh is not None
                result: dict[str, Any] = fresh.optimize.z_order([key], target_size=_REGISTRY_FILE)
                return result

            metrics = retry_on_conflict(rewrite, what=f"sort {path}")
            removed = int(metrics.get("numFilesRemoved", 0))
            added = int(metrics.get("numFilesAdded", 0))
        row["files_removed"], row["files_added"] = removed, added
        _checkpoint_and_vacuum(config, path, row, started)
        report.append(row)
    return report


def _checkpoint_and_vacuum(config: Config, name: str, row: dict[str, Any], started: float) -> None:
    """Steps 2 and 3 of table ``name``, noted in its report ``row``."""
    # Step 2
    table = open_table(config, name)
    assert table is not None
    table.create_checkpoint()
    # Step 3
    deleted = table.vacuum(
        retention_hours=int(config.lake_retention_hours),
        dry_run=False,
        enforce_retention_duration=False,
    )
    row["files_vacuumed"] = len(deleted)
    row["seconds"] = round(time.monotonic() - started, 2)
    logger.info("maintained %s: %s", name, row)


def _maintain(config: Config, *, days: int, now: dt.datetime) -> list[dict[str, Any]]:
    report: list[dict[str, Any]] = []
    for name in TABLES:
        table = open_table(config, name)
        if table is None:
            continue
        row: dict[str, Any] = {"table": name, "version": table.version()}
        started = time.monotonic()
        # Step 1
        removed = added = 0
        if name == TELEMETRY:
            since = (now - dt.timedelta(days=days)).date()
            # The days devices still send into (today; yesterday for its first hour) are
            # bin-packed: a commit that only rearranges files does not conflict with the
            # processor's appends. A sorted rewrite replaces the whole partition, so an
            # append beside it wins the race; on S3, where the rewrite takes seconds and
            # the processor commits every second, it lost every race for minutes on end.
            active_since = (now - dt.timedelta(hours=1)).date()
            for day, small in sorted(_small_files_by_date(table, since).items()):
                if small < 2:
                    continue
                step = _bin_pack if dt.date.fromisoformat(day) >= active_since else _rewrite_sorted
                r, a = retry_on_conflict(partial(step, config, day), what=f"compact {day}")
                removed += r
                added += a
        else:

            def compact(name: str = name) -> dict[str, Any]:
                fresh = open_table(config, name)
                assert fresh is not None
                result: dict[str, Any] = fresh.optimize.compact(
                    writer_properties=writer_properties(name)
                )
                return result

            metrics = retry_on_conflict(compact, what=f"compact {name}")
            removed += int(metrics.get("numFilesRemoved", 0))
            added += int(metrics.get("numFilesAdded", 0))
        row["files_removed"], row["files_added"] = removed, added
        _checkpoint_and_vacuum(config, name, row, started)
        report.append(row)
    return report + _maintain_registry(config)
