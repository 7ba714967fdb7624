"""Helpers for processor tests: events, a Kafka producer, processor subprocesses, and an
independent recomputation of the aggregates from ``telemetry``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from workbench.config import Config
from workbench.kafka import client_settings

T0 = dt.datetime(2026, 11, 27, 5, 30, tzinfo=dt.UTC)


def event(
    device: str = "dev-1",
    seq: int = 1,
    ts: dt.datetime = T0,
    *,
    building: str = "b-1",
    readings: dict[str, object] | None = None,
    **fields: object,
) -> dict[str, object]:
    """One event in the topic's format (workbench/events.py)."""
    body: dict[str, object] = {
        "device_id": device,
        "seq": seq,
        "ts": ts.isoformat().replace("+00:00", "Z"),
        "received_at": ts.isoformat().replace("+00:00", "Z"),
        "tenant_id": "t-1",
        "building_id": building,
        "floor": 1,
        "room": "1.01",
        "device_type": "environment",
        "protocol": "http",
        "readings": {"temperature": 20.0, "humidity": 40.0, "light": 100.0}
        if readings is None
        else readings,
    }
    body.update(fields)
    return body


def encode(e: dict[str, object]) -> bytes:
    return json.dumps(e, separators=(",", ":")).encode()


def produce(config: Config, records: list[tuple[bytes | None, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**client_settings(config), acks="all", linger_ms=5, batch_size=1 << 20)
    for key, value in records:
        producer.send(config.topic, key=key, value=value)
    producer.flush()
    producer.close()


def end_offsets(config: Config) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**client_settings(config))
    try:
        parts = consumer.partitions_for_topic(config.topic) or set()
        ends = consumer.end_offsets([TopicPartition(config.topic, p) for p in parts])
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        consumer.close()


def stored_offsets(config: Config, partitions: list[int]) -> dict[int, int]:
    """Last offset per partition that ``telemetry`` holds (-1: none)."""
    try:
        table = DeltaTable(f"{config.lake}/telemetry")
    except Exception:
        return dict.fromkeys(partitions, -1)
    out = {}
    for p in partitions:
        v = table.transaction_version(f"{config.processor_group}-{config.topic}-{p}")
        out[p] = -1 if v is None else v
    return out


def wait_drained(
    config: Config, *, expected: int, timeout: float = 120, alive: list[ProcessorProc] | None = None
) -> None:
    """Wait until the lake holds ``expected`` records of the (fresh) topic."""
    partitions = list(range(config.topic_partitions))
    deadline = time.monotonic() + timeout
    stored: dict[int, int] = {}
    while time.monotonic() < deadline:
        stored = stored_offsets(config, partitions)
        if sum(o + 1 for o in stored.values()) >= expected:
            return
        for proc in alive or []:
            assert proc.popen.poll() is None, f"processor exited: {proc.log_tail()}"
        time.sleep(0.3)
    raise AssertionError(f"not drained after {timeout}s: {expected} records, stored {stored}")


@dataclasses.dataclass
class ProcessorProc:
    """A real ``python -m ingest_service process`` subprocess."""

    popen: subprocess.Popen[bytes]
    home: Path
    log: Path

    def heartbeat(self) -> dict[str, object] | None:
        try:
            data: dict[str, object] = json.loads(
                (self.home / "run" / "processor.heartbeat.json").read_text()
            )
            return data
        except (OSError, ValueError):
            return None

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def terminate(self, timeout: float = 60) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait(timeout=30)


def processor_env(config: Config, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKBENCH_", "KAFKA_"))}
    env.update(config.env())
    env["WORKBENCH_HOME"] = str(home)
    env["WORKBENCH_COMMIT_INTERVAL"] = "0.3"
    env["WORKBENCH_MAINTAIN_INTERVAL"] = "100000"
    env.update(extra)
    return env


@pytest.fixture
def start_processor(tmp_path: Path) -> Iterator[object]:
    """Factory: start a processor subprocess for a config; all are stopped afterwards."""
    procs: list[ProcessorProc] = []

    def start(config: Config, name: str = "p", **extra: str) -> ProcessorProc:
        home = tmp_path / f"home-{name}"
        home.mkdir(exist_ok=True)
        log = home / f"processor-{len(procs)}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "ingest_service", "process"],
                env=processor_env(config, home, **extra),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = ProcessorProc(popen, home, log)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.popen.poll() is None:
            proc.kill()


def recompute_metrics(telemetry: pl.DataFrame) -> pl.DataFrame:
    """building_metrics_1m from scratch: on-time telemetry rows per building-minute."""
    return (
        telemetry.filter(~pl.col("late"))
        .with_columns(window_start=pl.col("ts").dt.truncate("1m"))
        .group_by("tenant_id", "building_id", "window_start")
        .agg(
            readings=pl.len(),
            devices=pl.col("device_id").n_unique(),
            temperature_avg=pl.col("temperature").mean(),
            temperature_min=pl.col("temperature").min(),
            temperature_max=pl.col("temperature").max(),
            humidity_avg=pl.col("humidity").mean(),
            light_avg=pl.col("light").mean(),
            smoke_alarms=pl.col("smoke").fill_null(False).sum(),
            intrusion_alarms=pl.col("intrusion").fill_null(False).sum(),
        )
        .sort("building_id", "window_start")
    )


def recompute_state(telemetry: pl.DataFrame) -> pl.DataFrame:
    """building_state from scratch: the five minutes ending at each building's last window,
    averaged over readings."""
    on_time = telemetry.filter(~pl.col("late")).with_columns(
        window_start=pl.col("ts").dt.truncate("1m")
    )
    last = on_time.group_by("building_id").agg(_last=pl.col("window_start").max())
    rows = on_time.join(last, on="building_id").filter(
        pl.col("window_start") > pl.col("_last") - dt.timedelta(minutes=5)
    )
    per_minute = rows.group_by("building_id", "window_start").agg(
        devices=pl.col("device_id").n_unique()
    )
    return (
        rows.group_by("building_id")
        .agg(
            temperature_avg_5m=pl.col("temperature").mean(),
            humidity_avg_5m=pl.col("humidity").mean(),
            light_avg_5m=pl.col("light").mean(),
            readings_5m=pl.len(),
            active_smoke_alarms=pl.col("smoke").fill_null(False).sum(),
            active_intrusion_alarms=pl.col("intrusion").fill_null(False).sum(),
            last_event_ts=pl.col("ts").max(),
        )
        .join(
            per_minute.group_by("building_id").agg(devices_5m=pl.col("devices").max()),
            on="building_id",
        )
        .sort("building_id")
    )


def assert_frames_close(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    from polars.testing import assert_frame_equal

    assert_frame_equal(
        actual.select(expected.columns),
        expected,
        check_dtypes=False,
        check_exact=False,
        rel_tol=1e-9,
        abs_tol=1e-9,
    )
