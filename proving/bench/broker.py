"""``workbench bench broker``: the embedded broker's CPU under a write and read pattern,
over time (docs/operations.md, "The embedded broker at the seed scale").

Tansu's in-memory storage walks every record batch a partition holds to serve a fetch
of new records, so its cost depends on how many batches are written (partitions,
linger) and how often they are fetched, and it grows with the run. This bench
reproduces that in isolation: a broker of its own (a scratch home on free ports),
``--producers`` producers shaped like the gateway's workers (kafka-python,
``acks=all``, ``WORKBENCH_GATEWAY_LINGER_MS``, one record per send) writing ``--rate``
events/s in all for ``--seconds``, in bursts every ``--burst-ms`` as the simulator's
devices send (or evenly spread: the broker's worst case), and one librdkafka
consumer reading them — ``paced`` like the processor's member (once caught up it pauses
and resumes just before the next commit interval) or ``tail`` (fetching whenever
records arrive). Every ``--sample`` seconds it reads the broker's CPU time.

It reports figures and has no target of its own: whether the broker keeps up at the
seed rate is the soak's verdict (``workbench soak``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from proving.bench import add_bench, report
from workbench.config import Config
from workbench.exceptions import InvalidInput
from workbench.kafka import client_settings

__all__ = ["Sample", "cpu_share", "run_bench"]

_FETCH_LEAD_S = 0.15  # as the processor's member: resume this long before the next take
_DRAIN_S = 30.0  # after the producers stop, how long the consumer may take to catch up


@dataclasses.dataclass(frozen=True)
class Sample:
    """One reading: seconds since the producers started, the broker's CPU seconds so far,
    and the records produced (acknowledged) and consumed so far."""

    at: float
    cpu: float
    produced: int
    consumed: int


def cpu_share(earlier: Sample, later: Sample) -> float:
    """The broker's CPU between two samples, as a share of one core.

    >>> cpu_share(Sample(10, 2.0, 0, 0), Sample(20, 4.5, 0, 0))
    0.25
    """
    span = later.at - earlier.at
    return (later.cpu - earlier.cpu) / span if span > 0 else 0.0


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0
        self.errors = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.value += n

    def error(self, _exc: object) -> None:
        with self._lock:
            self.errors += 1


def _records(devices: int) -> list[tuple[bytes, bytes]]:
    """One tick of a simulated fleet, in the gateway's output format: the sizes and keys
    the broker sees (the producers cycle through them)."""
    from simulator.fleet import Fleet

    fleet = Fleet.generate(devices, seed=0)
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    return list(fleet.kafka_records(start, devices))


def _produce(
    config: Config,
    records: list[tuple[bytes, bytes]],
    rate: float,
    burst_s: float,
    until: float,
    acked: _Counter,
) -> None:
    """Send ``rate`` records/s until ``until`` (monotonic), those due every ``burst_s``
    at once; count acks."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        **client_settings(config),
        client_id="bench-broker",
        acks="all",
        linger_ms=config.gateway_linger_ms,
        batch_size=256 * 1024,
    )
    source = itertools.cycle(records)
    started, sent = time.monotonic(), 0
    try:
        while (now := time.monotonic()) < until:
            due = int((now - started) * rate) - sent
            for _ in range(due):
                key, value = next(source)
                future = producer.send(config.topic, key=key, value=value)
                future.add_callback(lambda _meta: acked.add())
                future.add_errback(acked.error)
            sent += max(due, 0)
            time.sleep(burst_s)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=30)


def _consume(
    config: Config, fetch: str, interval: float, stop: threading.Event, consumed: _Counter
) -> None:
    """Read the topic from the beginning until ``stop``: ``paced`` or ``tail``."""
    from confluent_kafka import Consumer

    from ingest_service.processor.fetcher import POLL_RECORDS, rdkafka_settings

    group = f"bench-broker-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(rdkafka_settings(config, group=group, offset_reset="earliest"))
    consumer.subscribe([config.topic])
    started = time.monotonic()
    try:
        while not stop.is_set():
            polled = consumer.consume(POLL_RECORDS, 0.02 if fetch == "paced" else 0.1)
            consumed.add(sum(1 for m in polled if m.error() is None))
            if fetch != "paced" or not 0 < len(polled) < POLL_RECORDS:
                continue
            owned = consumer.assignment()
            consumer.pause(owned)
            now = time.monotonic()
            take_at = started + interval * (int((now - started) / interval) + 1)
            stop.wait(max(0.0, take_at - _FETCH_LEAD_S - now))
            consumer.resume(owned)
    finally:
        consumer.close()


def _cpu_s(tree: list[psutil.Process]) -> float:
    """CPU seconds of a process tree (:meth:`ScratchStack.processes`) so far."""
    total = 0.0
    for p in tree:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def run_bench(config: Config, args: argparse.Namespace) -> int:
    """``workbench bench broker``."""
    from proving.scratch import ScratchStack
    from workbench.cli import say

    for name in ("seconds", "rate", "producers", "sample", "devices", "burst_ms"):
        if getattr(args, name) <= 0:
            option = "--" + name.replace("_", "-")
            raise InvalidInput(f"{option} must be positive, got {getattr(args, name)}")
    partitions = args.partitions or config.topic_partitions
    linger = config.gateway_linger_ms if args.linger_ms is None else args.linger_ms
    interval = args.interval or config.commit_interval
    (config.home / "bench").mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="broker-", dir=config.home / "bench"))
    stack = ScratchStack(
        home=home,
        settings={
            "WORKBENCH_TOPIC_PARTITIONS": str(partitions),
            "WORKBENCH_GATEWAY_LINGER_MS": str(linger),
        },
        report=say,
    )
    samples: list[Sample] = []
    acked, consumed = _Counter(), _Counter()
    try:
        say("starting a broker of its own…")
        stack.up(["broker"])
        bench = stack.config
        broker = stack.processes()["broker"]  # the tansu process tree
        records = _records(args.devices)
        say(
            f"{args.producers} producer(s) at {args.rate:,.0f} events/s in all for "
            f"{args.seconds:g} s in bursts every {args.burst_ms:g} ms ({partitions} "
            f"partitions, linger {linger} ms), one "
            f"{args.fetch} consumer; broker CPU every {args.sample:g} s"
        )
        stop = threading.Event()
        consumer = threading.Thread(
            target=_consume, args=(bench, args.fetch, interval, stop, consumed), daemon=True
        )
        consumer.start()
        started = time.monotonic()
        until = started + args.seconds
        producers = [
            threading.Thread(
                target=_produce,
                args=(
                    bench,
                    records,
                    args.rate / args.producers,
                    max(args.burst_ms, 2) / 1000,
                    until,
                    acked,
                ),
                daemon=True,
            )
            for _ in range(args.producers)
        ]
        for t in producers:
            t.start()

        def sample() -> Sample:
            s = Sample(time.monotonic() - started, _cpu_s(broker), acked.value, consumed.value)
            if samples:
                say(
                    f"  {s.at:5.0f} s: broker {cpu_share(samples[-1], s):6.1%} of a core; "
                    f"produced {s.produced:,}, consumed {s.consumed:,}"
                )
            samples.append(s)
            return s

        sample()
        while (left := until - time.monotonic()) > 0:
            time.sleep(min(args.sample, left))
            sample()
        for t in producers:
            t.join(timeout=60)
        produced_at_end = samples[-1]
        deadline = time.monotonic() + _DRAIN_S
        while consumed.value < acked.value and time.monotonic() < deadline:
            time.sleep(0.2)
        drained = sample()
        stop.set()
        consumer.join(timeout=30)
    finally:
        stack.close()
        shutil.rmtree(home, ignore_errors=True)
    windows = [cpu_share(a, b) for a, b in itertools.pairwise(samples[:-1])]
    average = cpu_share(samples[0], produced_at_end)
    last = windows[-1] if windows else average
    caught_up = drained.consumed >= drained.produced
    figures: dict[str, Any] = {
        "partitions": partitions,
        "linger_ms": linger,
        "fetch": args.fetch,
        "interval_s": interval,
        "producers": args.producers,
        "burst_ms": args.burst_ms,
        "rate": args.rate,
        "seconds": args.seconds,
        "produced": drained.produced,
        "produce_errors": acked.errors,
        "consumed": drained.consumed,
        "lag_at_end": produced_at_end.produced - produced_at_end.consumed,
        "caught_up": caught_up,
        "broker_cpu_avg": round(average, 3),
        "broker_cpu_last": round(last, 3),
        "broker_cpu_samples": [
            [round(b.at), round(cpu_share(a, b), 3)] for a, b in itertools.pairwise(samples[:-1])
        ],
    }
    report(
        config,
        "broker",
        [
            ("achieved rate (acknowledged)", f"{drained.produced / args.seconds:,.0f}/s"),
            ("produce errors", f"{acked.errors:,}"),
            ("broker CPU, average", f"{average:.1%} of a core"),
            (f"broker CPU, last {args.sample:g} s", f"{last:.1%} of a core"),
            ("consumer lag when the producers stopped", f"{figures['lag_at_end']:,}"),
            (
                "consumer caught up",
                "yes"
                if caught_up
                else f"no: {drained.consumed:,} of {drained.produced:,} after {_DRAIN_S:g} s more",
            ),
        ],
        header=(
            "FIGURE",
            f"VALUE ({partitions} partitions, linger {linger} ms, bursts every "
            f"{args.burst_ms:g} ms, {args.fetch}, {args.seconds:g} s)",
        ),
        figures=figures,
    )
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=float, default=120, help="how long the producers write (default 120)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1667,
        help="events/s of all producers together (default 1667: the seed fleet's rate)",
    )
    parser.add_argument(
        "--producers", type=int, default=2, help="producers, like gateway workers (default 2)"
    )
    parser.add_argument(
        "--burst-ms",
        type=float,
        default=100,
        help="the producers send what is due every this many ms (default 100, as the "
        "simulator releases events in 0.1 s chunks; 2 spreads them evenly, the embedded "
        "broker's worst case: the most, smallest batches)",
    )
    parser.add_argument(
        "--partitions", type=int, help="the topic's partitions (default WORKBENCH_TOPIC_PARTITIONS)"
    )
    parser.add_argument(
        "--linger-ms",
        type=int,
        help="the producers' linger (default WORKBENCH_GATEWAY_LINGER_MS)",
    )
    parser.add_argument(
        "--fetch",
        choices=("paced", "tail"),
        default="paced",
        help="paced: like the processor's member (default); tail: fetch whenever records arrive",
    )
    parser.add_argument(
        "--interval",
        type=float,
        help="paced fetching's interval (default WORKBENCH_COMMIT_INTERVAL)",
    )
    parser.add_argument(
        "--sample", type=float, default=10, help="seconds between CPU readings (default 10)"
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=2000,
        help="simulated devices whose records the producers cycle through (default 2000)",
    )


add_bench(
    "broker",
    run_bench,
    "the embedded broker's CPU over time under gateway-shaped writes and one consumer",
    _configure,
)
