"""A building's rejected-event rate through the processor, on real Delta tables (records
handed in directly, as polled): the gateway's refusal notes and the processor's own
refusals are stamped with their building, counted per building and minute in event
time, and raise one alarm for that building of that tenant, once, across a crash."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.processor import BatchResult, Processor
from ingest_service.processor.windows import FixedClock
from tests.ingest_service.processor.conftest import T0, encode, event
from workbench.alarms import rulebook
from workbench.config import Config
from workbench.tenancy.principal import Principal

pytestmark = pytest.mark.integration


def _iso(at: dt.datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def note(device: str, at: dt.datetime, *, tenant: str = "t-1", building: str = "b-1") -> bytes:
    """The gateway's note of a refusal of an authenticated device (gateway/core.py)."""
    return json.dumps(
        {
            "device_id": device,
            "rejected": "invalid",
            "status": 422,
            "received_at": _iso(at),
            "tenant_id": tenant,
            "building_id": building,
            "floor": 1,
            "room": "1.01",
            "device_type": "environment",
            "protocol": "http",
        }
    ).encode()


class Log:
    """Partition 0's records, handed to whichever processor owns it now."""

    def __init__(self, config: Config, clock: FixedClock) -> None:
        self.config, self.clock, self.offset = config, clock, 0
        self.processor = self.restart()

    def restart(self) -> Processor:
        self.processor = Processor(self.config, clock=self.clock)
        self.processor.assign([0])
        return self.processor

    def send(self, values: list[bytes]) -> BatchResult:
        offsets = list(range(self.offset, self.offset + len(values)))
        self.offset += len(values)
        return self.processor.process(
            RecordBatch(values, [b"k"] * len(values), [0] * len(values), offsets)
        )


def _minute(m: int, seq: int) -> list[bytes]:
    """Minute ``m``: 25 refusals of b-1's broken device (one every 2 s), one that the
    processor itself refuses (out of range), and one good reading of each of two
    devices in other buildings, one of another tenant."""
    at = T0 + dt.timedelta(minutes=m)
    out = [note("dev-bad", at + dt.timedelta(seconds=2 * i)) for i in range(25)]
    out.append(
        encode(event("dev-bad", seq, at, readings={"temperature": 999.0}, received_at=_iso(at)))
    )
    out.append(encode(event("dev-ok", seq, at, building="b-2")))
    out.append(encode(event("dev-other", seq, at, building="b-9", tenant_id="t-2")))
    return out


def test_the_gateways_refusals_are_counted_apart_from_the_processors_own(
    tmp_path: Path,
) -> None:
    # the heartbeat and `workbench status` show these two figures side by side: a
    # gateway note is not a record the processor found wrong
    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    log = Log(config, FixedClock(T0 + dt.timedelta(minutes=30)))
    first = log.send(_minute(0, 1))
    assert (first.stored, first.rejected, first.refused_at_gateway) == (2, 1, 25)
    # the same reading again: a duplicate is the processor's refusal too
    again = log.send([encode(event("dev-ok", 1, T0, building="b-2"))])
    assert (again.stored, again.rejected, again.duplicates, again.refused_at_gateway) == (
        0,
        1,
        1,
        0,
    )


def test_a_device_refused_again_and_again_raises_one_alarm_for_its_building_only(
    tmp_path: Path,
) -> None:
    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    log = Log(config, FixedClock(T0 + dt.timedelta(minutes=30)))
    # t-2's rule would fire on a single refusal: it must never see t-1's
    rulebook.set_rules(
        config,
        "t-2",
        '[[rule]]\nname = "any-refusal"\nkind = "rejected_rate"\nabove = 0\nper = "1m"\n'
        'severity = "critical"\n',
        source="t-2.toml",
        principal=Principal.system("test"),
    )
    seq = 1
    for m in range(0, 7):  # 26 refused a minute for 7 minutes: over 20 for 5 minutes
        if m == 6:  # a crash between batches: the new owner rebuilds from the lake
            log.restart()
        log.send(_minute(m, seq))
        seq += 1
    for m in range(7, 16):  # then only good readings: the minutes close under the limit
        at = T0 + dt.timedelta(minutes=m)
        log.send([encode(event("dev-ok", seq, at, building="b-2"))])
        seq += 1

    rejected = pl.read_delta(f"{config.lake}/telemetry_rejected")
    attributed = rejected.filter(pl.col("building_id") == "b-1")
    assert attributed.height == 7 * 26
    assert set(attributed["tenant_id"]) == {"t-1"}
    assert attributed.filter(pl.col("reason") == "gateway: invalid").height == 7 * 25

    alarms = pl.read_delta(f"{config.lake}/alarms")
    assert alarms.select("tenant_id", "building_id", "device_id", "device_type", "rule").rows() == [
        ("t-1", "b-1", "b-1", "building", "rejecting")
    ]
    (row,) = alarms.iter_rows(named=True)
    # minute 0's 21st refusal began it (at 0:38: two at 0:00, then one every 2 s);
    # minute 5's 21st is 5 minutes later
    assert row["raised_at"] == T0 + dt.timedelta(minutes=5, seconds=38)
    assert row["raised_value"] == 26
    # minute 7 had none: it closed under the limit once the watermark passed 8:00 + grace
    assert row["ended_at"] == T0 + dt.timedelta(minutes=8)
    assert [h["action"] for h in json.loads(row["history"])] == ["raised", "cleared"]

    # a new owner reading all of it again records nothing twice
    log.restart()
    again = pl.read_delta(f"{config.lake}/alarms")
    assert (
        again.select("alarm_id", "ended_at").rows() == alarms.select("alarm_id", "ended_at").rows()
    )


def test_counting_a_building_less_often_does_not_move_its_alarm_in_event_time(
    tmp_path: Path,
) -> None:
    """Refusals in every batch, 2 s apart: the building is counted from the lake at most
    every 10 s of event time, yet the alarm is raised at the refusal that crossed."""
    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    rulebook.set_rules(
        config,
        "t-1",
        '[[rule]]\nname = "rejecting"\nkind = "rejected_rate"\nabove = 5\nper = "1m"\n'
        'severity = "minor"\n',
        source="t-1.toml",
        principal=Principal.system("test"),
    )
    log = Log(config, FixedClock(T0 + dt.timedelta(minutes=5)))
    counted: list[int] = []
    rates = log.processor.alarms.rates
    real = rates.evaluate
    rates.evaluate = lambda b: (counted.append(len(set(b))), real(b))[1]  # type: ignore[method-assign]
    for i in range(20):
        log.send([note("dev-bad", T0 + dt.timedelta(seconds=2 * i + 1))])
    alarms = pl.read_delta(f"{config.lake}/alarms")
    assert alarms["raised_at"].to_list() == [T0 + dt.timedelta(seconds=11)]  # the 6th
    assert sum(counted) < 20 / 2  # b-1 counted every 10 s of event time, not per batch
