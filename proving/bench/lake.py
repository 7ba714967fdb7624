"""``workbench bench lake``: the reading API's latency on the design's two questions.

1. "What is the average temperature in building X right now?" — ``building_state``
   for one building, p50/p99 over many calls (target p99 ≤ 50 ms). The table is
   produced by the processor's own write path from five minutes of a simulated
   fleet's events.
2. "One building's telemetry for the last 3 hours" out of the shared 10 M-event
   benchmark lake (target ≤ 1 s), median of several runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import random
import shutil
import statistics
import time

from proving.bench import add_bench, report, timed_runs
from proving.bench.query import add_lake_options, ensure_bench_lake
from workbench.cli import say
from workbench.config import Config
from workbench.lake.read import building_state, telemetry
from workbench.tenancy.principal import Principal

__all__ = ["bench_lake"]

_READER = Principal.system("bench")


def _state_lake(config: Config, devices: int) -> tuple[Config, list[str]]:
    """A lake whose building_state holds ``devices`` devices' last five minutes."""
    from ingest_service.processor.decode import RecordBatch
    from ingest_service.processor.processor import Processor
    from simulator.fleet import Fleet

    lake = config.home / "bench" / "state-lake"
    shutil.rmtree(lake, ignore_errors=True)
    state_config = dataclasses.replace(config, lake=str(lake))
    fleet = Fleet.generate(devices)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    records = list(fleet.kafka_records(start, devices * 5))
    processor = Processor(state_config)
    processor.assign([0])
    processor.process(
        RecordBatch(
            [v for _, v in records],
            [k for k, _ in records],
            [0] * len(records),
            list(range(len(records))),
        )
    )
    return state_config, [b.building_id for b in fleet.buildings]


def bench_lake(config: Config, args: argparse.Namespace) -> int:
    """Time both questions, print a table and append the figures to results.jsonl."""

    rows: list[list[object]] = []
    figures: dict[str, object] = {"events": args.events, "devices": args.devices}

    say(f"building_state of {args.devices:,} devices (processor write path) ...")
    state_config, buildings = _state_lake(config, args.devices)
    rng = random.Random(0)
    building_state(state_config, building_id=buildings[0], principal=_READER)  # warm-up
    times = []
    for _ in range(args.calls):
        building = rng.choice(buildings)
        t0 = time.perf_counter()
        state = building_state(state_config, building_id=building, principal=_READER)
        times.append(time.perf_counter() - t0)
        assert state.height == 1, f"no building_state row for {building}"
    times.sort()
    p50, p99 = statistics.median(times), times[int(0.99 * (len(times) - 1))]
    rows.append(
        ["current averages of one building", len(buildings), f"{p50 * 1e3:.1f}", f"{p99 * 1e3:.1f}"]
    )
    figures["building_state_p50_s"], figures["building_state_p99_s"] = round(p50, 5), round(p99, 5)

    lake_config, end = ensure_bench_lake(
        config, events=args.events, devices=args.devices, days=args.days
    )
    building = "b-0001"
    t = timed_runs(
        lambda: (
            telemetry(
                lake_config,
                building_id=building,
                start=end - dt.timedelta(hours=3),
                end=end,
                principal=_READER,
            ).height
        ),
        runs=args.runs,
    )
    rows.append(
        [
            f"{building}, last 3 h of {args.events:,} events",
            t.result,
            f"{t.median_s * 1e3:.0f}",
            f"{t.worst_s * 1e3:.0f}",
        ]
    )
    figures["building_3h_median_s"], figures["building_3h_rows"] = round(t.median_s, 4), t.result

    report(
        config,
        "lake",
        rows,
        header=["question", "rows / buildings", "p50|median ms", "p99|max ms"],
        figures=figures,
    )
    return 0


def _configure(p: argparse.ArgumentParser) -> None:
    add_lake_options(p)
    p.add_argument("--calls", type=int, default=200, help="building_state calls (200)")
    p.add_argument("--runs", type=int, default=5, help="timed 3-hour reads (5)")


add_bench(
    "lake",
    bench_lake,
    "latency of 'current averages of building X' and 'one building, last 3 hours'",
    _configure,
)
