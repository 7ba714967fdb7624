"""``workbench bench NAME``, ``workbench drill NAME|all`` and ``workbench soak``: the proving
verbs, added to the ``workbench`` command through the ``workbench.cli`` entry-point group."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from proving.bench import benches
from workbench.cli import Verb, say, verb_group
from workbench.config import Config
from workbench.exceptions import WorkbenchError

__all__ = ["register"]


def _cmd_drill(config: Config, args: argparse.Namespace) -> int:
    from proving.drills import drills, run_drill

    known = drills()
    if args.list:
        for spec in known.values():
            print(f"{spec.name:<20} {spec.summary}")
        return 0
    if args.name is None:
        raise WorkbenchError("name a drill", hint=f"choose from all, {', '.join(known)}")
    names = list(known) if args.name == "all" else [args.name]
    if names[0] not in known:
        raise WorkbenchError(
            f"unknown drill {args.name!r}", hint=f"choose from all, {', '.join(known)}"
        )
    reports = [
        run_drill(name, say=say, home=args.home / name if args.home else None, keep=args.keep)
        for name in names
    ]
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
    failed = [r.name for r in reports if not r.ok]
    if len(reports) > 1:
        say(f"{len(reports) - len(failed)} of {len(reports)} drills passed")
    return 1 if failed else 0


def _cmd_soak(config: Config, args: argparse.Namespace) -> int:
    from proving.bench import record_result
    from proving.soak import SoakOptions, run_soak

    if not 0 < args.roll_at < 1 and not args.no_roll:
        raise WorkbenchError("--roll-at must be between 0 and 1 (a fraction of the run)")
    options = SoakOptions(
        devices=args.devices,
        interval_s=args.interval,
        minutes=args.minutes,
        roll_at=None if args.no_roll else args.roll_at,
        home=args.home,
        keep=args.keep,
    )
    report = run_soak(options, say=say)
    figures = report.figures()
    path = record_result(config, "soak", figures)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print("\n".join(report.lines()))
    if args.report:
        args.report.write_text("\n".join(["```", *report.lines(), "```", ""]))
    say(f"figures appended to {path}")
    return 0 if report.ok else 1


def register(verb: Verb) -> None:
    """Add ``bench``, ``drill`` and ``soak``."""
    from proving.drills import drills

    _register_bench(verb)
    p = verb(
        "drill",
        _cmd_drill,
        "break a scratch stack on purpose (kills, restarts, bad input) and check the lake",
    )
    p.description = (
        "Each drill starts its own broker, gateway and processor under a temporary home on "
        "free ports (never the stack 'workbench up' runs), drives simulated devices, injures "
        "it, then compares the devices' ground truth with the lake. It prints what it did "
        "and what it verified, and exits 1 when a check fails. Drills: "
        + "; ".join(f"{d.name}: {d.summary}" for d in drills().values())
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="a drill, or 'all'")
    p.add_argument("--list", action="store_true", help="list the drills")
    p.add_argument(
        "--home", type=Path, help="scratch home (default: a temporary folder, removed after)"
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch home for inspection")
    p.add_argument("--json", action="store_true", help="the reports as JSON on stdout")

    s = verb(
        "soak",
        _cmd_soak,
        "run the seed scenario for minutes with a rolling restart midway; report the figures",
    )
    s.description = (
        "Start a scratch stack (broker, gateway, processor, hiveserver2, voila; private home, "
        "free ports), send with the simulated fleet through the gateway, restart every "
        "component that can roll at --roll-at of the run, then compare the devices' ground "
        "truth with the lake. Reports events sent/accepted/stored/duplicated/lost, failed "
        "device requests, p50/p99 freshness of building_state and CPU/memory per component; "
        "exits 1 unless nothing was lost, duplicated or failed. The full seed run is the "
        "default (100,000 devices, 1 event/min, 10 minutes)."
    )
    s.add_argument("--devices", type=int, default=100_000, help="fleet size (100000)")
    s.add_argument(
        "--interval", type=float, default=60.0, help="seconds between a device's events (60)"
    )
    s.add_argument("--minutes", type=float, default=10.0, help="how long devices send (10)")
    s.add_argument(
        "--roll-at", type=float, default=0.5, help="when to roll, as a fraction of the run (0.5)"
    )
    s.add_argument("--no-roll", action="store_true", help="no rolling restart")
    s.add_argument("--home", type=Path, help="scratch home (default: a temporary folder)")
    s.add_argument("--keep", action="store_true", help="keep the scratch home afterwards")
    s.add_argument("--report", type=Path, help="also write the report to this file")
    s.add_argument("--json", action="store_true", help="the figures as JSON on stdout")


def _register_bench(verb: Verb) -> None:
    """The ``bench`` group with one sub-verb per installed benchmark."""
    sub = verb_group(verb, "bench", "measure the system's performance figures", "BENCH")
    for bench in benches():
        bp: argparse.ArgumentParser = sub.add_parser(
            bench.name, help=bench.help, description=bench.help
        )
        bp.set_defaults(handler=bench.handler)
        if bench.configure is not None:
            bench.configure(bp)
