"""``workbench lake maintain`` compacts without changing what the tables hold."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import polars as pl
import pytest
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


def test_rows_appended_while_compacting_survive(tmp_path: Path) -> None:
    """A processor's append between the rewrite's read and its write is never lost: the
    overwrite starts from the snapshot it read, so the commit conflicts and is redone."""
    from functools import partial

    from workbench.lake.maintain import _rewrite_sorted
    from workbench.lake.tables import retry_on_conflict

    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    _fill(config)
    day = str(lake.telemetry(config, principal=ADMIN)["event_date"][0])
    late_values = [
        encode(event(device=f"late{d}", seq=1, ts=T0 + dt.timedelta(minutes=7))) for d in range(5)
    ]

    appended: list[bool] = []

    def processor_appends() -> None:
        if appended:  # only while the first attempt is between its read and write
            return
        appended.append(True)
        processor = Processor(config, clock=FixedClock(T0 + dt.timedelta(hours=1)))
        processor.assign([0])
        processor.process(RecordBatch(late_values, [None] * 5, [0] * 5, list(range(120, 125))))

    retry_on_conflict(
        partial(_rewrite_sorted, config, day, before_write=processor_appends), what="rewrite"
    )
    stored = lake.telemetry(config, principal=ADMIN)
    assert stored.height == 125
    assert set(stored.filter(pl.col("device_id").str.starts_with("late"))["device_id"]) == {
        f"late{d}" for d in range(5)
    }


def test_an_append_racing_a_compaction_is_made_again(tmp_path: Path, monkeypatch) -> None:
    """Compaction committing between the processor's snapshot of ``telemetry`` and its
    append ("a concurrent transaction deleted data this operation read", which ended a
    member after 75 min of `make demo`) costs the append a retry, not the member."""
    from ingest_service.processor import sink
    from workbench.lake.maintain import _rewrite_sorted
    from workbench.lake.tables import TELEMETRY

    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    _fill(config)
    day = str(lake.telemetry(config, principal=ADMIN)["event_date"][0])
    processor = Processor(config, clock=FixedClock(T0 + dt.timedelta(hours=1)))
    processor.assign([0])

    real_latest = sink.latest_table
    rewrites: list[tuple[int, int]] = []

    def latest_table(cfg: Config, name: str) -> object:
        table = real_latest(cfg, name)
        if name == TELEMETRY and not rewrites:  # the first append's snapshot goes stale
            rewrites.append(_rewrite_sorted(config, day))
        return table

    monkeypatch.setattr(sink, "latest_table", latest_table)
    late = [
        encode(event(device=f"late{d}", seq=1, ts=T0 + dt.timedelta(minutes=7))) for d in range(5)
    ]
    processor.process(RecordBatch(late, [None] * 5, [0] * 5, list(range(120, 125))))

    assert rewrites == [(6, 1)]  # the compaction did replace the partition's files
    stored = lake.telemetry(config, principal=ADMIN)
    assert stored.height == 125
    assert stored.select("device_id", "seq").unique().height == 125
    table = DeltaTable(f"{config.lake}/telemetry")
    assert table.transaction_version(f"{config.processor_group}-{config.topic}-0") == 124


def test_each_run_records_its_outcome_for_status(tmp_path: Path) -> None:
    from workbench.lake.maintain import last_maintenance, maintain, maintenance_summary

    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    assert last_maintenance(config) is None
    _fill(config)
    report = maintain(config, days=3650)
    record = last_maintenance(config)
    assert record is not None
    assert (record["outcome"], record["error"], record["tables"]) == ("ok", None, len(report))
    assert record["files_removed"] == sum(row["files_removed"] for row in report) >= 6
    assert record["files_added"] == sum(row["files_added"] for row in report)
    assert maintenance_summary(record, now=record["at"]).startswith(
        f"lake maintained 0s ago: {record['files_removed']} files compacted into "
    )

    # a run that fails (here: a table's checkpoint is unreadable) says so, and why
    log = Path(config.lake) / "building_state" / "_delta_log"
    newest = max(log.glob("*.checkpoint.parquet"))
    newest.write_bytes(b"not parquet")
    with pytest.raises(Exception) as failure:
        maintain(config, days=3650)
    failed = last_maintenance(config)
    assert failed is not None
    assert (failed["outcome"], failed["tables"]) == ("failed", 0)
    assert failed["error"].startswith(f"{type(failure.value).__name__}: ")
    assert maintenance_summary(failed, now=failed["at"]).startswith(
        "lake maintenance FAILED 0s ago: " + failed["error"]
    )


@pytest.mark.parametrize(
    ("after", "operation"),
    [(dt.timedelta(minutes=30), "OPTIMIZE"), (dt.timedelta(days=2), "WRITE")],
    ids=["day-still-sent-into", "day-over"],
)
def test_a_day_devices_still_send_into_is_bin_packed_not_rewritten(
    tmp_path: Path, after: dt.timedelta, operation: str
) -> None:
    # A sorted rewrite replaces the whole partition, so the processor's appends into it
    # win every race against it when a rewrite takes longer than a commit interval (as on
    # S3): today's partition is only bin-packed, which appends do not conflict with, and
    # sorted once the day is over.
    from workbench.lake.maintain import maintain

    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    _fill(config)
    before = lake.telemetry(config, principal=ADMIN)
    report = {row["table"]: row for row in maintain(config, days=3650, now=T0 + after)}
    assert report["telemetry"]["files_removed"] == 6
    table = DeltaTable(f"{config.lake}/telemetry")
    assert table.history(1)[0]["operation"] == operation
    assert len(table.file_uris()) == 1
    assert (
        lake.telemetry(config, principal=ADMIN)
        .sort("device_id", "seq")
        .equals(before.sort("device_id", "seq"))
    )


def test_a_scattered_registry_is_sorted_into_few_files_that_no_feed_reloads(
    tmp_path: Path,
) -> None:
    """Every device provisioned on its own adds a file to ``registry/devices``; maintenance
    sorts them back into one, and a gateway's change feed neither sees the rewrite nor
    misses the next change."""
    from workbench.lake.maintain import maintain
    from workbench.registry.feed import DeviceFeed
    from workbench.registry.store import Registry

    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    registry = Registry(config, principal=Principal.system("admin"))
    registry.add_tenant("t-1")
    registry.add_building("b-1", tenant="t-1")
    ids = [f"dev-{(i * 7) % 30:03d}" for i in range(30)]  # not in id order
    for device in ids:
        registry.provision(device, building="b-1", device_type="smoke")
    uri = registry.table_uri("devices")
    assert len(DeltaTable(uri).file_uris()) >= 30
    feed = DeviceFeed(uri)
    feed.load()
    before = registry.frame("devices").sort("device_id")

    report = {row["table"]: row for row in maintain(config, days=1)}

    assert report["registry/devices"]["files_removed"] >= 30
    assert report["registry/devices"]["files_added"] == 1
    files = DeltaTable(uri).file_uris()
    assert len(files) == 1
    stored = pl.read_parquet(files[0])["device_id"].to_list()
    assert stored == sorted(ids)
    assert registry.frame("devices").sort("device_id").equals(before)
    nothing = feed.changes()
    assert (nothing.resync, len(nothing.devices), nothing.deleted) == (False, 0, frozenset())
    registry.provision("dev-new", building="b-1", device_type="smoke")
    later = feed.changes()
    assert (later.resync, sorted(later.devices)) == (False, ["dev-new"])

    # a table holding about the files its size needs is left as it is
    again = {row["table"]: row for row in maintain(config, days=1)}
    assert again["registry/devices"]["files_removed"] == 0
