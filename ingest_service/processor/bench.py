"""``workbench bench ingest``: drain rate Kafka -> Delta (telemetry + aggregates) against a bare
kafka-python consumer over the same topic, and bytes per stored event (DESIGN.md §9).

1. preload ``--events`` simulated events (``simulator.fleet.Fleet``, the gateway's
   record format) into a fresh topic of the configured Kafka;
2. bare: ``--processes`` kafka-python consumers in one group (the target's baseline),
   same client settings as the processor's kafka-python member, only counting
   records; rate = events / (last record - first record); then the same with
   librdkafka consumers (the processor's default client), for comparison;
3. processor: ``--processes`` real ``python -m ingest_service process`` subprocesses
   into a scratch lake; rate = events / (time the lake holds every offset in
   ``telemetry`` *and* ``building_metrics_1m`` - time the first record was polled);
4. bytes/event: size of ``telemetry``'s live files / stored events, as ingested
   and after ``workbench lake maintain`` (Z-order compaction).

Group joins are excluded from both timings. Steps 2 and 3 run ``--runs`` times
(alternating); medians are reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from workbench.bench import add_bench, print_table, record_result
from workbench.config import Config
from workbench.exceptions import InvalidInput

__all__ = ["run_bench"]

_TARGET_RATIO = 0.80
_TARGET_BYTES = 12.0


def _preload(config: Config, events: int, devices: int) -> int:
    from kafka import KafkaProducer

    from simulator.fleet import Fleet

    fleet = Fleet.generate(devices, seed=0)
    span = dt.timedelta(seconds=60 * events / devices)
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - span
    producer = KafkaProducer(
        bootstrap_servers=config.bootstrap_servers,
        acks=1,
        linger_ms=20,
        batch_size=1 << 20,
        max_request_size=8 << 20,
        compression_type=None,
    )
    sent = 0
    for key, value in fleet.kafka_records(start, events):
        producer.send(config.topic, key=key, value=value)
        sent += 1
    producer.flush()
    producer.close()
    return sent


def _bare(config: Config, processes: int, events: int, client: str = "kafka-python") -> float:
    """Rate of ``processes`` bare group consumers (``client``) draining the topic."""
    group = f"bench-bare-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **config.env()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ingest_service.processor.bench", group, client],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    total = sum(r["count"] for r in results)
    if total < events:
        raise RuntimeError(f"bare consumers saw {total} of {events} events")
    first = min(r["first"] for r in results if r["count"])
    last = max(r["last"] for r in results if r["count"])
    if last <= first:
        raise InvalidInput(
            f"the bare {client} consumer got all {events:,} events in one poll: too few to time",
            hint="preload more with --events (the default is 400,000)",
        )
    return float(total / (last - first))


def _bare_consume(group: str, client: str) -> None:
    """One bare consumer (a subprocess): count records until the topic has been idle 3 s."""
    if client == "librdkafka":
        _bare_rdkafka(group)
        return
    from kafka import KafkaConsumer

    from ingest_service.processor.fetcher import consumer_settings

    config = Config.from_env()
    consumer = KafkaConsumer(**consumer_settings(config, group=group, offset_reset="earliest"))
    consumer.subscribe([config.topic])

    def poll() -> int:
        polled = consumer.poll(timeout_ms=500, max_records=config.commit_max_events)
        return sum(len(records) for records in polled.values())

    count, first, last = _count_records(poll)
    consumer.close()
    print(json.dumps({"count": count, "first": first, "last": last}))


def _count_records(poll: Callable[[], int]) -> tuple[int, float, float]:
    """Call ``poll`` (it returns how many records it got) until the topic has been idle
    3 s; return the count and the wall times of the first and the last records."""
    count, first, last = 0, 0.0, 0.0
    idle_since = time.monotonic()
    while True:
        n = poll()
        now = time.time()
        if n:
            first = first or now
            last = now
            count += n
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > (3 if count else 60):
            return count, first, last


def _bare_rdkafka(group: str) -> None:
    """:func:`_bare_consume` with librdkafka, touching each record's value as the
    processor's member does. librdkafka fetches ahead in its own threads, so its clock
    starts at the assignment, not at the first record delivered."""
    from confluent_kafka import Consumer, Message, TopicPartition

    from ingest_service.processor.fetcher import POLL_RECORDS, rdkafka_settings

    config = Config.from_env()
    consumer = Consumer(rdkafka_settings(config, group=group, offset_reset="earliest"))
    assigned_at = 0.0

    def assigned(_consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        nonlocal assigned_at
        assigned_at = assigned_at or time.time()

    def poll() -> int:
        values = map(Message.value, consumer.consume(POLL_RECORDS, 0.5))
        return len([v for v in values if v is not None])

    consumer.subscribe([config.topic], on_assign=assigned)
    count, first, last = _count_records(poll)
    consumer.close()
    print(json.dumps({"count": count, "first": assigned_at or first, "last": last}))


def _processors(config: Config, processes: int, events: int, home: Path) -> tuple[float, int]:
    """Rate of ``processes`` processors draining the topic into a fresh lake."""
    from deltalake import DeltaTable

    lake = home / f"lake-{uuid.uuid4().hex[:6]}"
    group = f"bench-proc-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **config.env()}
    env.update(
        WORKBENCH_LAKE=str(lake),
        WORKBENCH_PROCESSOR_GROUP=group,
        WORKBENCH_MAINTAIN_INTERVAL="1000000",
    )
    procs = []
    for i in range(processes):
        phome = home / f"proc-{group}-{i}"
        phome.mkdir(parents=True)
        log = (phome / "processor.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "ingest_service", "process"],
                env={**env, "WORKBENCH_HOME": str(phome)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        ids = [f"{group}-{config.topic}-{p}" for p in range(config.topic_partitions)]
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            time.sleep(0.1)
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"processor exited with {p.returncode}; see {home}")
            try:
                tel = DeltaTable(str(lake / "telemetry"))
                met = DeltaTable(str(lake / "building_metrics_1m"))
            except Exception:
                continue
            versions = [tel.transaction_version(a) for a in ids]
            metrics = [met.transaction_version(a) for a in ids]
            if sum(-1 if v is None else v for v in versions) + len(ids) >= events and all(
                (m or -1) >= (v or -1) for m, v in zip(metrics, versions, strict=True)
            ):
                break
        else:
            raise RuntimeError("processors did not drain the topic within 15 minutes")
        done = time.time()
        firsts = _first_records(home, group, processes)
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        stored = DeltaTable(str(lake / "telemetry")).count()
        return stored / (done - min(firsts)), stored
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _first_records(home: Path, group: str, processes: int, wait_s: float = 10) -> list[float]:
    """When each processor received its first record, from its heartbeat. A processor
    folds its members' beats twice a second, so the last ones may not show yet when
    the lake is complete: wait for all (a processor may have had no partition: then
    for those that show one)."""
    deadline = time.monotonic() + wait_s
    while True:
        firsts = []
        for i in range(processes):
            path = home / f"proc-{group}-{i}" / "run" / "processor.heartbeat.json"
            try:
                beat = json.loads(path.read_text())
            except (OSError, ValueError):  # not written yet, or being replaced
                continue
            if beat.get("first_record_at"):
                firsts.append(float(beat["first_record_at"]))
        if len(firsts) == processes or (firsts and time.monotonic() > deadline):
            return firsts
        if time.monotonic() > deadline:
            raise RuntimeError(f"no processor's heartbeat shows its first record; see {home}")
        time.sleep(0.2)


def _bytes_per_event(config: Config, lake: Path, stored: int) -> tuple[float, float]:
    from deltalake import DeltaTable

    from workbench.lake.maintain import maintain

    def size() -> int:
        actions = DeltaTable(str(lake / "telemetry")).get_add_actions(flatten=True)
        return int(sum(actions.column("size_bytes").to_pylist()))

    before = size() / stored
    maintain(dataclasses.replace(config, lake=str(lake)), days=3650)
    return before, size() / stored


def run_bench(config: Config, args: argparse.Namespace) -> int:
    """``workbench bench ingest``."""
    from workbench.cli import say
    from workbench.kafka import ensure_topic, wait_for_kafka

    wait_for_kafka(config, timeout_s=10)
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    bench_config = dataclasses.replace(config, topic=topic, topic_partitions=args.partitions)
    ensure_topic(bench_config)
    (config.home / "bench").mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="ingest-", dir=config.home / "bench"))
    try:
        say(
            f"preloading {args.events:,} events from {args.devices:,} simulated devices "
            f"into {topic}…"
        )
        events = _preload(bench_config, args.events, args.devices)
        bare_rates, rd_rates, proc_rates = [], [], []
        stored, lake = 0, home
        for run in range(args.runs):
            say(f"run {run + 1}/{args.runs}: {args.processes} bare kafka-python consumer(s)…")
            bare_rates.append(_bare(bench_config, args.processes, events))
            say(f"run {run + 1}/{args.runs}: {args.processes} bare librdkafka consumer(s)…")
            rd_rates.append(_bare(bench_config, args.processes, events, "librdkafka"))
            say(f"run {run + 1}/{args.runs}: {args.processes} processor(s)…")
            rate, stored = _processors(bench_config, args.processes, events, home)
            proc_rates.append(rate)
        lake = max((p for p in home.iterdir() if p.name.startswith("lake-")), key=os.path.getmtime)
        say("measuring storage, as ingested and after 'workbench lake maintain'…")
        ingested_bpe, compacted_bpe = _bytes_per_event(bench_config, lake, stored)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    bare, proc = statistics.median(bare_rates), statistics.median(proc_rates)
    rd = statistics.median(rd_rates)
    ratio = proc / bare
    figures = {
        "processes": args.processes,
        "events": events,
        "devices": args.devices,
        "runs": args.runs,
        "processor_events_per_s": round(proc),
        "processor_client": config.processor_client,
        "bare_consumer_events_per_s": round(bare),
        "ratio": round(ratio, 3),
        "bare_librdkafka_events_per_s": round(rd),
        "ratio_librdkafka": round(proc / rd, 3),
        "bytes_per_event_ingested": round(ingested_bpe, 2),
        "bytes_per_event_compacted": round(compacted_bpe, 2),
        "processor_runs": [round(r) for r in proc_rates],
        "bare_runs": [round(r) for r in bare_rates],
        "bare_librdkafka_runs": [round(r) for r in rd_rates],
    }
    print_table(
        [
            (
                f"processor drain (telemetry + aggregates; {config.processor_client})",
                f"{proc:,.0f} events/s",
                "",
            ),
            ("bare kafka-python consumer", f"{bare:,.0f} events/s", ""),
            ("ratio", f"{ratio:.0%}", f">= {_TARGET_RATIO:.0%}"),
            ("bare librdkafka consumer (for comparison)", f"{rd:,.0f} events/s", ""),
            ("ratio to librdkafka", f"{proc / rd:.0%}", ""),
            ("bytes/event as ingested", f"{ingested_bpe:.1f}", ""),
            ("bytes/event after lake maintain", f"{compacted_bpe:.1f}", f"<= {_TARGET_BYTES:g}"),
        ],
        header=("FIGURE", f"VALUE ({args.processes} process(es), {events:,} events)", "TARGET"),
    )
    record_result(config, "ingest", figures)
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=400_000, help="events to preload")
    parser.add_argument("--devices", type=int, default=20_000, help="simulated devices")
    parser.add_argument("--processes", type=int, choices=(1, 2), default=1)
    parser.add_argument(
        "--partitions",
        type=int,
        default=8,
        help="partitions of the bench's own topic (the figures in docs/ingest.md: 8)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("--keep", action="store_true", help="keep the scratch lakes")


add_bench(
    "ingest",
    run_bench,
    "ingest: drain rate Kafka -> Delta vs a bare consumer, and bytes per stored event",
    _configure,
)


if __name__ == "__main__":
    _bare_consume(sys.argv[1], sys.argv[2])
