"""``workbench bench simulator``: the simulator's CPU cost.

Measures the CPU seconds this process spends per simulated interval (one
event per device) for a large fleet:

* ``generate``: physics + scenarios for one tick (:meth:`Fleet.ticks`);
* ``kafka-encode``: the gateway-format record values (what ``--target kafka`` sends);
* ``device-encode``: the device→gateway JSON bodies (what ``--target gateway`` sends);
* optionally (``--send kafka|gateway``) a real run over a few simulated
  intervals with ``--speedup``, which adds the cost of producing to Kafka or
  of the HTTP/FBK1 requests (provisioning is excluded).

The share of one core at one event per device per ``interval`` is CPU seconds
per interval divided by the interval. Figures are medians over the ticks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

from proving.bench import add_bench, report
from simulator.encode import device_payloads, kafka_values
from simulator.fleet import Fleet
from simulator.scenarios import parse_scenarios
from workbench.config import Config

__all__ = ["configure", "handle", "measure_generator"]


def measure_generator(
    devices: int, *, ticks: int = 5, seed: int = 0, scenario: str = "normal"
) -> dict[str, float]:
    """Median CPU seconds per tick of each stage, for ``devices`` devices."""
    t0 = time.process_time()
    fleet = Fleet.generate(devices, seed=seed)
    _ = fleet._record_parts
    fleet_cpu = time.process_time() - t0
    start = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)
    stream = fleet.ticks(start, scenarios=parse_scenarios(scenario))
    gen, kenc, denc = [], [], []
    for _ in range(ticks):
        c0 = time.process_time()
        frame = next(stream)
        c1 = time.process_time()
        values = kafka_values(fleet, frame).to_list()
        c2 = time.process_time()
        bodies = device_payloads(frame).to_list()
        c3 = time.process_time()
        gen.append(c1 - c0)
        kenc.append(c2 - c1)
        denc.append(c3 - c2)
        del values, bodies
    return {
        "fleet_build_cpu_s": fleet_cpu,
        "generate_cpu_s": statistics.median(gen),
        "kafka_encode_cpu_s": statistics.median(kenc),
        "device_encode_cpu_s": statistics.median(denc),
    }


def configure(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--devices", type=int, default=100_000, help="fleet size (100000)")
    parser.add_argument("--ticks", type=int, default=5, help="ticks to measure (5)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per event (60)")
    parser.add_argument("--scenario", default="normal", help="scenarios applied (normal)")
    parser.add_argument(
        "--send",
        choices=("kafka", "gateway"),
        default=None,
        help="also send for --ticks intervals: straight to Kafka (KAFKA_BOOTSTRAP_SERVERS / "
        "the embedded broker) or through a running gateway (which provisions the fleet)",
    )
    parser.add_argument(
        "--speedup", type=float, default=10.0, help="time compression of the --send run (10)"
    )


def handle(config: Config, args: argparse.Namespace) -> int:
    """Run the benchmark, print a table, append to the results log."""
    generator = measure_generator(args.devices, ticks=args.ticks, scenario=args.scenario)
    figures: dict[str, float | str | int] = dict(generator)
    per_tick = (
        generator["generate_cpu_s"]
        + generator["kafka_encode_cpu_s"]
        + generator["device_encode_cpu_s"]
    )
    rows: list[tuple[str, str]] = [
        ("devices", f"{args.devices}"),
        ("fleet build (once), CPU s", f"{figures['fleet_build_cpu_s']:.3f}"),
        ("generate one tick, CPU s", f"{figures['generate_cpu_s']:.3f}"),
        ("encode Kafka records, CPU s/tick", f"{figures['kafka_encode_cpu_s']:.3f}"),
        ("encode device bodies, CPU s/tick", f"{figures['device_encode_cpu_s']:.3f}"),
        (
            f"generator share of a core at 1 event/{args.interval:g}s",
            f"{per_tick / args.interval:.2%}",
        ),
    ]
    figures["generator_core_share"] = per_tick / args.interval
    if args.send:
        from simulator.run import RunOptions, run

        summary = run(
            config,
            RunOptions(
                devices=args.devices,
                interval_s=args.interval,
                duration_s=args.interval * args.ticks,
                speedup=args.speedup,
                target=args.send,
                scenario=args.scenario,
            ),
        )
        cpu_per_interval = summary.cpu_s / args.ticks
        figures |= {
            "send_target": args.send,
            "send_events": summary.stats.sent,
            "send_failed": summary.stats.failed,
            "send_cpu_s_per_interval": cpu_per_interval,
            "send_core_share": cpu_per_interval / args.interval,
            "send_wall_s": summary.wall_s,
        }
        rows += [
            (
                f"send to {args.send}: events",
                f"{summary.stats.sent} ({summary.stats.failed} failed)",
            ),
            (f"send to {args.send}: CPU s per interval", f"{cpu_per_interval:.3f}"),
            (
                f"send to {args.send}: share of a core at 1 event/{args.interval:g}s",
                f"{cpu_per_interval / args.interval:.2%}",
            ),
        ]
    report(
        config,
        "simulator",
        rows,
        header=("figure", "value"),
        figures={"devices": args.devices, "interval_s": args.interval, "scenario": args.scenario}
        | {k: round(v, 6) if isinstance(v, float) else v for k, v in figures.items()},
    )
    return 0


add_bench(
    "simulator",
    handle,
    "CPU cost of the fleet simulator "
    "(100,000 devices at 1 event/min: target under a quarter of a core)",
    configure,
)
