"""A topic deleted and created again (an in-memory broker restarted) starts its offsets at 0
again: nothing of the new topic may be skipped as "already stored", nothing stored twice.

The first tests hand records to a :class:`Processor` directly (real Delta tables, topic ids
given by hand); the last ones restart a real Tansu broker of their own under a running,
respectively a stopped, processor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deltalake import DeltaTable

from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.processor import Processor
from ingest_service.processor.windows import FixedClock
from tests.conftest import free_port, isolated_env
from tests.ingest_service.processor.conftest import T0, encode, event, produce
from workbench.config import Config
from workbench.kafka import ensure_topic, topic_id, wait_for_kafka
from workbench.stack.base import UpOptions
from workbench.stack.components import _broker_command

OLD = "01a21c61-9da8-7293-9e7a-c10dd082d08d"
NEW = "01a21c61-eb0c-7060-892d-a1f44b4f9469"


# --- the processor alone -------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_LAKE": str(tmp_path / "lake")}
    )


def _start(config: Config, topic: str | None) -> Processor:
    processor = Processor(config, clock=FixedClock(T0 + dt.timedelta(minutes=10)))
    processor.assign([0], topic_id=topic)
    return processor


def _feed(processor: Processor, kafka_offsets: range, *, first_seq: int) -> None:
    """Records of partition 0 at ``kafka_offsets``, translated as the poller does."""
    incarnation = processor.checkpoint.incarnations[0]
    values = [encode(event(seq=first_seq + i)) for i in range(len(kafka_offsets))]
    processor.process(
        RecordBatch(
            values,
            [b"dev-1"] * len(values),
            [0] * len(values),
            [incarnation.lake(o) for o in kafka_offsets],
        )
    )


def _stored(config: Config) -> pl.DataFrame:
    return pl.read_delta(f"{config.lake}/telemetry").sort("source_offset")


def test_a_new_topic_id_is_read_from_its_beginning_after_everything_stored(
    config: Config,
) -> None:
    processor = _start(config, OLD)
    _feed(processor, range(10), first_seq=0)
    assert processor.checkpoint.position(0) == 10

    # the topic was re-created: its offsets start at 0 again
    processor = _start(config, NEW)
    assert processor.checkpoint.incarnations[0].base == 10
    assert processor.checkpoint.position(0) == 0
    _feed(processor, range(4), first_seq=10)

    stored = _stored(config)
    assert stored["seq"].to_list() == list(range(14))
    assert stored["source_offset"].to_list() == list(range(14))  # lake offsets never repeat
    # the new incarnation is recorded with the commit: a restart resumes inside it
    processor = _start(config, NEW)
    assert (processor.checkpoint.incarnations[0].base, processor.checkpoint.position(0)) == (10, 4)


def test_a_running_processor_rebases_a_partition_whose_topic_changed(config: Config) -> None:
    processor = _start(config, OLD)
    _feed(processor, range(6), first_seq=0)
    assert processor.checkpoint.check_topic([0], OLD) == []
    assert processor.checkpoint.check_topic([0], NEW) == [0]
    assert (processor.checkpoint.incarnations[0].base, processor.checkpoint.position(0)) == (6, 0)
    _feed(processor, range(3), first_seq=6)
    assert _stored(config)["source_offset"].to_list() == list(range(9))


def test_a_lake_without_recorded_topic_ids_adopts_the_topic_it_meets(config: Config) -> None:
    processor = _start(config, None)  # a broker without topic ids, or an older lake
    _feed(processor, range(5), first_seq=0)
    processor = _start(config, OLD)
    assert (processor.checkpoint.incarnations[0].base, processor.checkpoint.position(0)) == (0, 5)
    _feed(processor, range(5, 7), first_seq=5)
    # from now on the topic is known: another one is a re-creation
    processor = _start(config, NEW)
    assert (processor.checkpoint.incarnations[0].base, processor.checkpoint.position(0)) == (7, 0)


def test_rows_rejected_before_the_re_creation_keep_their_offsets_below_the_new_base(
    config: Config,
) -> None:
    processor = _start(config, OLD)
    processor.process(RecordBatch([b"not json", b"{}"], [None, None], [0, 0], [0, 1]))
    processor = _start(config, NEW)
    assert processor.checkpoint.incarnations[0].base == 2
    processor.process(
        RecordBatch(
            [b"still not json"], [None], [0], [processor.checkpoint.incarnations[0].lake(0)]
        )
    )
    rejected = pl.read_delta(f"{config.lake}/telemetry_rejected").sort("source_offset")
    assert rejected["source_offset"].to_list() == [0, 1, 2]


# --- a real broker restarted -----------------------------------------------------------------


@dataclasses.dataclass
class Broker:
    """A Tansu broker of this test's own (in memory), restartable on the same port."""

    config: Config
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            _broker_command(self.config, UpOptions()),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_kafka(self.config, timeout_s=30)
        ensure_topic(self.config)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def restart(self) -> None:
        """Everything it held is gone; the topic is created again (with a new id)."""
        self.stop()
        self.start()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    env = isolated_env(
        tmp_path / "broker-home",
        WORKBENCH_KAFKA_PORT=str(free_port()),
        WORKBENCH_TOPIC_PARTITIONS="4",
        WORKBENCH_LAKE=str(tmp_path / "lake"),
        WORKBENCH_PROCESSOR_GROUP=f"recreate-{uuid.uuid4().hex[:6]}",
        # a topic lost with its broker is what Tansu's memory-only storage does
        WORKBENCH_BROKER="tansu",
    )
    own = Broker(Config.from_env(env))
    own.start()
    yield own
    own.stop()


def _events(first: int, count: int) -> list[tuple[bytes | None, bytes]]:
    out: list[tuple[bytes | None, bytes]] = []
    for i in range(first, first + count):
        device = f"d{i % 40}"
        out.append((device.encode(), encode(event(device=device, seq=i, ts=T0))))
    return out


def _telemetry(config: Config) -> pl.DataFrame:
    try:
        return pl.read_delta(f"{config.lake}/telemetry")
    except Exception:  # not created yet
        return pl.DataFrame(schema={"device_id": pl.String, "seq": pl.Int64})


def _wait_stored(config: Config, expected: int, proc: Any, timeout: float = 120) -> pl.DataFrame:
    deadline = time.monotonic() + timeout
    stored = _telemetry(config)
    while stored.height < expected and time.monotonic() < deadline:
        assert proc.popen.poll() is None, f"processor exited: {proc.log_tail()}"
        time.sleep(0.5)
        stored = _telemetry(config)
    return stored


def _assert_exactly_once(config: Config, produced: int) -> None:
    stored = _telemetry(config)
    assert stored.select("device_id", "seq").unique().height == produced, "events lost"
    assert stored.height == produced, "events stored twice"
    assert sorted(stored["seq"].to_list()) == list(range(produced))
    # per partition, lake offsets run on from one topic to the next without a gap
    for (partition,), rows in stored.group_by("source_partition"):
        offsets = sorted(rows["source_offset"].to_list())
        assert offsets == list(range(len(offsets))), f"partition {partition}"
    assert pl.read_delta(f"{config.lake}/telemetry_rejected").height == 0


def _per_partition(config: Config) -> dict[int, int]:
    counts = _telemetry(config).group_by("source_partition").len()
    return dict(zip(counts["source_partition"], counts["len"], strict=True))


@pytest.mark.slow
def test_broker_restart_under_a_running_processor_loses_and_repeats_nothing(
    broker: Broker, start_processor: Any
) -> None:
    config = broker.config
    first_id = topic_id(config)
    produce(config, _events(0, 2_000))
    proc = start_processor(config)
    assert _wait_stored(config, 2_000, proc).height == 2_000
    before = _per_partition(config)

    broker.restart()
    assert topic_id(config) not in (None, first_id)
    # fewer per partition than the old topic held: the new log ends before the offset the
    # lake had stored (a processor trusting Kafka offsets would skip them all)
    produce(config, _events(2_000, 400))
    _wait_stored(config, 2_400, proc)
    _assert_exactly_once(config, 2_400)

    table = DeltaTable(f"{config.lake}/telemetry")
    for p, count in before.items():
        app = f"{config.processor_group}-{config.topic}-{p}"
        assert table.transaction_version(f"{app}-base") == count


@pytest.mark.slow
def test_topic_re_created_while_the_processor_was_down_is_read_from_its_beginning(
    broker: Broker, start_processor: Any
) -> None:
    config = broker.config
    produce(config, _events(0, 1_200))
    proc = start_processor(config)
    assert _wait_stored(config, 1_200, proc).height == 1_200
    assert proc.terminate() == 0

    broker.restart()
    # more per partition than the old topic held: a seek to the old position would land
    # inside the new log and skip its beginning
    produce(config, _events(1_200, 3_000))
    proc = start_processor(config, name="after")
    _wait_stored(config, 4_200, proc)
    _assert_exactly_once(config, 4_200)
    assert "re-created" in proc.log.read_text()
