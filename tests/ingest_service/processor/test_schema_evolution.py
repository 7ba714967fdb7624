"""A reading promoted from ``extra`` to a column while the processor runs: new events use
the column, no event is lost or stored twice across the change (real broker, real Delta,
the real processor loop, the real CLI)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from ingest_service.processor import main
from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.processor import BatchResult, Processor
from ingest_service.processor.windows import FixedClock
from tests.conftest import run_cli
from tests.ingest_service.processor.conftest import (
    T0,
    encode,
    event,
    processor_env,
    produce,
    stored_offsets,
    wait_drained,
)
from workbench.config import Config
from workbench.lake.promote import promote
from workbench.query.engine import QuerySession
from workbench.tenancy.principal import Principal

ADMIN = Principal.system("admin-ann")


def _event(seq: int, *, device: str = "", ts: dt.datetime = T0) -> dict[str, object]:
    device = device or f"d{seq % 40}"
    return event(
        device=device,
        seq=seq,
        ts=ts,
        building=f"b-{seq % 5}",
        readings={"temperature": 20.0, "co2": 400 + seq},
    )


def test_a_commit_that_meets_a_promotion_is_redone_with_the_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The promotion commits after the processor checked the table's columns and before
    its own commit: Delta refuses the commit, the batch is split again and committed."""
    import deltalake

    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )
    processor = Processor(config, clock=FixedClock(T0 + dt.timedelta(minutes=10)))
    processor.assign([0])
    values = [encode(_event(s)) for s in range(10)]
    processor.process(RecordBatch(values, [None] * 10, [0] * 10, list(range(10))))

    real_write = deltalake.write_deltalake
    attempts: list[int] = []

    def promote_then_write(table: Any, data: Any, **kwargs: Any) -> Any:
        attempts.append(data.num_columns)
        if len(attempts) == 1:
            promote(config, "co2", type="bigint", principal=ADMIN)
        return real_write(table, data, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", promote_then_write)
    values = [encode(_event(s)) for s in range(10, 20)]
    result = processor.process(RecordBatch(values, [None] * 10, [0] * 10, list(range(10, 20))))

    assert len(attempts) == 2 and attempts[1] == attempts[0] + 1  # redone, with the column
    assert result.stored == 10 and processor.readings == {"co2": pa.int64()}
    stored = pl.read_delta(f"{config.lake}/telemetry").sort("seq")
    assert stored["seq"].to_list() == list(range(20))
    new = stored.filter(pl.col("seq") >= 10)
    assert new["co2"].to_list() == [400 + s for s in range(10, 20)]
    assert new["extra"].null_count() == 10
    old = stored.filter(pl.col("seq") < 10)
    assert old["co2"].null_count() == 10
    assert [json.loads(e)["co2"] for e in old["extra"]] == [400 + s for s in range(10)]
    assert stored_offsets(config, [0]) == {0: 19}
    assert pl.read_delta(f"{config.lake}/telemetry_rejected").height == 0


def _run_processor(config: Config, stop: threading.Event, out: list[BatchResult]) -> None:
    out.append(main.run(config, stop=stop, maintain=False))


def _send(config: Config, seqs: range, *, pause: float = 0.0, chunk: int = 100) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for first in range(seqs.start, seqs.stop, chunk):
        batch = range(first, min(first + chunk, seqs.stop))
        produce(
            config,
            [
                (f"d{s % 40}".encode(), encode(_event(s, ts=now - dt.timedelta(seconds=s % 60))))
                for s in batch
            ],
        )
        time.sleep(pause)


@pytest.mark.integration
def test_promote_while_a_processor_runs_loses_and_duplicates_nothing(
    kafka_config: Config, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        kafka_config, processor_group=f"evolve-{uuid.uuid4().hex[:6]}", commit_interval=0.2
    )
    stop = threading.Event()
    results: list[BatchResult] = []
    processor = threading.Thread(target=_run_processor, args=(config, stop, results))
    processor.start()
    try:
        # 1. co2 is an unknown reading: it lands in extra
        _send(config, range(0, 400))
        wait_drained(config, expected=400, timeout=90)
        assert "co2" not in pl.read_delta(f"{config.lake}/telemetry").columns
        hive = QuerySession(config, Principal.system())  # open across the change

        # 2. events keep arriving while an admin promotes co2 from the CLI
        sender = threading.Thread(
            target=_send, args=(config, range(400, 3400)), kwargs={"pause": 0.25}
        )
        sender.start()
        deadline = time.monotonic() + 60
        while sum(o + 1 for o in stored_offsets(config, list(range(8))).values()) < 700:
            assert time.monotonic() < deadline, "the processor stalled"
            time.sleep(0.1)
        promoted = run_cli(processor_env(config, tmp_path / "cli"), "lake", "promote", "co2")
        sender.join(timeout=120)
        assert promoted.returncode == 0, promoted.stderr

        # 3. and after it
        _send(config, range(3400, 3600))
        wait_drained(config, expected=3600, timeout=120)
        assert processor.is_alive()  # never restarted
    finally:
        stop.set()
        processor.join(timeout=60)
    assert results and results[0].stored == 3600

    telemetry = pl.read_delta(f"{config.lake}/telemetry")
    rejected = pl.read_delta(f"{config.lake}/telemetry_rejected")
    assert rejected.height == 0, rejected["reason"].value_counts()
    # every event exactly once across the change
    assert telemetry.height == 3600
    assert sorted(telemetry.select("device_id", "seq").rows()) == sorted(
        (f"d{s % 40}", s) for s in range(3600)
    )
    # each event's co2 is in exactly one place: the column, or extra (before the change)
    in_extra = [None if e is None else json.loads(e).get("co2") for e in telemetry["extra"]]
    in_column = telemetry["co2"].to_list()
    for seq, column, extra in zip(telemetry["seq"], in_column, in_extra, strict=True):
        assert (column is None) != (extra is None), (seq, column, extra)
        assert (column if column is not None else extra) == 400 + seq
    # everything sent after the promotion returned is in the column
    after = telemetry.filter(pl.col("seq") >= 3400)
    assert after["co2"].null_count() == 0 and after["extra"].null_count() == 200
    before = telemetry.filter(pl.col("seq") < 400)
    assert before["co2"].null_count() == 400
    # the change did happen mid-stream: events sent meanwhile are on both sides of it
    during = telemetry.filter(pl.col("seq").is_between(400, 3399))
    assert 0 < during["co2"].null_count() < during.height
    history = DeltaTable(f"{config.lake}/telemetry").history()
    assert [h["operation"] for h in history].count("ADD COLUMN") == 1

    # the HiveQL session opened before the change sees the column
    described = {r[0]: r[1] for r in hive.execute("DESCRIBE telemetry").rows}
    assert described["co2"] == "double"
    count = hive.execute("SELECT count(*) FROM telemetry WHERE co2 >= 3800").rows
    assert count == [(200,)]
    hive.close()
