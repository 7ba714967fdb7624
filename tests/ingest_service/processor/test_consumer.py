"""The background poller against the real broker: bounded batches, every record handed over
once, and a rebalance with records queued that discards them and resumes from the lake."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator

import polars as pl
import pytest

from ingest_service.processor.consumer import Poller
from ingest_service.processor.processor import Processor
from tests.ingest_service.processor.conftest import T0, encode, event, produce, stored_offsets
from workbench.config import Config

pytestmark = pytest.mark.integration


@pytest.fixture
def config(kafka_config: Config) -> Config:
    return dataclasses.replace(kafka_config, processor_group=f"poller-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def pollers() -> Iterator[list[Poller]]:
    started: list[Poller] = []
    yield started
    for poller in started:
        poller.close()


def _start(config: Config, pollers: list[Poller], *, max_queued: int) -> tuple[Poller, Processor]:
    processor = Processor(config)
    poller = Poller(config, processor, max_queued=max_queued)
    poller.start()
    pollers.append(poller)
    return poller, processor


def _records(count: int, first: int = 0) -> list[tuple[bytes | None, bytes]]:
    return [
        (f"d{i % 50}".encode(), encode(event(device=f"d{i % 50}", seq=i, ts=T0)))
        for i in range(first, first + count)
    ]


def _step(poller: Poller, processor: Processor, *, max_events: int) -> int:
    batch = poller.take(
        max_events=max_events, deadline=time.monotonic() + 0.2, stop=threading.Event()
    )
    last: dict[int, int] = {}
    try:
        assert len(batch) <= max_events
        if len(batch):
            last = processor.process(batch).last_offsets
    finally:
        poller.done(last)
    return len(batch)


def _drain(config: Config, steps: list[tuple[Poller, Processor]], expected: int) -> None:
    partitions = list(range(config.topic_partitions))
    deadline = time.monotonic() + 90
    while sum(o + 1 for o in stored_offsets(config, partitions).values()) < expected:
        assert time.monotonic() < deadline, stored_offsets(config, partitions)
        for poller, processor in steps:
            _step(poller, processor, max_events=700)


def _assert_each_record_once(config: Config, produced: int) -> None:
    stored = pl.read_delta(f"{config.lake}/telemetry")
    rejected = pl.read_delta(f"{config.lake}/telemetry_rejected")
    assert rejected.height == 0, rejected["reason"].value_counts()
    assert stored.height == produced
    assert stored.select("source_partition", "source_offset").unique().height == produced


def test_batches_are_bounded_and_every_record_is_handed_over_once(
    config: Config, pollers: list[Poller]
) -> None:
    produce(config, _records(5_000))
    poller, processor = _start(config, pollers, max_queued=1_000)
    _drain(config, [(poller, processor)], 5_000)
    _assert_each_record_once(config, 5_000)
    assert poller.first_record_at is not None


@pytest.mark.slow
def test_rebalance_with_records_queued_resumes_from_the_lake(
    config: Config, pollers: list[Poller]
) -> None:
    produce(config, _records(6_000))
    first, first_proc = _start(config, pollers, max_queued=3_000)
    deadline = time.monotonic() + 60
    while sum(o + 1 for o in stored_offsets(config, [0, 1, 2, 3, 4, 5, 6, 7]).values()) < 1_000:
        assert time.monotonic() < deadline
        _step(first, first_proc, max_events=500)
    # a second member joins while the first has records queued and not yet stored
    second, second_proc = _start(config, pollers, max_queued=3_000)
    produce(config, _records(4_000, first=6_000))
    _drain(config, [(first, first_proc), (second, second_proc)], 10_000)
    _assert_each_record_once(config, 10_000)
    owned = [set(first_proc.checkpoint.offsets), set(second_proc.checkpoint.offsets)]
    assert all(owned) and not owned[0] & owned[1]


def _smoke(device: str, seq: int, on: bool) -> tuple[bytes, bytes]:
    value = encode(event(device=device, seq=seq, device_type="smoke", readings={"smoke": on}))
    return device.encode(), value


def test_a_detector_turning_on_ends_the_wait_for_the_batch(
    config: Config, pollers: list[Poller]
) -> None:
    """The member tells the poller when a detector turns on, and the batch is taken at
    once instead of at the end of the interval; a detector that stays on does not."""
    produce(config, _records(200))
    poller, processor = _start(config, pollers, max_queued=10_000)
    _drain(config, [(poller, processor)], 200)

    def take(stop_after_s: float) -> tuple[int, bool]:
        """One take with a 10-minute deadline, stopped after ``stop_after_s``: its record
        count, and whether it returned for the stop (not for a detector turning on)."""
        stop = threading.Event()
        timer = threading.Timer(stop_after_s, stop.set)
        timer.start()
        try:
            batch = poller.take(
                max_events=10_000,
                deadline=time.monotonic() + 600,
                stop=stop,
                urgent_from=time.monotonic(),
            )
        finally:
            timer.cancel()
        last: dict[int, int] = {}
        try:
            if len(batch):
                last = processor.process(batch).last_offsets
        finally:
            poller.done(last)
        return len(batch), stop.is_set()

    # 60 s: far beyond the member's 0.2 s between fetches
    produce(config, [_smoke("s-1", 1, True)])
    assert take(stop_after_s=60) == (1, False)  # returned for the detector
    produce(config, [_smoke("s-1", 2, True)])  # still on: nothing cuts the wait short
    assert take(stop_after_s=3) == (1, True)  # returned for the stop
