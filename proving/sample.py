"""A simulated lake for benchmarks, tests and notebooks: fleet events written straight to Delta.

The events come from :class:`simulator.fleet.Fleet` (seeded, deterministic) and
are shaped into the ``telemetry`` contract (:mod:`workbench.lake.schemas`) without the
gateway, Kafka or the processor: one ``write_deltalake`` append per chunk, where the
Kafka path would take minutes for 10 M events. The
registry's ``tenants``, ``buildings`` and ``devices`` tables get the fleet's
rows so that joins work.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable

import numpy as np
import polars as pl
import pyarrow as pa

from workbench.config import Config
from workbench.lake import schemas
from workbench.lake.tables import TELEMETRY, storage_options, table_uri, writer_properties

__all__ = ["SampleLake", "write_sample_lake"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SampleLake:
    """What :func:`write_sample_lake` wrote."""

    events: int
    devices: int
    buildings: int
    tenants: tuple[str, ...]
    start: dt.datetime
    end: dt.datetime
    seconds: float


def write_sample_lake(
    config: Config,
    *,
    events: int,
    devices: int = 1000,
    tenants: int = 2,
    buildings: int | None = None,
    days: float = 2.0,
    start: dt.datetime | None = None,
    seed: int = 7,
    batch_events: int = 2_000_000,
    progress: Callable[[int, int], None] | None = None,
) -> SampleLake:
    """Append ``events`` simulated events of ``devices`` devices (in ``buildings`` buildings,
    default one per ~400 devices), spread evenly over ``days``
    days from ``start`` (default: midnight UTC ``days`` days ago), to the lake's
    ``telemetry`` table, and write the fleet into the registry tables (replacing them).
    """
    import time

    from deltalake import write_deltalake

    from simulator.fleet import Fleet

    t0 = time.perf_counter()
    fleet = Fleet.generate(devices, seed=seed, tenants=tenants, buildings=buildings)
    ticks = max(1, -(-events // devices))
    interval_s = days * 86400.0 / ticks
    if start is None:
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - dt.timedelta(days=days)
    meta = fleet.frame.with_row_index("device").with_columns(
        pl.col("device").cast(pl.UInt32), pl.col("floor").cast(pl.Int32)
    )
    rng = np.random.default_rng(seed)
    written, pending_rows = 0, 0
    pending: list[pl.DataFrame] = []
    uri = table_uri(config, TELEMETRY)

    def flush() -> None:
        nonlocal pending, pending_rows
        if not pending:
            return
        frame = pl.concat(pending).sort("building_id", "device_id", "ts")
        write_deltalake(
            uri,
            frame.to_arrow().select(schemas.TELEMETRY.names).cast(schemas.TELEMETRY),
            mode="append",
            partition_by=["event_date"],
            storage_options=storage_options(config),
            writer_properties=writer_properties(TELEMETRY),
        )
        pending, pending_rows = [], 0

    for tick, frame in enumerate(fleet.ticks(start, interval_s=interval_s)):
        if written >= events:
            break
        take = min(frame.height, events - written)
        frame = frame.head(take)
        n = frame.height
        kind = frame["kind"].to_numpy()
        alarm = rng.random(n) < 0.002
        rows = (
            frame.join(meta, on="device", how="left")
            .select(
                "device_id",
                "seq",
                "device_type",
                "tenant_id",
                "building_id",
                "floor",
                "room",
                pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
                pl.from_epoch("received", time_unit="ms")
                .dt.replace_time_zone("UTC")
                .alias("received_at"),
                (
                    pl.from_epoch("received", time_unit="ms").dt.replace_time_zone("UTC")
                    + pl.duration(milliseconds=300)
                ).alias("ingested_at"),
                pl.when(pl.col("kind") == 0).then(pl.col("temperature")).alias("temperature"),
                pl.when(pl.col("kind") == 0).then(pl.col("humidity")).alias("humidity"),
                pl.when(pl.col("kind") == 0).then(pl.col("light")).alias("light"),
                pl.when(pl.col("kind") == 1).then(pl.Series(alarm & (kind == 1))).alias("smoke"),
                pl.when(pl.col("kind") == 2)
                .then(pl.Series(alarm & (kind == 2)))
                .alias("intrusion"),
                pl.lit(None, pl.String).alias("extra"),
                "protocol",
                pl.lit(tick % 8, pl.Int32).alias("source_partition"),
                (pl.lit(tick * devices, pl.Int64) + pl.int_range(n, dtype=pl.Int64)).alias(
                    "source_offset"
                ),
                pl.lit(False).alias("late"),
            )
            .with_columns(pl.col("ts").dt.date().alias("event_date"))
        )
        pending.append(rows)
        pending_rows += n
        written += n
        if pending_rows >= batch_events:
            flush()
            if progress is not None:
                progress(written, events)
    flush()
    if progress is not None:
        progress(written, events)
    _write_registry(config, fleet)
    end = start + dt.timedelta(seconds=interval_s * ticks)
    return SampleLake(
        events=written,
        devices=devices,
        buildings=len(fleet.buildings),
        tenants=fleet.tenant_ids,
        start=start,
        end=end,
        seconds=time.perf_counter() - t0,
    )


def _write_registry(config: Config, fleet: object) -> None:
    """The fleet's tenants, buildings and devices as registry rows (overwrite)."""
    from deltalake import write_deltalake

    from simulator.fleet import Fleet
    from workbench.registry import store

    assert isinstance(fleet, Fleet)
    root = f"{config.lake.rstrip('/')}/registry"
    now = dt.datetime.now(dt.UTC)
    audit = {"created_at": now, "created_by": "sample", "updated_at": now, "updated_by": "sample"}
    tenants = pl.DataFrame(
        [{"tenant_id": t, "name": f"Tenant {t}", **audit} for t in fleet.tenant_ids]
    )
    buildings = pl.DataFrame(
        [
            {"building_id": b.building_id, "tenant_id": b.tenant_id, "name": b.name, **audit}
            for b in fleet.buildings
        ]
    )
    devices = fleet.frame.with_columns(
        pl.col("floor").cast(pl.Int32),
        pl.lit("provisioned").alias("status"),
        pl.lit(1, pl.Int32).alias("key_version"),
        *[pl.lit(v).alias(k) for k, v in audit.items()],
    )
    for name, frame, schema in (
        ("tenants", tenants, store.TENANTS),
        ("buildings", buildings, store.BUILDINGS),
        ("devices", devices, store.DEVICES),
    ):
        table: pa.Table = frame.to_arrow().select(schema.names).cast(schema)
        write_deltalake(
            f"{root}/{name}",
            table,
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=storage_options(config),
        )
