"""``workbench up | down | status | logs``: the supervisor's verbs."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from workbench import plugins
from workbench.cli import Verb, print_table, say, verb_group, whole_number
from workbench.config import Config
from workbench.exceptions import WorkbenchError
from workbench.stack import supervisor
from workbench.stack.base import UpOptions
from workbench.stack.components import registered

__all__ = ["DEMO_GROUP", "EXIT_NOT_RUNNING", "EXIT_UNHEALTHY", "register"]

EXIT_UNHEALTHY = 1
EXIT_NOT_RUNNING = 3
# plug-ins that seed demo data for `workbench up`: ``seed(config, *, devices) -> lines``,
# the lines printed after the addresses (see workbench.plugins)
DEMO_GROUP = "workbench.demo"


def _cmd_up(config: Config, args: argparse.Namespace) -> int:
    options = UpOptions(
        devices=args.devices,
        interval=args.interval,
        scenario=args.scenario,
        skip=frozenset({"simulator"} if args.no_simulator else ()),
    )
    _check_names(config, args.components)
    only = args.components or None
    if only is None:  # the whole stack: with the demo's tenants, buildings and users
        demo = _seed_demo(config, devices=options.devices or config.simulator_devices)
    statuses = supervisor.up(config, options, only=only, report=say)
    _print_status_table(statuses)
    if only is None:
        _print_welcome(config, demo)
    return 0 if statuses and all(s.healthy for s in statuses) else EXIT_UNHEALTHY


def _seed_demo(config: Config, *, devices: int) -> list[str]:
    """Have every installed demo plug-in seed what is missing; the lines they print."""
    names = plugins.names(DEMO_GROUP)
    if not names:
        return [f"  no demo data: no {DEMO_GROUP} plug-in is installed"]
    lines: list[str] = []
    for name in names:
        seed: Callable[..., Sequence[str]] = plugins.load(DEMO_GROUP, name)
        lines += seed(config, devices=devices)
    return lines


def _print_welcome(config: Config, demo: Sequence[str]) -> None:
    """Where to go, then what the demo plug-ins say (who can log in)."""
    h = config.host
    print()
    print(f"  dashboards           http://{h}:{config.panel_port}/  (log in; links per role)")
    print(f"  gateway (devices)    http://{h}:{config.gateway_port}/v1/telemetry")
    print(f"  legacy devices       tcp://{h}:{config.legacy_port}")
    print(f"  MQTT devices         mqtt://{h}:{config.mqtt_port}  (IoT Hub style, SAS token)")
    print(f"  HiveServer2          jdbc:hive2://{h}:{config.hive_port}/default  (pyhive, beeline)")
    if os.geteuid() == 0:
        print(f"  JupyterHub           http://{h}:{config.hub_port}/  (notebooks, same logins)")
    else:
        print("  JupyterHub           not started: it needs root to give each user an OS account")
    print(f"  JupyterLab (devs)    make lab  ->  http://{h}:{config.lab_port}/  (single-user)")
    print()
    for line in demo:
        print(line)


def _cmd_restart(config: Config, args: argparse.Namespace) -> int:
    _check_names(config, args.components)
    if args.rolling:
        statuses = supervisor.rolling_restart(config, args.components or None, report=say)
    elif not args.components:
        raise WorkbenchError(
            "name the components to restart", hint="or use --rolling to restart all of them"
        )
    else:
        statuses = supervisor.restart(config, args.components, report=say)
    _print_status_table(statuses)
    return 0 if statuses and all(s.healthy for s in statuses) else EXIT_UNHEALTHY


def _check_names(config: Config, names: Sequence[str]) -> None:
    """Every name a component this configuration runs (``kafka`` stands for an external
    cluster and ``broker`` for the embedded one: only one of them is ever on)."""
    known = [c.name for c in registered()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise WorkbenchError(
            f"unknown component {unknown[0]!r}", hint=f"choose from {', '.join(known)}"
        )
    enabled = [c.name for c in registered() if c.enabled(config)]
    off = [n for n in names if n not in enabled]
    if off:
        raise WorkbenchError(
            f"component {off[0]!r} is off in this configuration",
            hint=f"its components are {', '.join(enabled)}",
        )


def _cmd_down(config: Config, args: argparse.Namespace) -> int:
    stopped = supervisor.down(config, report=say)
    if not stopped:
        say(f"nothing to stop: no workbench component is running under {config.home}")
    return 0


def _cmd_status(config: Config, args: argparse.Namespace) -> int:
    statuses = supervisor.status(config)
    healthy = bool(statuses) and all(s.healthy for s in statuses)
    if args.json:
        print(
            json.dumps(
                {
                    "healthy": healthy,
                    "home": str(config.home),
                    "components": [s.to_json() for s in statuses],
                },
                indent=2,
            )
        )
    elif statuses:
        _print_status_table(statuses)
    if not statuses:
        say(f"workbench is not running under {config.home}; start it with 'workbench up'")
        return EXIT_NOT_RUNNING
    for s in statuses:
        if not s.healthy:
            say(f"{s.name}: unhealthy: {s.detail}")
    return 0 if healthy else EXIT_UNHEALTHY


def _print_status_table(statuses: Sequence[supervisor.ComponentStatus]) -> None:
    rows = [(s.name, "yes" if s.healthy else "NO", s.pid, s.address, s.detail) for s in statuses]
    print_table(rows, header=("COMPONENT", "HEALTHY", "PID", "ADDRESS", "DETAIL"))


def _cmd_logs(config: Config, args: argparse.Namespace) -> int:
    names = [c.name for c in registered() if c.command is not None]
    if args.component and args.component not in names:
        raise WorkbenchError(
            f"unknown component {args.component!r}", hint=f"choose from {', '.join(names)}"
        )
    wanted = [args.component] if args.component else names
    paths = [
        (n, supervisor.log_path(config, n))
        for n in wanted
        if supervisor.log_path(config, n).exists()
    ]
    if not paths:
        raise WorkbenchError(
            f"no logs under {config.log_dir}", hint="start the stack with 'workbench up'"
        )
    for name, path in paths:
        lines = path.read_text(errors="replace").splitlines()[-args.lines :]
        for line in lines:
            print(f"{name} | {line}" if len(paths) > 1 else line)
    if args.follow:
        _follow(paths, prefix=len(paths) > 1)
    return 0


def _follow(paths: list[tuple[str, Path]], *, prefix: bool) -> None:
    handles = []
    for name, path in paths:
        f = path.open(errors="replace")
        f.seek(0, os.SEEK_END)
        handles.append((name, f))
    while True:
        quiet = True
        for name, f in handles:
            for line in f.readlines():
                quiet = False
                print(f"{name} | {line}" if prefix else line, end="", flush=True)
        if quiet:
            time.sleep(0.3)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _cmd_broker_fetch(config: Config, args: argparse.Namespace) -> int:
    from workbench.stack.kafka_broker import fetch_jars, kafka_version

    target = fetch_jars(report=say)
    jars = len(target.read_text().strip().split(":"))
    print(f"Apache Kafka {kafka_version()}: {jars} jars, class path in {target}")
    return 0


def register(verb: Verb) -> None:
    """Add the stack verbs to the ``workbench`` command."""
    p = verb("up", _cmd_up, "start the stack in the background and wait until it is healthy")
    p.add_argument("--devices", type=whole_number(1), metavar="N", help="simulated devices")
    p.add_argument(
        "--interval", type=_positive_float, metavar="SECONDS", help="seconds between events"
    )
    p.add_argument("--scenario", metavar="NAME", help="simulator scenario(s), comma-separated")
    p.add_argument("--no-simulator", action="store_true", help="do not start the simulator")
    p.add_argument(
        "components",
        nargs="*",
        metavar="COMPONENT",
        help="start only these components (default: all, plus the demo users)",
    )
    verb("down", _cmd_down, "stop every component 'workbench up' started")
    p = verb("restart", _cmd_restart, "stop and start components (e.g. after an upgrade)")
    p.add_argument("components", nargs="*", metavar="COMPONENT")
    p.add_argument(
        "--rolling",
        action="store_true",
        help="without downtime: gateway and processor replace their worker processes one "
        "at a time (a new one serves before an old one drains); hiveserver2 and voila "
        "restart in place; the embedded broker refuses (a single node). Without COMPONENT: "
        "every running component that can",
    )
    sub = verb_group(verb, "broker", "the embedded Apache Kafka broker's jars")
    f = sub.add_parser(
        "fetch",
        help="resolve the pinned Apache Kafka jars with Maven (make install runs it)",
        description="Resolve the Apache Kafka version pinned in the workbench's pom with "
        "Maven: downloaded once into Maven's local repository, offline afterwards. Prints "
        "the version and the class-path file.",
    )
    f.set_defaults(handler=_cmd_broker_fetch)
    p = verb("status", _cmd_status, "health of each component (exit 0 only when all healthy)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = verb("logs", _cmd_logs, "show a component's log (all components when none is named)")
    p.add_argument("component", nargs="?", metavar="COMPONENT")
    p.add_argument("-n", "--lines", type=int, default=50, help="lines to show (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
