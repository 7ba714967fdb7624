"""``python -m simulator run | scenarios | bench``: a thin layer over :func:`simulator.run`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from workbench.cli import ArgumentParser, say
from workbench.config import Config, settings_help
from workbench.exceptions import WorkbenchError
from workbench.logs import configure_logging

__all__ = ["main", "parser"]


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(raw: str) -> int | float:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{raw!r} must be positive")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    """The ``python -m simulator`` argument parser."""
    from simulator.scenarios import SCENARIOS, parse_scenarios

    parse_scenarios("normal")  # registers the built-ins
    epilog = settings_help()
    fmt = argparse.RawDescriptionHelpFormatter
    p = ArgumentParser(
        prog="python -m simulator",
        description="Simulate a smart-building device fleet and send its telemetry.",
        epilog=epilog,
        formatter_class=fmt,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    r = sub.add_parser(
        "run",
        help="simulate the fleet and send its events",
        description="Simulate the fleet and send its events; progress on stderr, "
        "the summary (--json: as JSON on stdout) at the end.",
        epilog=epilog,
        formatter_class=fmt,
    )
    r.add_argument(
        "--devices",
        type=_positive(int),
        default=None,
        help="fleet size (WORKBENCH_SIM_DEVICES, 1000)",
    )
    r.add_argument(
        "--interval",
        type=_positive(float),
        default=None,
        help="seconds between a device's events (WORKBENCH_SIM_INTERVAL, 60)",
    )
    r.add_argument(
        "--duration",
        type=_positive(float),
        default=None,
        help="simulated seconds to run (default: until stopped)",
    )
    r.add_argument(
        "--speedup",
        type=_positive(float),
        default=1.0,
        help="simulated seconds per wall second (1)",
    )
    r.add_argument("--seed", type=int, default=0, help="fleet and scenario seed (0)")
    r.add_argument(
        "--tenants", type=_positive(int), default=2, help="tenants owning the buildings (2)"
    )
    r.add_argument(
        "--buildings",
        type=_positive(int),
        default=None,
        help="buildings (default: one per ~400 devices, up to 10 for small fleets)",
    )
    r.add_argument(
        "--scenario",
        default=None,
        help="comma-separated scenarios: "
        + ", ".join(sorted(SCENARIOS))
        + " (WORKBENCH_SIM_SCENARIO, normal)",
    )
    r.add_argument(
        "--target",
        choices=("gateway", "kafka"),
        default="gateway",
        help="send through the gateway (HTTP + FBK1) or straight to Kafka (gateway)",
    )
    r.add_argument("--truth", type=Path, default=None, help="write a ground-truth log (JSON lines)")
    r.add_argument(
        "--progress",
        type=_positive(float),
        default=2.0,
        help="seconds between progress lines on stderr (2)",
    )
    r.add_argument(
        "--status", type=Path, default=None, help="keep a JSON heartbeat with the counters here"
    )
    r.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    r.set_defaults(handler=_cmd_run)

    s = sub.add_parser("scenarios", help="list the scenarios and what a dashboard shows")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(handler=_cmd_scenarios)

    from simulator import bench

    b = sub.add_parser(
        "bench",
        help="CPU cost of simulating a large fleet (also: workbench bench simulator)",
        description=bench.__doc__,
        formatter_class=fmt,
    )
    bench.configure(b)
    b.set_defaults(handler=bench.handle)
    return p


def _cmd_run(config: Config, args: argparse.Namespace) -> int:
    from simulator.run import RunOptions, run

    options = RunOptions(
        devices=args.devices or config.simulator_devices,
        interval_s=args.interval or config.simulator_interval,
        duration_s=args.duration,
        speedup=args.speedup,
        seed=args.seed,
        scenario=args.scenario or config.simulator_scenario,
        target=args.target,
        truth=args.truth,
        tenants=args.tenants,
        buildings=args.buildings,
        status_file=args.status,
        progress_s=args.progress,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        say(f"simulator: {signal.Signals(signum).name}, finishing")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    summary = run(config, options, report=say, stop=stop)
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    return 0 if summary.stats.failed == 0 else 1


def _cmd_scenarios(config: Config, args: argparse.Namespace) -> int:
    from simulator.scenarios import SCENARIOS

    items = [SCENARIOS[name]() for name in sorted(SCENARIOS)]
    if args.json:
        print(
            json.dumps(
                [{"name": s.name, "summary": s.summary, "dashboard": s.dashboard} for s in items],
                indent=2,
            )
        )
    else:
        for s in items:
            print(f"{s.name:<24} {s.summary}\n{'':<24} dashboard: {s.dashboard}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulator``."""
    args = parser().parse_args(argv)
    try:
        config = Config.from_env()
        configure_logging(config.log_level)
        code: int = args.handler(config, args)
        return code
    except WorkbenchError as exc:
        if os.environ.get("WORKBENCH_DEBUG") == "1":
            raise
        say(f"simulator: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        say("simulator: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
