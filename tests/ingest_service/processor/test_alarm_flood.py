"""A broken detector's flood of alarms, through the processor on real Delta tables:
at most the rule's limit raised per hour, the rest counted, the same across a restart."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.processor import Processor
from ingest_service.processor.windows import FixedClock
from tests.ingest_service.processor.conftest import T0, encode, event
from tests.workbench.alarms.support import workbench
from workbench.config import Config

pytestmark = pytest.mark.integration


def _flapping(minutes: range) -> list[bytes]:
    """Smoke, no smoke, smoke … once a minute: a detector that is broken, not a fire."""
    return [
        encode(
            event(
                "smoke-1",
                m + 1,
                T0 + dt.timedelta(minutes=m),
                device_type="smoke",
                readings={"smoke": m % 2 == 0},
            )
        )
        for m in minutes
    ]


def test_a_flapping_detector_raises_six_alarms_an_hour_once_each_across_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    config = Config.from_env(env)
    clock = FixedClock(T0 + dt.timedelta(minutes=41))
    values = _flapping(range(40))
    processor = Processor(config, clock=clock)
    processor.assign([0])
    counted = 0
    for start in range(0, 40, 5):
        if start == 25:  # a crash, and a new owner that rebuilds from the lake
            counted += processor.alarms.suppressed
            processor = Processor(config, clock=clock)
            processor.assign([0])
        batch = values[start : start + 5]
        offsets = list(range(start, start + len(batch)))
        processor.process(RecordBatch(batch, [b"smoke-1"] * len(batch), [0] * len(batch), offsets))
    counted += processor.alarms.suppressed

    alarms = pl.read_delta(f"{config.lake}/alarms").sort("raised_at")
    minutes = [(t - T0).total_seconds() / 60 for t in alarms["raised_at"]]
    assert minutes == [0, 2, 4, 6, 8, 10]  # once each, none after the limit
    assert alarms["ended_at"].null_count() == 0
    assert counted == 14  # the raises of minutes 12, 14, … 38: each counted once
    limited = [h for h in json.loads(alarms["history"][5]) if h.get("limit")]
    assert "flood limit: 6 raises in an hour" in limited[0]["limit"]

    shown = workbench(monkeypatch, capsys, env, "alarms", "show", alarms["alarm_id"][5])
    assert shown.returncode == 0, shown.stderr
    assert "until 2026-11-27T06:30:00Z further raises of this rule" in shown.stdout
