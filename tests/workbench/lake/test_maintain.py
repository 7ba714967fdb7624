"""``workbench lake maintain`` compacts without changing what the tables hold."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.processor import Processor
from ingest_service.processor.windows import FixedClock
from tests.conftest import run_cli
from tests.ingest_service.processor.conftest import T0, encode, event
from workbench import lake
from workbench.config import Config
from workbench.tenancy.principal import Principal

ADMIN = Principal.system()


def _fill(config: Config) -> None:
    processor = Processor(config, clock=FixedClock(T0 + dt.timedelta(hours=1)))
    processor.assign([0])
    offset = 0
    for minute in range(6):  # six commits: six small files per table
        values = [
            encode(
                event(
                    device=f"d{d}",
                    seq=minute,
                    ts=T0 + dt.timedelta(minutes=minute),
                    building=f"b-{d % 3}",
                )
            )
            for d in range(20)
        ]
        processor.process(
            RecordBatch(values, [None] * 20, [0] * 20, list(range(offset, offset + 20)))
        )
        offset += 20


def test_maintain_compacts_sorted_and_keeps_every_row(tmp_path: Path) -> None:
    env = {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    config = Config.from_env(env)
    _fill(config)
    before = lake.telemetry(config, principal=ADMIN)
    metrics_before = lake.building_metrics(config, principal=ADMIN, building_id="b-1")
    files_before = len(DeltaTable(f"{config.lake}/telemetry").file_uris())
    assert files_before == 6

    result = run_cli({**os.environ, **env}, "lake", "maintain", "--json", "--days", "3650")
    assert result.returncode == 0, result.stderr
    report = {row["table"]: row for row in json.loads(result.stdout)}
    assert report["telemetry"]["files_removed"] == 6

    table = DeltaTable(f"{config.lake}/telemetry")
    assert len(table.file_uris()) == 1
    stored = pl.read_delta(f"{config.lake}/telemetry")
    assert stored.select("building_id", "device_id", "ts").rows() == sorted(
        stored.select("building_id", "device_id", "ts").rows()
    )
    assert lake.telemetry(config, principal=ADMIN).equals(before)
    assert lake.building_metrics(config, principal=ADMIN, building_id="b-1").equals(metrics_before)
    # the offsets survive compaction: a restarted processor resumes where it was
    assert table.transaction_version(f"{config.processor_group}-{config.topic}-0") == 119
