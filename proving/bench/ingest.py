"""``workbench bench ingest``: drain rate Kafka -> Delta against bare consumers and a peer
(Quix Streams) over the same topic, in one run, and bytes per stored event.

1. preload ``--events`` simulated events (``simulator.fleet.Fleet``, the gateway's
   record format) into a fresh topic of the configured Kafka;
2. bare confluent-kafka: ``--processes`` librdkafka consumers in one group (the
   processor's client, same settings as its member), touching each record's value and
   discarding it: the fastest a Python client drains this topic, the baseline of the
   ratios; clock from the assignment, as librdkafka fetches ahead in its own threads;
3. bare kafka-python: the same with kafka-python consumers (the earlier baseline);
   rate = events / (last record - first record);
4. processor: ``--processes`` real ``python -m ingest_service process`` subprocesses
   into a scratch lake; rate = events / (time the lake holds every offset in
   ``telemetry`` *and* ``building_metrics_1m`` - time the first record was polled);
5. Quix Streams (:mod:`proving.bench.quix`): ``--processes`` apps of
   :mod:`proving.bench.quix_app` in their own virtualenv, exactly-once, per-building
   windows into a CSV file; rate = events / (app stopped with its last checkpoint
   committed - first record seen). When it cannot run, its row says why;
6. bytes/event: size of ``telemetry``'s live files / stored events, as ingested
   and after ``workbench lake maintain`` (Z-order compaction).

Group joins are excluded from every timing. Steps 2-5 run ``--runs`` times
(alternating); medians are reported, with the events each engine saw.
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

from proving.bench import add_bench, report
from workbench.cli import print_table
from workbench.config import Config
from workbench.exceptions import InvalidInput
from workbench.kafka import client_settings, external_env

__all__ = ["drain_into_lake", "run_bench"]

_TARGET_RATIO = 0.80
_TARGET_BYTES = 12.0
_QUIX_WINDOWS = {"hopping": "5-min hopping (every minute)", "tumbling": "1-min tumbling"}


def _preload(config: Config, events: int, devices: int) -> int:
    from kafka import KafkaProducer

    from simulator.fleet import Fleet

    fleet = Fleet.generate(devices, seed=0)
    span = dt.timedelta(seconds=60 * events / devices)
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - span
    producer = KafkaProducer(
        **client_settings(config),
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


def _bare(
    config: Config, processes: int, events: int, client: str = "kafka-python"
) -> tuple[float, int]:
    """Rate of ``processes`` bare group consumers (``client``) draining the topic, and the
    records they counted."""
    group = f"bench-bare-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **config.env()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "proving.bench.ingest", group, client],
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
    return float(total / (last - first)), total


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


def drain_into_lake(config: Config, processes: int, events: int, home: Path) -> tuple[float, int]:
    """Rate of ``processes`` processors draining the topic into a fresh lake under
    ``home``, and the rows stored (the ingest bench's figure; `bench mqtt --lake` checks
    exactly once with it)."""
    from deltalake import DeltaTable

    lake = home / f"lake-{uuid.uuid4().hex[:6]}"
    group = f"bench-proc-{uuid.uuid4().hex[:8]}"
    # each processor has a home of its own: it reaches the broker as an external cluster
    env = {**os.environ, **config.env(), **external_env(config)}
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
        seen: tuple[Path | None, Path | None] = (None, None)
        while time.monotonic() < deadline:
            time.sleep(0.05)
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"processor exited with {p.returncode}; see {home}")
            # the tables are opened only after a new commit: opening them 10 times a
            # second took 10-15 % of a core from the processors being timed
            newest = (
                _newest_commit(lake / "telemetry"),
                _newest_commit(lake / "building_metrics_1m"),
            )
            if None in newest or newest == seen:
                continue
            seen = newest
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
        # when the last of the two commits read landed, not when this loop saw it
        done = max(
            (lake / name / "_delta_log" / f"{table.version():020d}.json").stat().st_mtime
            for name, table in (("telemetry", tel), ("building_metrics_1m", met))
        )
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


def _newest_commit(table: Path) -> Path | None:
    """The newest commit file in ``table``'s Delta log (None before the first)."""
    try:
        names = [e.name for e in os.scandir(table / "_delta_log") if e.name.endswith(".json")]
    except FileNotFoundError:
        return None
    return table / "_delta_log" / max(names) if names else None


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


def _quix_python(config: Config, args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """The Quix virtualenv's python (built once), or None and why not."""
    from proving.bench.quix import QuixUnavailable, quix_python
    from workbench.cli import say

    if not args.quix:
        return None, "not run (--no-quix)"
    venv = Path(args.quix_venv) if args.quix_venv else config.home / "bench" / "quix-venv"
    try:
        return quix_python(venv, say), None
    except QuixUnavailable as exc:
        say(f"Quix Streams will be missing from the table: {exc}")
        return None, str(exc)


def run_bench(config: Config, args: argparse.Namespace) -> int:
    """``workbench bench ingest``."""
    from proving.bench.quix import QUIX_VERSION, QuixUnavailable, run_quix
    from workbench.cli import say
    from workbench.kafka import ensure_topic, wait_for_kafka

    wait_for_kafka(config, timeout_s=10)
    quix_python, quix_error = _quix_python(config, args)
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    bench_config = dataclasses.replace(config, topic=topic, topic_partitions=args.partitions)
    ensure_topic(bench_config)
    (config.home / "bench").mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="ingest-", dir=config.home / "bench"))
    counts: dict[str, list[int]] = {"confluent-kafka": [], "kafka-python": [], "processor": []}
    quix_rates: list[float] = []
    quix_windows = 0
    try:
        say(
            f"preloading {args.events:,} events from {args.devices:,} simulated devices "
            f"into {topic}…"
        )
        events = _preload(bench_config, args.events, args.devices)
        bare_rates, rd_rates, proc_rates = [], [], []
        stored, lake = 0, home
        for run in range(args.runs):
            n = f"run {run + 1}/{args.runs}: {args.processes}"
            say(f"{n} bare confluent-kafka (librdkafka) consumer(s)…")
            rate, count = _bare(bench_config, args.processes, events, "librdkafka")
            rd_rates.append(rate)
            counts["confluent-kafka"].append(count)
            say(f"{n} bare kafka-python consumer(s)…")
            rate, count = _bare(bench_config, args.processes, events)
            bare_rates.append(rate)
            counts["kafka-python"].append(count)
            say(f"{n} processor(s)…")
            rate, stored = drain_into_lake(bench_config, args.processes, events, home)
            proc_rates.append(rate)
            counts["processor"].append(stored)
            if quix_python is not None and quix_error is None:
                say(f"{n} Quix Streams app(s), exactly-once, {args.quix_window} windows…")
                try:
                    quix = run_quix(
                        bench_config,
                        quix_python,
                        events=events,
                        processes=args.processes,
                        home=home,
                        window=args.quix_window,
                    )
                except QuixUnavailable as exc:
                    quix_error = str(exc)
                    say(f"Quix Streams will be missing from the table: {exc}")
                else:
                    quix_rates.append(quix.rate)
                    counts.setdefault("quix", []).append(quix.events)
                    quix_windows = quix.windows
        lake = max((p for p in home.iterdir() if p.name.startswith("lake-")), key=os.path.getmtime)
        say("measuring storage, as ingested and after 'workbench lake maintain'…")
        ingested_bpe, compacted_bpe = _bytes_per_event(bench_config, lake, stored)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    bare, proc = statistics.median(bare_rates), statistics.median(proc_rates)
    rd = statistics.median(rd_rates)
    quix_rate = statistics.median(quix_rates) if quix_rates and quix_error is None else None
    broker = config.broker if config.embedded_broker else "external"
    figures = {
        "processes": args.processes,
        "events": events,
        "devices": args.devices,
        "runs": args.runs,
        "broker": broker,
        "processor_events_per_s": round(proc),
        "processor_client": config.processor_client,
        "bare_consumer_events_per_s": round(bare),
        "ratio": round(proc / bare, 3),
        "bare_librdkafka_events_per_s": round(rd),
        "ratio_librdkafka": round(proc / rd, 3),
        "quix_version": QUIX_VERSION,
        "quix_window": args.quix_window,
        "quix_events_per_s": None if quix_rate is None else round(quix_rate),
        "ratio_quix_to_librdkafka": None if quix_rate is None else round(quix_rate / rd, 4),
        "quix_windows_written": quix_windows if quix_rate is not None else None,
        "quix_missing": quix_error,
        "counts": counts,
        "bytes_per_event_ingested": round(ingested_bpe, 2),
        "bytes_per_event_compacted": round(compacted_bpe, 2),
        "processor_runs": [round(r) for r in proc_rates],
        "bare_runs": [round(r) for r in bare_rates],
        "bare_librdkafka_runs": [round(r) for r in rd_rates],
        "quix_runs": [round(r) for r in quix_rates],
    }

    def row(engine: str, rate: float | None, count: list[int], target: str = "") -> list[str]:
        if rate is None:
            return [engine, "-", "-", "-", target]
        return [engine, f"{rate:,.0f}", f"{rate / rd:.0%}", f"{min(count):,}", target]

    say(f"broker: {broker} at {config.bootstrap_servers}; medians of {args.runs} run(s)")
    print_table(
        [
            row(
                "bare confluent-kafka (librdkafka), reads and discards",
                rd,
                counts["confluent-kafka"],
            ),
            row("bare kafka-python, reads and discards", bare, counts["kafka-python"]),
            row(
                f"processor ({config.processor_client}): exactly-once Delta, telemetry + "
                "1-min and 5-min building aggregates",
                proc,
                counts["processor"],
                f">= {_TARGET_RATIO:.0%}",
            ),
            row(
                f"Quix Streams {QUIX_VERSION}: exactly-once, "
                f"{_QUIX_WINDOWS[args.quix_window]} building windows -> CSV",
                quix_rate,
                counts.get("quix", []),
                "< processor",
            ),
        ],
        header=(
            "ENGINE",
            "EVENTS/S",
            "OF BARE CONFLUENT-KAFKA",
            f"EVENTS SEEN (of {events:,})",
            "TARGET",
        ),
    )
    if quix_error is not None:
        print(f"Quix Streams missing: {quix_error}")
    print()
    report(
        config,
        "ingest",
        [
            ("bytes/event as ingested", f"{ingested_bpe:.1f}", ""),
            ("bytes/event after lake maintain", f"{compacted_bpe:.1f}", f"<= {_TARGET_BYTES:g}"),
        ],
        header=("FIGURE", f"VALUE ({args.processes} process(es), {events:,} events)", "TARGET"),
        figures=figures,
    )
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
    parser.add_argument(
        "--no-quix",
        dest="quix",
        action="store_false",
        help="leave out the Quix Streams peer (it needs its own virtualenv and Apache Kafka)",
    )
    parser.add_argument(
        "--quix-venv",
        default="",
        help="the Quix Streams virtualenv, built there once "
        "(default $WORKBENCH_HOME/bench/quix-venv)",
    )
    parser.add_argument(
        "--quix-window",
        choices=("hopping", "tumbling"),
        default="hopping",
        help="Quix windows: 5 minutes every minute (building_state's view), or 1 minute "
        "(building_metrics_1m's rows)",
    )


add_bench(
    "ingest",
    run_bench,
    "ingest: drain rate Kafka -> Delta vs bare consumers and Quix Streams, bytes per event",
    _configure,
)


if __name__ == "__main__":
    _bare_consume(sys.argv[1], sys.argv[2])
