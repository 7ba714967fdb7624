"""Where the lake's tables live and how they are written: names, URIs, storage options.

One root URI (``WORKBENCH_LAKE``: a folder, or ``s3://`` / ``az://`` / ``gs://``)
names the whole lake; each table is a Delta table under it.

>>> from workbench.config import Config
>>> table_uri(Config.from_env({"WORKBENCH_LAKE": "s3://bucket/lake"}), TELEMETRY)
's3://bucket/lake/telemetry'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from workbench.config import Config
from workbench.lake import schemas

T = TypeVar("T")

__all__ = [
    "BUILDING_METRICS_1M",
    "BUILDING_STATE",
    "TABLES",
    "TELEMETRY",
    "TELEMETRY_REJECTED",
    "TableSpec",
    "ensure_tables",
    "open_table",
    "retry_on_conflict",
    "storage_options",
    "table_schema",
    "table_uri",
    "telemetry_readings",
    "writer_properties",
]

logger = logging.getLogger(__name__)

TELEMETRY = "telemetry"
TELEMETRY_REJECTED = "telemetry_rejected"
BUILDING_METRICS_1M = "building_metrics_1m"
BUILDING_STATE = "building_state"


class TableSpec:
    """A table's schema, partition columns and the columns compaction clusters by."""

    def __init__(self, schema: pa.Schema, partition_by: list[str], cluster_by: list[str]) -> None:
        self.schema = schema
        self.partition_by = partition_by
        self.cluster_by = cluster_by


TABLES: dict[str, TableSpec] = {
    TELEMETRY: TableSpec(schemas.TELEMETRY, ["event_date"], ["building_id", "ts"]),
    TELEMETRY_REJECTED: TableSpec(schemas.TELEMETRY_REJECTED, ["rejected_date"], []),
    BUILDING_METRICS_1M: TableSpec(
        schemas.BUILDING_METRICS_1M, [], ["building_id", "window_start"]
    ),
    BUILDING_STATE: TableSpec(schemas.BUILDING_STATE, [], []),
}


def table_uri(config: Config, name: str) -> str:
    """The URI of table ``name`` under the lake root."""
    return f"{config.lake.rstrip('/')}/{name}"


def storage_options(config: Config) -> dict[str, str] | None:
    """Options deltalake needs for the lake's store (None for a local folder).

    Credentials for ``s3://``, ``az://`` and ``gs://`` come from the standard
    variables of each cloud (``AWS_*``, ``AZURE_*``, ``GOOGLE_*``), which
    deltalake reads itself; S3 needs conditional puts (on by default on AWS)
    for several writers to commit safely.
    """
    if "://" not in config.lake or config.lake.startswith("file://"):
        return None
    return {}


def open_table(config: Config, name: str) -> Any | None:
    """The ``deltalake.DeltaTable`` of ``name``, or None when it does not exist yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(table_uri(config, name), storage_options=storage_options(config))
    except TableNotFoundError:
        return None


def table_schema(table: Any) -> pa.Schema:
    """The Arrow schema of a ``deltalake.DeltaTable`` at the version it has loaded."""
    return pa.schema(table.schema().to_arrow())


def telemetry_readings(table: Any) -> dict[str, pa.DataType]:
    """The promoted reading columns of a ``telemetry`` DeltaTable (see
    :func:`workbench.lake.schemas.promoted_readings`)."""
    return schemas.promoted_readings(table_schema(table))


def ensure_tables(config: Config) -> None:
    """Create every lake table that does not exist yet (empty, with its schema)."""
    from deltalake import DeltaTable

    if "://" not in config.lake:
        Path(config.lake).mkdir(parents=True, exist_ok=True)
    for name, spec in TABLES.items():
        if open_table(config, name) is not None:
            continue
        try:
            DeltaTable.create(
                table_uri(config, name),
                spec.schema,
                partition_by=spec.partition_by or None,
                mode="ignore",
                storage_options=storage_options(config),
            )
            logger.info("created lake table %s", table_uri(config, name))
        except Exception as exc:  # a concurrent creator won the race
            if open_table(config, name) is None:
                raise
            logger.debug("table %s created concurrently (%s)", name, exc)


def writer_properties(name: str) -> Any:
    """Parquet settings per table: zstd, and encodings that suit sorted telemetry."""
    from deltalake import ColumnProperties, WriterProperties

    columns: dict[str, ColumnProperties] = {}
    if name == TELEMETRY:
        delta = ColumnProperties(dictionary_enabled=False, encoding="DELTA_BINARY_PACKED")
        for column in ("seq", "ts", "received_at", "source_offset"):
            columns[column] = delta
    return WriterProperties(
        compression="ZSTD", compression_level=3, column_properties=columns or None
    )


def retry_on_conflict(action: Callable[[], T], *, what: str, attempts: int = 20) -> T:
    """Run ``action``; when a concurrent writer won the commit, reload and run it again."""
    from deltalake.exceptions import CommitFailedError

    for attempt in range(attempts):
        try:
            return action()
        except CommitFailedError as exc:
            if attempt == attempts - 1:
                raise
            logger.info("%s: concurrent commit (%s), retrying", what, str(exc).splitlines()[0])
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
