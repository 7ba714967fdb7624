"""``python -m simulator run | scenarios``: a thin layer over :func:`simulator.run`.

Its CPU cost is measured by ``workbench bench simulator``.
"""

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

from workbench.cli import ArgumentParser, say, subcommands
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
    from simulator.scenarios import scenario_names
    from simulator.targets.base import target_names

    epilog = settings_help()
    fmt = argparse.RawDescriptionHelpFormatter
    p = ArgumentParser(
        prog="python -m simulator",
        description="Simulate a smart-building device fleet and send its telemetry.",
        epilog=epilog,
        formatter_class=fmt,
    )
    sub = subcommands(p, "command")
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
        + ", ".join(scenario_names())
        + " (WORKBENCH_SIM_SCENARIO, normal)",
    )
    r.add_argument(
        "--target",
        choices=target_names(),
        default="gateway",
        help="where to send: the gateway (HTTP + FBK1), straight to Kafka, or an "
        "installed target plug-in (gateway)",
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
    from simulator.scenarios import load_scenario, scenario_names

    items = [load_scenario(name) for name in scenario_names()]
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
