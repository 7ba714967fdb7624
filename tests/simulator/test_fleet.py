"""The fleet model and its Kafka record stream: determinism, structure and the record format."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from collections import Counter

import polars as pl
import pytest

from simulator.fleet import DEVICE_TYPES, Fleet
from workbench.events import DEVICE_TYPES as EVENT_DEVICE_TYPES
from workbench.events import KNOWN_READINGS, format_ts
from workbench.exceptions import SimulatorError

START = dt.datetime(2026, 11, 27, 5, 30, tzinfo=dt.UTC)
RECORD_KEYS = {
    "device_id",
    "seq",
    "ts",
    "received_at",
    "tenant_id",
    "building_id",
    "floor",
    "room",
    "device_type",
    "protocol",
    "readings",
}


def parse_ts(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    value = dt.datetime.fromisoformat(text)
    assert value.utcoffset() == dt.timedelta(0)
    assert format_ts(value) == text  # exactly the gateway's formatting
    return value


def test_same_seed_same_fleet_and_bytes() -> None:
    a, b = Fleet.generate(2000, seed=7), Fleet.generate(2000, seed=7)
    assert a.devices == b.devices
    assert list(a.kafka_records(START, 5000)) == list(b.kafka_records(START, 5000))


def test_other_seed_other_fleet() -> None:
    a, b = Fleet.generate(2000, seed=1), Fleet.generate(2000, seed=2)
    assert [d.floor for d in a.devices] != [d.floor for d in b.devices]
    assert list(a.kafka_records(START, 100)) != list(b.kafka_records(START, 100))


def test_hierarchy_ids_and_mix() -> None:
    fleet = Fleet.generate(4000, seed=0, tenants=3)
    devices = fleet.devices
    assert len(devices) == 4000 and len(fleet) == 4000
    assert devices[0].device_id == "dev-000001" and devices[-1].device_id == "dev-004000"
    assert len({d.device_id for d in devices}) == 4000
    assert [b.building_id for b in fleet.buildings] == [
        f"b-{i:04d}" for i in range(1, len(fleet.buildings) + 1)
    ]
    assert fleet.tenant_ids == ("t-0001", "t-0002", "t-0003")
    assert {d.tenant_id for d in devices} == set(fleet.tenant_ids)
    floors = {b.building_id: b.floors for b in fleet.buildings}
    for d in devices:
        assert 0 <= d.floor < floors[d.building_id]
        assert d.room.startswith(f"{d.floor}.")
        assert d.device_type in EVENT_DEVICE_TYPES
        assert d.protocol == "http" or (d.protocol == "fbk1" and d.device_type == "environment")
    kinds = Counter(d.device_type for d in devices)
    assert set(kinds) == set(DEVICE_TYPES)
    assert kinds["environment"] > kinds["smoke"] > kinds["intrusion"] > 0
    assert 0 < sum(d.protocol == "fbk1" for d in devices) < kinds["environment"] * 0.2
    assert fleet.frame.height == 4000
    assert fleet.frame.row(0, named=True)["device_id"] == "dev-000001"


def test_rejects_bad_arguments() -> None:
    with pytest.raises(SimulatorError):
        Fleet.generate(0)
    with pytest.raises(SimulatorError):
        next(Fleet.generate(3).kafka_records(dt.datetime(2026, 1, 1), 1))  # noqa: DTZ001


def test_records_parse_back_in_the_gateway_format() -> None:
    fleet = Fleet.generate(500, seed=3)
    by_id = {d.device_id: d for d in fleet.devices}
    records = list(fleet.kafka_records(START, 1500))
    assert len(records) == 1500
    for key, value in records:
        event = json.loads(value)
        assert set(event) == RECORD_KEYS
        assert key == event["device_id"].encode()
        device = by_id[event["device_id"]]
        assert (event["tenant_id"], event["building_id"], event["floor"], event["room"]) == (
            device.tenant_id,
            device.building_id,
            device.floor,
            device.room,
        )
        assert (event["device_type"], event["protocol"]) == (device.device_type, device.protocol)
        assert isinstance(event["seq"], int) and event["seq"] >= 1
        ts, received = parse_ts(event["ts"]), parse_ts(event["received_at"])
        assert dt.timedelta(0) < received - ts < dt.timedelta(seconds=1)
        readings = event["readings"]
        expected = {
            "environment": {"temperature", "humidity", "light"},
            "smoke": {"smoke", "battery"},
            "intrusion": {"intrusion"},
        }[device.device_type]
        assert set(readings) == expected
        for name, value_ in readings.items():
            kind = KNOWN_READINGS.get(name, float)
            assert type(value_) is kind, (name, value_)
        if device.device_type == "environment":
            assert 10 < readings["temperature"] < 35
            assert 5 <= readings["humidity"] <= 95
            assert readings["light"] >= 0
            if device.protocol == "fbk1":  # what the FBK1 wire format can carry
                assert readings["light"] == math.floor(readings["light"])
                assert round(readings["temperature"], 1) == readings["temperature"]


def test_each_device_fires_once_per_interval_with_jitter_in_time_order() -> None:
    fleet = Fleet.generate(300, seed=5)
    events = [json.loads(v) for _, v in fleet.kafka_records(START, 900, interval_s=30)]
    times = [parse_ts(e["ts"]) for e in events]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + dt.timedelta(seconds=90)
    per_device: dict[str, list[dict[str, object]]] = {}
    for e in events:
        per_device.setdefault(str(e["device_id"]), []).append(e)
    assert len(per_device) == 300
    for seq_list in per_device.values():
        assert [e["seq"] for e in seq_list] == [1, 2, 3]
        gaps = {
            parse_ts(str(b["ts"])) - parse_ts(str(a["ts"])) for a, b in itertools.pairwise(seq_list)
        }
        assert gaps == {dt.timedelta(seconds=30)}
    # Start-up jitter: first events spread over the interval, not all at once.
    first = sorted(parse_ts(str(v[0]["ts"])) for v in per_device.values())
    assert first[-1] - first[0] > dt.timedelta(seconds=25)
    assert len(set(first)) > 250


def test_physics_daily_cycle() -> None:
    """Light is higher at local noon than at night; offices are warmer when occupied."""
    fleet = Fleet.generate(400, seed=11, tenants=1)  # tenant 1: UTC
    noon = dt.datetime(2026, 6, 10, 12, 0, tzinfo=dt.UTC)  # a Wednesday
    night = dt.datetime(2026, 6, 10, 3, 0, tzinfo=dt.UTC)

    def tick(at: dt.datetime) -> pl.DataFrame:
        return next(fleet.ticks(at, interval_s=60)).filter(pl.col("kind") == 0)

    day, dark = tick(noon), tick(night)
    assert day["light"].mean() > 300 > 50 > dark["light"].mean()  # type: ignore[operator]
    assert day["temperature"].mean() > dark["temperature"].mean() + 1  # type: ignore[operator]


def test_count_zero_and_exact_counts() -> None:
    fleet = Fleet.generate(50, seed=0)
    assert list(fleet.kafka_records(START, 0)) == []
    assert len(list(fleet.kafka_records(START, 123))) == 123
