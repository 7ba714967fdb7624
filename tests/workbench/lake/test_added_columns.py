"""A lake of an older release: the nullable columns a table's schema gained since are
added when the tables are ensured, and its old rows read them as null."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from workbench.config import Config
from workbench.lake.schemas import TELEMETRY_REJECTED
from workbench.lake.tables import ensure_tables


def test_telemetry_rejected_of_an_older_lake_gains_its_building_columns(tmp_path: Path) -> None:
    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    added = ("tenant_id", "building_id", "received_at")
    old = pa.schema([f for f in TELEMETRY_REJECTED if f.name not in added])
    now = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    row = {"reason": "duplicate", "raw": b"{}", "key": "d", "device_id": "d", "seq": 1,
           "source_topic": "telemetry", "source_partition": 0, "source_offset": 7,
           "rejected_at": now, "rejected_date": now.date()}  # fmt: skip
    uri = f"{config.lake}/telemetry_rejected"
    write_deltalake(uri, pa.Table.from_pylist([row], schema=old), partition_by=["rejected_date"])

    ensure_tables(config)
    ensure_tables(config)  # nothing left to add: no further commit

    table = DeltaTable(uri)
    assert table.version() == 1
    assert pa.schema(table.schema().to_arrow()).names == TELEMETRY_REJECTED.names
    rows = pl.read_delta(uri)
    assert rows.select(added).rows() == [(None, None, None)]
