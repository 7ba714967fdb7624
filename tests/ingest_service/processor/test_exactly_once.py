"""Exactly once through real crashes: processor subprocesses, the real broker, real Delta."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import time

import polars as pl
import pytest

from proving.objstore import Azurite, MotoS3
from simulator.fleet import Fleet
from tests.conftest import store_lake
from tests.ingest_service.processor.conftest import (
    assert_frames_close,
    produce,
    recompute_metrics,
    recompute_state,
    stored_offsets,
    wait_drained,
)
from workbench import lake
from workbench.config import Config
from workbench.tenancy.principal import Principal

ADMIN = Principal.system()

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _records(count: int, *, seed: int) -> list[tuple[bytes | None, bytes]]:
    fleet = Fleet.generate(400, seed=seed)
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(hours=4)
    records: list[tuple[bytes | None, bytes]] = list(fleet.kafka_records(start, count))
    rng = random.Random(seed)
    records += rng.sample(records, count // 50)  # retries: same event, new offset
    records += [(b"dev-000001", b'{"device_id": "dev-000001", "seq":')] * 10  # malformed
    rng.shuffle(records[count // 2 :])  # some out-of-order arrivals, and late ones
    return records


def _check_exactly_once(config: Config, produced: int) -> pl.DataFrame:
    telemetry = lake.telemetry(config, principal=ADMIN)
    rejected = pl.read_delta(f"{config.lake}/telemetry_rejected")
    # every record of the topic is in exactly one of the two tables, exactly once
    where = pl.concat(
        [
            telemetry.select("source_partition", "source_offset"),
            rejected.select("source_partition", "source_offset"),
        ]
    )
    assert where.height == produced
    assert where.unique().height == produced
    # ...and per partition the offsets run 0..n-1 without a gap
    spans = where.group_by("source_partition").agg(
        n=pl.len(), top=pl.col("source_offset").max(), low=pl.col("source_offset").min()
    )
    assert (spans["n"] == spans["top"] + 1).all() and (spans["low"] == 0).all()
    # no event identity stored twice; each re-sent copy rejected as duplicate
    assert telemetry.select("device_id", "seq").unique().height == telemetry.height
    reasons = rejected["reason"].value_counts().sort("reason")
    assert dict(reasons.iter_rows()) == {
        "duplicate": produced - 10 - telemetry.height,
        "malformed: not valid JSON": 10,
    }
    # the aggregates equal a recomputation from telemetry
    buildings = telemetry["building_id"].unique().sort().to_list()
    metrics = pl.concat(
        [lake.building_metrics(config, principal=ADMIN, building_id=b) for b in buildings]
    )
    assert_frames_close(metrics.sort("building_id", "window_start"), recompute_metrics(telemetry))
    assert_frames_close(lake.building_state(config, principal=ADMIN), recompute_state(telemetry))
    return telemetry


# Both Kafka clients the processor's members can use (WORKBENCH_PROCESSOR_CLIENT).
CLIENTS = pytest.mark.parametrize("client", ["librdkafka", "kafka-python"])


@CLIENTS
def test_every_event_exactly_once_through_five_sigkills(
    kafka_config: Config, start_processor: object, client: str
) -> None:
    _sigkills(kafka_config, start_processor, client, count=90_000, kills=5)


@pytest.mark.parametrize("object_store", ["s3", "azure"], indirect=True)
def test_exactly_once_through_sigkills_with_the_lake_on_an_object_store(
    kafka_config: Config, start_processor: object, object_store: MotoS3 | Azurite
) -> None:
    # the same crashes with every commit a conditional write to a real store's API; fewer
    # events, as each commit there is several HTTP round trips, and three kills, as each
    # restart waits out the killed member's session (the mechanism behind the duplicates
    # this found has a deterministic test of its own in test_processor.py)
    config = dataclasses.replace(kafka_config, lake=store_lake(object_store))
    _sigkills(config, start_processor, "librdkafka", count=30_000, kills=3)


def _sigkills(
    kafka_config: Config, start_processor: object, client: str, *, count: int, kills: int
) -> None:
    records = _records(count, seed=7)
    portions = [records[i :: kills + 1] for i in range(kills + 1)]
    rng = random.Random(3)
    partitions = list(range(kafka_config.topic_partitions))
    busy_kills = 0
    for kill in range(kills):
        produce(kafka_config, portions[kill])
        # small batches: many commits per portion, so a kill lands between or inside them
        proc = start_processor(  # type: ignore[operator]
            kafka_config, WORKBENCH_COMMIT_MAX_EVENTS="1500", WORKBENCH_PROCESSOR_CLIENT=client
        )
        before = sum(stored_offsets(kafka_config, partitions).values())
        deadline = time.monotonic() + 60
        while sum(stored_offsets(kafka_config, partitions).values()) == before:
            assert proc.popen.poll() is None, proc.log_tail()
            assert time.monotonic() < deadline, f"no progress before kill {kill}"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))  # somewhere inside a later batch
        proc.kill()
        produced = sum(len(p) for p in portions[: kill + 1])
        busy_kills += (
            sum(o + 1 for o in stored_offsets(kafka_config, partitions).values()) < produced
        )
    assert busy_kills > kills // 2, "most kills must hit a processor with work left"
    produce(kafka_config, portions[kills])
    final = start_processor(kafka_config, WORKBENCH_PROCESSOR_CLIENT=client)  # type: ignore[operator]
    wait_drained(kafka_config, timeout=120, alive=[final], expected=len(records))
    assert final.terminate() == 0
    _check_exactly_once(kafka_config, len(records))


@CLIENTS
def test_two_processors_share_partitions_and_hand_over_on_stop(
    kafka_config: Config, start_processor: object, client: str
) -> None:
    first = start_processor(kafka_config, "a", WORKBENCH_PROCESSOR_CLIENT=client)  # type: ignore[operator]
    second = start_processor(kafka_config, "b", WORKBENCH_PROCESSOR_CLIENT=client)  # type: ignore[operator]
    deadline = time.monotonic() + 60
    while True:  # the group settles with both members holding partitions
        owned = [set((p.heartbeat() or {}).get("partitions", [])) for p in (first, second)]  # type: ignore[call-overload]
        if all(owned) and not owned[0] & owned[1]:
            break
        assert time.monotonic() < deadline, f"partitions not shared: {owned}"
        time.sleep(0.3)
    assert owned[0] | owned[1] == set(range(kafka_config.topic_partitions))
    records = _records(16_000, seed=11)
    produce(kafka_config, records[:8_000])
    wait_drained(kafka_config, alive=[first, second], expected=8_000)
    time.sleep(1.0)  # the heartbeats follow the batch that drained the topic
    stored = [(p.heartbeat() or {}).get("stored", 0) for p in (first, second)]
    assert all(s > 0 for s in stored), stored  # type: ignore[operator]

    assert second.terminate() == 0  # leaves the group: its partitions move to the first
    produce(kafka_config, records[8_000:])
    wait_drained(kafka_config, alive=[first], expected=len(records))
    deadline = time.monotonic() + 30
    while set((first.heartbeat() or {}).get("partitions", [])) != set(  # type: ignore[call-overload]
        range(kafka_config.topic_partitions)
    ):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert first.terminate() == 0
    assert f"Kafka member on {client} joining group" in first.log.read_text()
    _check_exactly_once(kafka_config, len(records))
