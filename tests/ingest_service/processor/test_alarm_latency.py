"""A detector turning on does not wait for the processor's interval: its batch is taken
early, so the alarm is in the lake long before the batch would otherwise be stored."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from ingest_service.processor.main import run
from tests.ingest_service.processor.conftest import encode, event, produce
from workbench.config import Config
from workbench.lake.tables import table_uri

pytestmark = pytest.mark.integration


def _alarms(config: Config) -> pl.DataFrame:
    uri = table_uri(config, "alarms")
    if not (Path(uri) / "_delta_log" / f"{0:020}.json").exists():  # no batch stored yet
        return pl.DataFrame()
    return pl.read_delta(uri)  # any other failure to read is the test's to report


def test_a_smoke_alarm_is_stored_without_waiting_for_a_ten_minute_interval(
    kafka_config: Config,
) -> None:
    config = dataclasses.replace(kafka_config, commit_interval=600.0)
    stop = threading.Event()
    processor = threading.Thread(
        target=run, args=(config,), kwargs={"stop": stop, "maintain": False}, daemon=True
    )
    processor.start()
    try:
        # the detector turns on, off, on …: the member looks at records only once it has
        # caught up after joining the group, and a turn on after that is what counts
        deadline = time.monotonic() + 90  # far below the 600 s interval
        for seq in itertools.count(1):
            on = seq % 2 == 1
            now = dt.datetime.now(dt.UTC)
            produce(
                config,
                [
                    (
                        b"smoke-1",
                        encode(
                            event("smoke-1", seq, now, device_type="smoke", readings={"smoke": on})
                        ),
                    )
                ],
            )
            time.sleep(1.0)
            alarms = _alarms(config)
            if alarms.height:
                break
            assert time.monotonic() < deadline, "no alarm before the interval ended"
        assert alarms["device_id"].to_list()[0] == "smoke-1"
        assert alarms["rule"].to_list()[0] == "smoke"
    finally:
        stop.set()
        processor.join(timeout=60)
    assert not processor.is_alive()
