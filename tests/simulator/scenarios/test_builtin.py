"""Each scenario's observable effect at the generator level (the lake-level effects are
checked by the end-to-end tests once the gateway and the processor run)."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import numpy as np
import polars as pl
import pytest

from simulator.fleet import Fleet
from simulator.scenarios import load_scenario, parse_scenarios, scenario_names
from simulator.scenarios.builtin import (
    DeprovisionDuringRun,
    FaultySensors,
    Fire,
    Heatwave,
    Intrusion,
    LateAndDuplicate,
    Unprovisioned,
)
from workbench.exceptions import SimulatorError

START = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
FLEET = Fleet.generate(3000, seed=4)


def run(spec: str, ticks: int = 6, fleet: Fleet = FLEET) -> list[pl.DataFrame]:
    stream = fleet.ticks(START, interval_s=60, scenarios=parse_scenarios(spec))
    return list(itertools.islice(stream, ticks))


def test_registry_and_parsing() -> None:
    assert set(scenario_names()) == {
        "normal",
        "heatwave",
        "fire",
        "intrusion",
        "faulty-sensors",
        "late-and-duplicate",
        "unprovisioned",
        "deprovision-during-run",
        "burst",
    }
    for name in scenario_names():
        s = load_scenario(name)
        assert s.name == name and s.summary and s.dashboard and s.__doc__
    assert parse_scenarios("normal") == []
    with pytest.raises(SimulatorError, match="unknown scenario 'tornado'"):
        parse_scenarios("heatwave,tornado")


def test_normal_is_plain_physics() -> None:
    normal = pl.concat(run("normal"))
    assert not normal["smoke"].any() and not normal["intrusion"].any()
    assert (normal["status"] == 0).all()
    assert normal.select(pl.struct("device", "seq").is_duplicated().any()).item() is False
    assert normal.filter(pl.col("kind") == 0)["temperature"].max() < 30  # type: ignore[operator]


def test_heatwave_raises_one_building() -> None:
    hot_ticks = run("heatwave")
    base, hot = pl.concat(run("normal")), pl.concat(hot_ticks)
    target = Heatwave().target(FLEET)

    def mean_by_building(frame: pl.DataFrame) -> dict[int, float]:
        rows = (
            frame.filter(pl.col("kind") == 0).group_by("building").agg(pl.col("temperature").mean())
        )
        return dict(rows.iter_rows())

    before, after = mean_by_building(base), mean_by_building(hot)
    assert after[target] - before[target] > 3
    others = [b for b in before if b != target]
    assert all(after[b] == pytest.approx(before[b]) for b in others)
    # ... and keeps climbing
    first, last = (
        f.filter((pl.col("building") == target) & (pl.col("kind") == 0))["temperature"].mean()
        for f in (hot_ticks[0], hot_ticks[-1])
    )
    assert last > first + 1  # type: ignore[operator]


def test_fire_spreads_on_one_floor() -> None:
    ticks = run("fire", ticks=5)
    b, f, detectors = Fire().target(FLEET)
    assert len(detectors) >= 3
    alarms = [t.filter(pl.col("smoke")) for t in ticks]
    counts = [a.height for a in alarms]
    assert counts[0] >= 1 and counts == sorted(counts) and counts[-1] > counts[0]
    together = pl.concat(alarms)
    assert set(together["building"].to_list()) == {b}
    assert set(together["floor"].to_list()) == {f}
    assert (together["kind"] == 1).all()


def test_intrusion_in_one_building() -> None:
    frames = pl.concat(run("intrusion", ticks=8))
    b, _sensors = Intrusion().target(FLEET)
    tripped = frames.filter(pl.col("intrusion"))
    assert tripped.height >= 3
    assert set(tripped["building"].to_list()) == {b}
    assert (tripped["kind"] == 2).all()
    assert tripped["device"].n_unique() >= 2  # the intruder moves


def test_faulty_sensors_send_nan_stuck_and_out_of_range() -> None:
    frames = pl.concat(run("faulty-sensors", ticks=3))
    faulty = FaultySensors().faulty(FLEET)
    assert len(faulty) >= 3
    env = frames.filter(pl.col("kind") == 0)
    assert env["temperature"].is_nan().sum() > 0
    assert env.filter(pl.col("temperature") > 100).height > 0
    assert env.filter(pl.col("humidity") > 100).height > 0
    stuck = env.filter(pl.col("device") == int(faulty[0]))
    assert stuck["temperature"].n_unique() == 1 and stuck.height == 3
    healthy = env.filter(~pl.col("device").is_in(pl.Series(faulty.astype(np.uint32)).implode()))
    assert not healthy["temperature"].is_nan().any()
    # NaN goes on the wire as null: the record stays valid JSON.
    values = [
        json.loads(v) for _, v in FLEET.kafka_records(START, 3000, scenarios=[FaultySensors()])
    ]
    assert any(v["readings"].get("temperature", 0) is None for v in values)


def test_late_and_duplicate_resends_same_seq_and_skews_clocks() -> None:
    base = pl.concat(run("normal", ticks=3))
    odd = pl.concat(run("late-and-duplicate", ticks=3))
    dup = odd.filter(pl.struct("device", "seq").is_duplicated())
    assert dup.height > 0
    # A resend is the same event: same ts and readings, sent later.
    first_copy = dup.group_by("device", "seq").agg(
        pl.col("ts").n_unique().alias("ts"), pl.col("temperature").n_unique().alias("t")
    )
    assert (first_copy["ts"] == 1).all() and (first_copy["t"] == 1).all()
    unique = odd.unique(["device", "seq"], keep="first", maintain_order=True)
    joined = base.join(unique, on=["device", "seq"], suffix="_odd")
    shift = (joined["ts_odd"] - joined["ts"]).to_numpy()
    devices, _skew = LateAndDuplicate().skewed(FLEET)
    assert len(devices) > 0
    assert (shift < -60_000).sum() > 0  # late events and clocks running behind
    assert (shift > 0).sum() > 0  # clocks running ahead
    assert (joined["send_odd"] == joined["send"]).all()
    # Sending order is kept.
    assert odd["send"].is_sorted()


def test_unprovisioned_and_deprovisioned_are_marked_and_left_out_of_kafka() -> None:
    ticks = run("unprovisioned,deprovision-during-run", ticks=4)
    bad = set(Unprovisioned().devices(FLEET).tolist())
    gone = set(DeprovisionDuringRun().devices(FLEET).tolist())
    assert bad and gone
    for i, t in enumerate(ticks):
        marked = set(t.filter(pl.col("status") == 1)["device"].to_list())
        assert marked == bad
        later = set(t.filter(pl.col("status") == 2)["device"].to_list())
        assert later == (gone - bad if i >= 2 else set())
    ids = {FLEET.device_ids[i] for i in bad}
    scen = parse_scenarios("unprovisioned")
    keys = {k.decode() for k, _ in FLEET.kafka_records(START, 6000, scenarios=scen)}
    assert keys and not keys & ids


def test_burst_fires_every_device_at_once() -> None:
    ticks = run("burst", ticks=3)
    assert ticks[0]["send"].n_unique() > 1000
    assert ticks[1]["send"].n_unique() == 1 and ticks[1].height == len(FLEET)
    assert ticks[2]["send"].n_unique() > 1000
    # Per-device event times still advance with seq.
    both = pl.concat(ticks).sort("device", "seq")
    assert both.group_by("device").agg(pl.col("ts").is_sorted().alias("ok"))["ok"].all()


def test_scenarios_compose_and_stay_deterministic() -> None:
    a = pl.concat(run("heatwave,fire,late-and-duplicate", ticks=3))
    b = pl.concat(run("heatwave,fire,late-and-duplicate", ticks=3))
    assert a.equals(b)
    assert a["smoke"].any()
    assert a.select(pl.struct("device", "seq").is_duplicated().any()).item()
