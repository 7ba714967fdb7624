"""``workbench drill NAME|all`` and ``workbench soak``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.cli import Verb, say
from workbench.config import Config
from workbench.exceptions import WorkbenchError

__all__ = ["register"]


def _cmd_drill(config: Config, args: argparse.Namespace) -> int:
    from workbench.ops.drills import DRILLS, run_drill

    if args.list:
        for spec in DRILLS.values():
            print(f"{spec.name:<18} {spec.summary}")
        return 0
    if args.name is None:
        raise WorkbenchError("name a drill", hint=f"choose from all, {', '.join(DRILLS)}")
    names = list(DRILLS) if args.name == "all" else [args.name]
    if names[0] not in DRILLS:
        raise WorkbenchError(
            f"unknown drill {args.name!r}", hint=f"choose from all, {', '.join(DRILLS)}"
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


def register(verb: Verb) -> None:
    """Add ``drill``."""
    from workbench.ops.drills import DRILLS

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
        + "; ".join(f"{d.name}: {d.summary}" for d in DRILLS.values())
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="a drill, or 'all'")
    p.add_argument("--list", action="store_true", help="list the drills")
    p.add_argument(
        "--home", type=Path, help="scratch home (default: a temporary folder, removed after)"
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch home for inspection")
    p.add_argument("--json", action="store_true", help="the reports as JSON on stdout")
