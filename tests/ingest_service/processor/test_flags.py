"""Which chunks cut the processor's batch short: a smoke or intrusion detector turning on
(pure logic on parsed chunks; the member and the poller are tested against the broker in
test_consumer.py)."""

from __future__ import annotations

import pyarrow as pa

from ingest_service.processor.fetcher.flags import FlagWatch
from ingest_service.processor.ndjson import parse
from ingest_service.processor.packed import Packed
from tests.ingest_service.processor.conftest import encode, event


def _chunk(*readings: tuple[str, dict[str, object]]) -> pa.Table:
    """The member's parse of events from (device, readings)."""
    return parse(Packed.of([encode(event(device=d, readings=r)) for d, r in readings]))


def test_a_detector_turning_on_is_seen_once_until_it_turns_off() -> None:
    watch = FlagWatch()
    assert not watch.turned_on(_chunk(("s1", {"smoke": False}), ("e1", {"temperature": 21.0})))
    assert watch.turned_on(_chunk(("s1", {"smoke": True})))
    assert not watch.turned_on(_chunk(("s1", {"smoke": True}), ("s1", {"smoke": True})))
    assert not watch.turned_on(_chunk(("s1", {"smoke": False})))
    assert watch.turned_on(_chunk(("s1", {"smoke": True})))


def test_a_device_first_seen_on_turns_on() -> None:
    """After a restart or a rebalance the member knows no device: the first reading that
    is on counts (one early batch too many at worst, never one too few)."""
    assert FlagWatch().turned_on(_chunk(("i1", {"intrusion": True})))


def test_each_flag_and_device_is_followed_on_its_own() -> None:
    watch = FlagWatch()
    assert watch.turned_on(_chunk(("s1", {"smoke": True})))
    assert watch.turned_on(_chunk(("s2", {"smoke": True})))
    assert watch.turned_on(_chunk(("i1", {"intrusion": True})))
    # s1 on again, s2 off: nothing new turns on
    assert not watch.turned_on(_chunk(("s1", {"smoke": True}), ("s2", {"smoke": False})))
    assert watch.turned_on(_chunk(("s2", {"smoke": True})))


def test_a_chunk_that_turns_a_detector_off_then_on_again_counts() -> None:
    watch = FlagWatch()
    assert watch.turned_on(_chunk(("s1", {"smoke": True})))
    assert watch.turned_on(_chunk(("s1", {"smoke": False}), ("s1", {"smoke": True})))
    # and one that turns it on then off leaves it off
    assert not watch.turned_on(_chunk(("s1", {"smoke": False})))
    assert watch.turned_on(_chunk(("s1", {"smoke": True}), ("s1", {"smoke": False})))
    assert watch.turned_on(_chunk(("s1", {"smoke": True})))


def test_readings_the_decode_rejects_never_cut_a_batch_short() -> None:
    watch = FlagWatch()
    assert not watch.turned_on(None)  # the member's parse failed
    assert not watch.turned_on(_chunk(("s1", {"smoke": "yes"})))
    assert not watch.turned_on(_chunk(("s1", {"smoke": 1})))
    assert not watch.turned_on(pa.table({"device_id": ["s1"], "smoke": [True]}))
    assert not watch.turned_on(pa.table({"device_id": [1], "readings": [{"smoke": True}]}))
