"""Alarms exactly once through real crashes: processor subprocesses SIGKILLed while they
record alarms, the real broker, real Delta tables."""

from __future__ import annotations

import datetime as dt
import json
import random
import time

import polars as pl
import pytest

from tests.ingest_service.processor.conftest import (
    encode,
    event,
    produce,
    stored_offsets,
    wait_drained,
)
from workbench.alarms import alarms
from workbench.config import Config
from workbench.tenancy.principal import Principal

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DETECTORS = 16
SENSORS = 16
MINUTES = 70


def _stream(start: dt.datetime) -> list[tuple[bytes | None, bytes]]:
    """One event per device a minute, in time order. Detector i sees smoke during minutes
    [10 + i, 40 + i); sensor i reads 35 °C during [20, 50 + i) — above the default
    too-hot rule (30 °C for 10 minutes) from minute 30 on."""
    records = []
    for m in range(MINUTES):
        ts = start + dt.timedelta(minutes=m)
        for i in range(DETECTORS):
            device = f"smoke-{i:02d}"
            e = event(
                device,
                m + 1,
                ts,
                building=f"b-{i % 3}",
                device_type="smoke",
                readings={"smoke": 10 + i <= m < 40 + i},
            )
            records.append((device.encode(), encode(e)))
        for i in range(SENSORS):
            device = f"env-{i:02d}"
            hot = 20 <= m < 50 + i
            readings = {"temperature": 35.0 if hot else 21.0, "humidity": 45.0, "light": 300.0}
            e = event(device, m + 1, ts, building=f"b-{i % 3}", readings=readings)
            records.append((device.encode(), encode(e)))
    return records


def test_every_alarm_and_transition_exactly_once_through_sigkills(
    kafka_config: Config, start_processor: object
) -> None:
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(hours=3)
    records = _stream(start)
    portions = [records[i * len(records) // 3 : (i + 1) * len(records) // 3] for i in range(3)]
    partitions = list(range(kafka_config.topic_partitions))
    rng = random.Random(5)
    for kill in range(2):  # each start costs seconds: two kills, kept lean
        produce(kafka_config, portions[kill])
        proc = start_processor(kafka_config, WORKBENCH_COMMIT_MAX_EVENTS="100")  # type: ignore[operator]
        before = sum(stored_offsets(kafka_config, partitions).values())
        deadline = time.monotonic() + 60
        while sum(stored_offsets(kafka_config, partitions).values()) == before:
            assert proc.popen.poll() is None, proc.log_tail()
            assert time.monotonic() < deadline, f"no progress before kill {kill}"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
    produce(kafka_config, portions[2])
    final = start_processor(kafka_config)  # type: ignore[operator]
    wait_drained(kafka_config, timeout=120, alive=[final], expected=len(records))
    assert final.terminate() == 0

    stored = alarms(kafka_config, principal=Principal.system())
    # one alarm per device and episode: no duplicate, none missing
    assert stored.height == DETECTORS + SENSORS
    assert stored["alarm_id"].n_unique() == stored.height
    got = {
        (r["device_id"], r["rule"]): (r["raised_at"], r["ended_at"], r["cleared_by"])
        for r in stored.iter_rows(named=True)
    }
    want = {}
    for i in range(DETECTORS):
        at = start + dt.timedelta(minutes=10 + i), start + dt.timedelta(minutes=40 + i)
        want[(f"smoke-{i:02d}", "smoke")] = (*at, "rule")
    for i in range(SENSORS):
        at = start + dt.timedelta(minutes=30), start + dt.timedelta(minutes=50 + i)
        want[(f"env-{i:02d}", "too-hot")] = (*at, "rule")
    assert got == want
    # every transition recorded once: raised, then cleared
    for row in stored.iter_rows(named=True):
        actions = [h["action"] for h in json.loads(row["history"])]
        assert actions == ["raised", "cleared"], (row["device_id"], row["history"])
    # in the right building and with the rule's severity
    assert dict(stored.group_by("rule").agg(pl.col("severity").first()).iter_rows()) == {
        "smoke": "critical",
        "too-hot": "major",
    }
    assert stored.filter(pl.col("device_id") == "smoke-04")["building_id"].to_list() == ["b-1"]
