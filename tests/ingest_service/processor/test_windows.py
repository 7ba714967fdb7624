"""Lateness against the partition's watermark when device clocks are wrong."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.processor import Processor
from ingest_service.processor.windows import FixedClock, TumblingWindows, mark_late
from tests.ingest_service.processor.conftest import T0, encode, event
from workbench import lake
from workbench.config import Config
from workbench.tenancy.principal import Principal

_UTC = pl.Datetime("us", "UTC")


def _rows(*events: tuple[dt.datetime, dt.datetime | None]) -> pl.DataFrame:
    """Rows of partition 0 in offset order: (ts, received_at)."""
    return pl.DataFrame(
        {
            "source_partition": pl.Series([0] * len(events), dtype=pl.Int32),
            "source_offset": pl.Series(range(len(events)), dtype=pl.Int64),
            "ts": pl.Series([ts for ts, _ in events], dtype=_UTC),
            "received_at": pl.Series([received for _, received in events], dtype=_UTC),
        }
    )


def test_a_fast_clock_does_not_make_its_partitions_other_events_late() -> None:
    fast = T0 + dt.timedelta(minutes=10)  # a device clock 10 minutes ahead of the gateway
    rows = _rows((fast, T0), (T0 + dt.timedelta(seconds=1), T0 + dt.timedelta(seconds=1)))
    marked, watermarks = mark_late(rows, {}, TumblingWindows(grace_s=120))
    assert marked["late"].to_list() == [False, False]
    assert watermarks == {0: T0 + dt.timedelta(seconds=1)}


def test_a_slow_clock_is_late_and_the_watermark_follows_event_time() -> None:
    rows = _rows(
        (T0, T0),
        (T0 - dt.timedelta(hours=2), T0),  # a clock 2 hours behind: late
        (T0 - dt.timedelta(seconds=30), T0 + dt.timedelta(minutes=5)),  # delivered late: late?
    )
    marked, watermarks = mark_late(rows, {}, TumblingWindows(grace_s=120))
    # the watermark is T0 (event time), so T0 - 30 s's window (closes T0 + 2 min) is on time
    assert marked["late"].to_list() == [False, True, False]
    assert watermarks == {0: T0}


def test_without_received_at_event_time_alone_moves_the_watermark() -> None:
    rows = _rows((T0 + dt.timedelta(minutes=10), None), (T0, None)).drop("received_at")
    marked, watermarks = mark_late(rows, {}, TumblingWindows(grace_s=120))
    assert marked["late"].to_list() == [False, True]
    assert watermarks == {0: T0 + dt.timedelta(minutes=10)}
    # a null received_at (a producer that does not stamp it) is the same
    rows = _rows((T0 + dt.timedelta(minutes=10), None), (T0, None))
    assert mark_late(rows, {}, TumblingWindows(grace_s=120))[0]["late"].to_list() == [False, True]


def _fast_then_on_time(seq: int, device: str) -> dict[str, object]:
    return event(device=device, seq=seq, ts=T0 + dt.timedelta(seconds=seq))


def test_processor_counts_on_time_events_after_a_fast_clock_also_after_a_restart(
    tmp_path: Path,
) -> None:
    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    clock = FixedClock(T0 + dt.timedelta(minutes=1))
    fast = event(device="fast", seq=1, ts=T0 + dt.timedelta(minutes=20), received_at=_z(T0))
    values = [encode(fast), *(encode(_fast_then_on_time(s, "ok")) for s in range(1, 4))]
    processor = Processor(config, clock=clock)
    processor.assign([0])
    processor.process(RecordBatch(values, [b"k"] * 4, [0] * 4, list(range(4))))
    processor = Processor(config, clock=clock)  # the watermark is rebuilt from telemetry
    processor.assign([0])
    assert processor.watermarks[0] == T0 + dt.timedelta(seconds=3)
    later = encode(_fast_then_on_time(4, "ok"))
    processor.process(RecordBatch([later], [b"k"], [0], [4]))

    admin = Principal.system()
    stored = lake.telemetry(config, principal=admin).sort("device_id", "seq")
    assert stored.select("device_id", "late").rows() == [("fast", False)] + [("ok", False)] * 4
    metrics = lake.building_metrics(config, principal=admin, building_id="b-1")
    assert metrics["readings"].sum() == 5


def _z(ts: dt.datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")
