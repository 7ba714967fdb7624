"""The commit protocol against real Delta tables on disk (records handed in directly)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

from ingest_service.processor import sink
from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.processor import Processor
from ingest_service.processor.windows import FixedClock
from tests.ingest_service.processor.conftest import (
    T0,
    assert_frames_close,
    encode,
    event,
    recompute_metrics,
    recompute_state,
)
from workbench import lake
from workbench.config import Config
from workbench.tenancy.principal import Principal

ADMIN = Principal.system()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )


class Feed:
    """Hands records to a processor as if polled from partition 0 (offsets counted up)."""

    def __init__(self, config: Config, clock: FixedClock) -> None:
        self.config = config
        self.clock = clock
        self.offset = 0
        self.processor = self.restart()

    def restart(self) -> Processor:
        self.processor = Processor(self.config, clock=self.clock)
        self.processor.assign([0])
        return self.processor

    def send(self, *values: bytes) -> None:
        offsets = list(range(self.offset, self.offset + len(values)))
        self.offset += len(values)
        self.processor.process(
            RecordBatch(list(values), [b"k"] * len(values), [0] * len(values), offsets)
        )


@pytest.fixture
def feed(config: Config) -> Feed:
    return Feed(config, FixedClock(T0 + dt.timedelta(minutes=10)))


def _rejected(config: Config) -> pl.DataFrame:
    return pl.read_delta(f"{config.lake}/telemetry_rejected").sort("source_offset")


def test_malformed_events_are_rejected_with_reason_raw_and_offset_and_good_lines_kept(
    feed: Feed, config: Config
) -> None:
    good = [encode(event(seq=i)) for i in range(5)]
    bad_json = b'{"device_id": "dev-1", "seq": '
    missing = encode({k: v for k, v in event(seq=9).items() if k != "ts"})
    wrong_type = encode(event(seq=10, readings={"temperature": "hot"}))
    feed.send(good[0], bad_json, good[1], missing, good[2], wrong_type, good[3], good[4])

    stored = lake.telemetry(config, principal=ADMIN)
    assert sorted(stored["seq"].to_list()) == [0, 1, 2, 3, 4]
    rejected = _rejected(config)
    assert rejected["reason"].to_list() == [
        "malformed: not valid JSON",
        "missing_field: ts",
        "wrong_type: readings.temperature",
    ]
    assert rejected["source_offset"].to_list() == [1, 3, 5]
    assert rejected["raw"][0] == bad_json
    assert rejected["source_topic"].unique().to_list() == [config.topic]


def test_out_of_range_events_are_rejected(feed: Feed, config: Config) -> None:
    far_future = T0 + dt.timedelta(days=2)
    feed.send(
        encode(event(seq=1)),
        encode(event(seq=2, ts=far_future)),
        encode(event(seq=3, readings={"temperature": 900.0})),
        encode(event(seq=4, readings={"humidity": -3})),
        encode(event(seq=-5)),
    )
    assert lake.telemetry(config, principal=ADMIN)["seq"].to_list() == [1]
    assert _rejected(config)["reason"].to_list() == [
        "out_of_range: ts is in the future",
        "out_of_range: readings.temperature outside [-60, 120]",
        "out_of_range: readings.humidity outside [0, 100]",
        "out_of_range: seq is negative",
    ]


def test_duplicates_are_rejected_within_a_batch_across_batches_and_after_restart(
    feed: Feed, config: Config
) -> None:
    feed.send(encode(event(seq=1)), encode(event(seq=1)), encode(event(seq=2)))
    feed.send(encode(event(seq=2)), encode(event(seq=3)))
    feed.restart()  # the index is rebuilt from telemetry
    feed.send(encode(event(seq=3)), encode(event(seq=1, device="dev-2")))

    stored = lake.telemetry(config, principal=ADMIN).sort("device_id", "seq")
    assert stored.select("device_id", "seq").rows() == [
        ("dev-1", 1),
        ("dev-1", 2),
        ("dev-1", 3),
        ("dev-2", 1),
    ]
    rejected = _rejected(config)
    assert rejected["reason"].to_list() == ["duplicate"] * 3
    assert rejected["source_offset"].to_list() == [1, 3, 5]
    assert rejected["raw"].to_list()[0] == encode(event(seq=1))
    metrics = lake.building_metrics(config, principal=ADMIN, building_id="b-1")
    assert metrics["readings"].sum() == 4  # duplicates are not counted either


def test_late_events_within_grace_update_their_window_later_ones_are_stored_not_counted(
    feed: Feed, config: Config
) -> None:
    feed.send(encode(event(seq=1, ts=T0, readings={"temperature": 10.0})))
    # the watermark moves 2.5 minutes on: T0's window closed 1.5 minutes ago (< 2 min grace)
    feed.send(encode(event(seq=2, ts=T0 + dt.timedelta(seconds=150))))
    feed.send(encode(event(seq=3, ts=T0 + dt.timedelta(seconds=5), readings={"temperature": 30.0})))
    # now 4 minutes on: T0's window closed 3 minutes ago (> grace): late
    feed.send(encode(event(seq=4, ts=T0 + dt.timedelta(minutes=4))))
    feed.send(
        encode(event(seq=5, ts=T0 + dt.timedelta(seconds=10), readings={"temperature": 99.0}))
    )

    stored = lake.telemetry(config, principal=ADMIN).sort("seq")
    assert stored["late"].to_list() == [False, False, False, False, True]
    first = lake.building_metrics(config, principal=ADMIN, building_id="b-1").row(0, named=True)
    assert first["window_start"] == T0
    assert first["readings"] == 2
    assert first["temperature_avg"] == pytest.approx(20.0)
    assert first["temperature_max"] == pytest.approx(30.0)


def test_unknown_readings_are_kept_in_extra(feed: Feed, config: Config) -> None:
    feed.send(
        encode(event(seq=1, readings={"temperature": 21.0, "co2": 415})),
        encode(event(seq=2)),
    )
    stored = lake.telemetry(config, principal=ADMIN).sort("seq")
    assert stored["extra"].to_list() == ['{"co2":415}', None]


def test_building_state_equals_an_independent_five_minute_recomputation(
    feed: Feed, config: Config
) -> None:
    rows = []
    for minute in range(8):
        for device in range(6):
            building = f"b-{device % 2}"
            rows.append(
                encode(
                    event(
                        device=f"dev-{device}",
                        seq=minute,
                        ts=T0 + dt.timedelta(minutes=minute, seconds=device * 7),
                        building=building,
                        # uneven readings per minute make average-of-averages differ
                        readings={"temperature": 15.0 + minute * device, "smoke": device == 3}
                        if device % 3
                        else {"humidity": 30.0 + minute},
                    )
                )
            )
    for start in range(0, len(rows), 7):  # batch boundaries cut windows apart
        feed.send(*rows[start : start + 7])
    telemetry = lake.telemetry(config, principal=ADMIN)
    assert_frames_close(lake.building_state(config, principal=ADMIN), recompute_state(telemetry))
    metrics = pl.concat(
        [lake.building_metrics(config, principal=ADMIN, building_id=b) for b in ("b-0", "b-1")]
    ).sort("building_id", "window_start")
    assert_frames_close(metrics, recompute_metrics(telemetry))


def test_crash_between_telemetry_and_metrics_commits_is_repaired_on_assignment(
    feed: Feed, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed.send(*[encode(event(device=f"d{i}", seq=1, building=f"b-{i % 3}")) for i in range(9)])

    def crash(*args: object, **kwargs: object) -> int:
        raise SystemExit("killed between the commits")

    with monkeypatch.context() as m:
        m.setattr(sink, "merge_metrics", crash)
        with pytest.raises(SystemExit):
            feed.send(
                *[
                    encode(
                        event(
                            device=f"d{i}",
                            seq=2,
                            building=f"b-{i % 3}",
                            ts=T0 + dt.timedelta(seconds=30),
                        )
                    )
                    for i in range(9)
                ]
            )
    telemetry = lake.telemetry(config, principal=ADMIN)
    assert telemetry.height == 18
    feed.restart()
    metrics = pl.concat(
        [lake.building_metrics(config, principal=ADMIN, building_id=f"b-{i}") for i in range(3)]
    ).sort("building_id", "window_start")
    assert_frames_close(metrics, recompute_metrics(telemetry))
    assert_frames_close(lake.building_state(config, principal=ADMIN), recompute_state(telemetry))


def test_tables_read_in_polars_scan_delta_and_duckdb(feed: Feed, config: Config) -> None:
    feed.send(*[encode(event(device=f"d{i}", seq=1, building=f"b-{i % 2}")) for i in range(10)])
    scanned = pl.scan_delta(f"{config.lake}/telemetry").filter(pl.col("building_id") == "b-1")
    assert scanned.collect().height == 5
    # DuckDB scans the table's current snapshot through deltalake's Arrow dataset
    dataset = DeltaTable(f"{config.lake}/telemetry").to_pyarrow_dataset()  # noqa: F841
    counted = (
        duckdb.connect()
        .execute(
            "SELECT building_id, count(*), min(event_date), max(ts) FROM dataset "
            "GROUP BY building_id ORDER BY building_id"
        )
        .fetchall()
    )
    assert [(b, n) for b, n, _, _ in counted] == [("b-0", 5), ("b-1", 5)]
    assert counted[0][2] == dt.date(2026, 11, 27)
    assert counted[0][3] == T0


def test_records_delivered_again_are_stored_once(feed: Feed, config: Config) -> None:
    values = [encode(event(seq=i)) for i in range(4)] + [b"not json"]
    feed.send(*values)
    # the same offsets again (a stale seek), and one record twice within a batch
    feed.processor.process(RecordBatch(values[2:], [b"k"] * 3, [0] * 3, [2, 3, 4]))
    feed.processor.process(
        RecordBatch([values[0], values[0]], [b"k"] * 2, [0, 0], [feed.offset, feed.offset])
    )
    stored = lake.telemetry(config, principal=ADMIN)
    assert sorted(stored["source_offset"].to_list()) == [0, 1, 2, 3]
    rejected = _rejected(config)
    assert rejected.select("source_offset", "reason").rows() == [
        (4, "malformed: not valid JSON"),
        (5, "duplicate"),
    ]


def test_records_of_a_partition_not_owned_are_not_stored(
    feed: Feed, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    # a poll spanning a rebalance can bring records of a partition now owned elsewhere
    values = [encode(event(seq=i)) for i in range(3)]
    with caplog.at_level("WARNING"):
        result = feed.processor.process(RecordBatch(values, [b"k"] * 3, [0, 1, 1], [0, 7, 8]))
    assert result.stored == 1
    assert lake.telemetry(config, principal=ADMIN).select(
        "source_partition", "source_offset"
    ).rows() == [(0, 0)]
    assert feed.processor.checkpoint.partitions == [0]  # nor does it take the partition over
    assert "skipping 2 records of partitions not owned here: [1]" in caplog.text


def test_a_replay_after_a_crash_between_the_rejected_and_telemetry_commits_rejects_once(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deterministic form of the duplicates the five-SIGKILL test found on object stores:
    # a replay's batch ends earlier than the crashed one did, and its telemetry_rejected
    # commit must not move the partition's recorded offset back below what the table holds.
    clock = FixedClock(T0 + dt.timedelta(minutes=10))
    good = [encode(event(device=f"d{p}", seq=s)) for p in range(2) for s in range(4)]

    def batch(*records: tuple[int, int]) -> RecordBatch:
        values = [b"not json" if o % 2 else good[p * 4 + o] for p, o in records]
        return RecordBatch(
            values, [b"k"] * len(values), [p for p, _ in records], [o for _, o in records]
        )

    def restart() -> Processor:
        processor = Processor(config, clock=clock)
        processor.assign([0, 1])
        return processor

    def killed(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed between the commits")

    # 1. rejects of partition 0 up to offset 3 committed, telemetry's commit never made
    with monkeypatch.context() as m:
        m.setattr(sink, "write_telemetry", killed)
        with pytest.raises(SystemExit):
            restart().process(batch((0, 0), (0, 1), (0, 2), (0, 3), (1, 0)))
    # 2. the successor's first batch ends earlier on partition 0, and has a new reject
    #    on partition 1 (so telemetry_rejected gets a commit naming partition 0 too)
    restart().process(batch((0, 0), (0, 1), (1, 0), (1, 1)))
    app = f"{config.processor_group}-{config.topic}-0"
    assert DeltaTable(f"{config.lake}/telemetry_rejected").transaction_version(app) == 3
    # 3. the next successor reads on from there
    restart().process(batch((0, 2), (0, 3), (1, 2), (1, 3)))

    rejected = _rejected(config).sort("source_partition", "source_offset")
    assert rejected.select("source_partition", "source_offset").rows() == [
        (0, 1),
        (0, 3),
        (1, 1),
        (1, 3),
    ]
    stored = lake.telemetry(config, principal=ADMIN).sort("source_partition", "source_offset")
    assert stored.select("source_partition", "source_offset").rows() == [
        (0, 0),
        (0, 2),
        (1, 0),
        (1, 2),
    ]


def test_a_take_over_looks_at_the_rules_again_only_when_they_changed(config, monkeypatch):
    """Taking partitions over re-reads the rules; the evaluator is told they changed (and
    drops what it worked out from them) only when the ``alarm_rules`` table moved."""
    from workbench.alarms import rulebook

    processor = Processor(config, clock=FixedClock(T0))
    processor.assign([0])
    told: list[None] = []
    real = processor.alarms.evaluator.rules_changed
    monkeypatch.setattr(
        processor.alarms.evaluator, "rules_changed", lambda: (told.append(None), real())[1]
    )
    processor.assign([1])
    assert told == []  # same rules: nothing to look at again
    ops = Principal("ops", "operator", "t-1")
    rulebook.set_rules(config, "t-1", "", source="t-1.toml", principal=ops)
    processor.assign([2])
    assert told == [None]
