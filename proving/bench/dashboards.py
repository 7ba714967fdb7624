"""``workbench bench dashboards``: how long a dashboard page takes to show its main content
in a real browser, for this source tree and, side by side in the same run, another one.

In a scratch home under ``$WORKBENCH_HOME/bench/dashboards`` the bench seeds the demo
tenants, buildings and users, provisions ``--devices`` simulated devices and puts
``--minutes`` of their events through the processor's own commit path (so
``telemetry``, ``building_metrics_1m`` and ``building_state`` are what a live stack
holds). It then starts one dashboards server per source tree on its own ports, this
tree's and, with ``--against DIR`` (a checkout or ``git worktree`` of an earlier commit),
that tree's (``PYTHONPATH=DIR``), all on the same lake, and drives Chromium
(``/usr/bin/chromium``, like the browser tests) through ``--loads`` rounds. A round opens
each page once on every server in turn, so both see the same machine load:

* home (``.wb-who``) as the first tenant's viewer;
* building (``.wb-kpi-temperature``: the figures; then ``.wb-trends canvas``: the charts)
  as that viewer;
* fleet (``.wb-card``) as the first tenant's operator;
* provisioning (``.wb-prov-submit``, the Voila notebook) as that operator.

``--registry N`` imports N more devices into the registry (spread over the demo
buildings, in one commit) that never send: the pages then hold a fleet of that size,
most of it silent, as one being onboarded is.

A page's time runs from ``goto`` until its selector is in the page (the first load of a
server is a warm-up, not counted). Medians per page and tree, and their ratio. Wall times
follow the machine's load; so the bench also reports, per tree, the CPU seconds a server
spends building and serializing one building page (median of 7, in a process of its own),
which hardly does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from proving.bench import add_bench, report
from proving.ports import free_port
from proving.processes import stop_process
from workbench.cli import say, whole_number
from workbench.config import Config

__all__ = ["run_bench"]

CHROMIUM = "/usr/bin/chromium"
_VOILA = "voila:"  # a path on the Voila server, not the Panel one
_PAGE_TIMEOUT_S = 120
_PAGES = (
    # (name, user kind, path, selector)
    ("home", "viewer", "/", ".wb-who"),
    ("building: figures", "viewer", "/building", ".wb-kpi-temperature"),
    ("building: charts", "viewer", None, ".wb-trends canvas"),
    ("fleet", "operator", "/fleet", ".wb-card"),
    # served by Voila (a kernel per page), on its own port: see _round
    ("provisioning", "operator", _VOILA + "/voila/render/provisioning.ipynb", ".wb-prov-submit"),
)


def _lake(
    config: Config, home: Path, *, devices: int, minutes: int, registry: int = 0
) -> tuple[dict[str, str], dict[str, str]]:
    """A scratch home with the demo users and ``minutes`` of processed events (and
    ``registry`` more devices in the registry that never sent: silent, as a fleet
    being onboarded is): its env and the demo users' passwords."""
    from ingest_service.processor.decode import RecordBatch
    from ingest_service.processor.processor import Processor
    from proving.demo import seed_demo
    from simulator.fleet import Fleet
    from simulator.provision import provision_fleet

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {
        **config.env(),
        "WORKBENCH_HOME": str(home),
        "WORKBENCH_LAKE": str(home / "lake"),
        "WORKBENCH_LOG_LEVEL": "WARNING",
    }
    scratch = Config.from_env(env)
    logins, _ = seed_demo(scratch, devices=devices)
    fleet = Fleet.generate(devices)
    provision_fleet(scratch, fleet)
    processor = Processor(scratch)
    processor.assign([0])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)
    records = list(fleet.kafka_records(start, devices * minutes))
    for first in range(0, len(records), 5000):
        part = records[first : first + 5000]
        processor.process(
            RecordBatch(
                [v for _, v in part],
                [k for k, _ in part],
                [0] * len(part),
                list(range(first, first + len(part))),
            )
        )
    if registry:
        _onboard(scratch, home / "onboarded.csv", registry)
    return env, {login.user: login.password for login in logins}


def _onboard(config: Config, csv: Path, count: int) -> None:
    """``count`` devices spread over the demo buildings, imported in one commit (what
    ``workbench devices import`` does), none of which has sent anything."""
    import polars as pl

    from workbench.registry.store import Registry
    from workbench.tenancy.principal import Principal

    registry = Registry(config, principal=Principal.system("admin"))
    buildings = registry.buildings()["building_id"].to_list()
    pl.DataFrame(
        {
            "device_id": [f"onboard-{i:07d}" for i in range(count)],
            "building_id": [buildings[i % len(buildings)] for i in range(count)],
            "device_type": ["environment"] * count,
        }
    ).write_csv(csv)
    say(f"importing {count:,} more devices into the registry (they send nothing) …")
    registry.import_csv(csv)


def _cwd(tree: Path | None, scratch: Path) -> Path:
    """Where a tree's process starts: ``python -m``/``-c`` put the working directory first
    on ``sys.path``, so started from a checkout it would import that checkout's workbench
    whatever ``PYTHONPATH`` says."""
    return tree if tree is not None else scratch


def _serve(
    env: dict[str, str], tree: Path | None, log: Path
) -> tuple[subprocess.Popen[bytes], tuple[str, str]]:
    """A dashboards server of ``tree`` (None: this one) on free ports; it and its Panel
    and Voila URLs."""
    env = {
        **env,
        "WORKBENCH_PANEL_PORT": str(free_port()),
        "WORKBENCH_VOILA_PORT": str(free_port()),
    }
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    config = Config.from_env(env)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.dashboards"],
            env={**os.environ, **env},
            cwd=_cwd(tree, log.parent),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{config.host}:{config.panel_port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboards server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/login", timeout=2):
                return proc, (url, f"http://{config.host}:{config.voila_port}")
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up: {log.read_text()[-2000:]}") from None
            time.sleep(0.3)


# Builds the building page of ``argv[1]`` and serializes its Bokeh document, as a served
# page's first request does, ``argv[2]`` times after a warm-up; prints the median CPU seconds.
_SERVER_CPU = """
import statistics, sys, time
from bokeh.document import Document
from workbench import load_config
from workbench.dashboards.data import DataStore
from workbench.dashboards.identity import session_principal
from workbench.dashboards.views.building_page import BuildingApp
from workbench.dashboards.views.panel_common import panel_module
panel_module()
config = load_config()
principal = session_principal(config, as_user=sys.argv[1])
def once():
    started = time.process_time()
    doc = Document()
    doc.add_root(BuildingApp(DataStore(config, principal)).widget.get_root(doc))
    doc.to_json()
    return time.process_time() - started
once()
print(statistics.median(once() for _ in range(int(sys.argv[2]))))
"""


def _server_cpu(env: dict[str, str], tree: Path | None, user: str, runs: int) -> float:
    """CPU seconds the server spends building one building page (median of ``runs``):
    unlike a page's wall time, hardly moved by what else runs on the machine."""
    env = {**os.environ, **env}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    out = subprocess.run(
        [sys.executable, "-c", _SERVER_CPU, user, str(runs)],
        env=env,
        cwd=_cwd(tree, Path(env["WORKBENCH_HOME"])),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _login(browser: Any, url: str, user: str, password: str) -> Any:
    page = browser.new_context().new_page()
    page.goto(f"{url}/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login")
    page.wait_for_selector(".wb-who")
    return page


def _round(pages: dict[str, Any], urls: tuple[str, str]) -> dict[str, float]:
    """Each page once; seconds from ``goto`` to its selector. ``urls``: the Panel and the
    Voila server's (the login's cookie serves both)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    took: dict[str, float] = {}
    started = 0.0
    for name, kind, path, selector in _PAGES:
        page = pages[kind]
        if path is not None:
            started = time.monotonic()
            on_voila = path.startswith(_VOILA)
            page.goto(f"{urls[1] if on_voila else urls[0]}{path.removeprefix(_VOILA)}")
        try:
            page.wait_for_selector(selector, state="attached", timeout=_PAGE_TIMEOUT_S * 1000)
        except PlaywrightTimeout:
            # a page that does not show is a finding, not the end of the bench
            say(f"  {name}: not shown within {_PAGE_TIMEOUT_S} s")
            took[name] = math.inf
            continue
        took[name] = time.monotonic() - started
    return took


def _shown(seconds: float) -> str:
    return f"> {_PAGE_TIMEOUT_S} s" if math.isinf(seconds) else f"{seconds:.2f}"


def run_bench(config: Config, args: argparse.Namespace) -> int:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        say(f"{CHROMIUM} is missing: run 'make system-deps'")
        return 1
    if args.against is not None and not (args.against / "workbench" / "__init__.py").exists():
        say(f"--against {args.against}: not a source tree (no workbench/__init__.py in it)")
        return 2
    home = config.home / "bench" / "dashboards"
    say(f"scratch lake: {args.devices} devices, {args.minutes} minutes of events …")
    env, logins = _lake(
        config, home / "home", devices=args.devices, minutes=args.minutes, registry=args.registry
    )
    trees: dict[str, Path | None] = {"this tree": None}
    if args.against is not None:
        trees[f"against {args.against}"] = args.against
    servers = {
        name: _serve(env, tree, home / f"server-{n}.log")
        for n, (name, tree) in enumerate(trees.items())
    }
    times: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            sessions = {
                name: {
                    kind: _login(browser, urls[0], user, logins[user])
                    for kind, user in (("viewer", "viewer1"), ("operator", "operator1"))
                }
                for name, (_, urls) in servers.items()
            }
            for n in range(args.loads + 1):
                for name, (_, urls) in servers.items():
                    took = _round(sessions[name], urls)
                    if n == 0:
                        continue  # warm-up: the server's first page imports and caches
                    for page, seconds in took.items():
                        times[name].setdefault(page, []).append(seconds)
                say(f"  round {n}/{args.loads} done")
            browser.close()
    finally:
        for proc, _ in servers.values():
            stop_process(proc, timeout_s=30)
    names = list(trees)
    cpu = [_server_cpu(env, trees[name], "viewer1", 7) for name in names]
    first: list[object] = ["building: server CPU", *(f"{c:.2f}" for c in cpu)]
    if len(names) == 2:
        first.append(f"{cpu[1] / cpu[0]:.2f}x")
    rows: list[list[object]] = [first]
    figures: dict[str, Any] = {
        "devices": args.devices,
        "registry_devices": args.devices + args.registry,
        "loads": args.loads,
        "building: server CPU": dict(zip(names, cpu, strict=True)),
    }
    for page, *_ in _PAGES:
        medians = [statistics.median(times[name][page]) for name in names]
        row: list[object] = [page, *(_shown(m) for m in medians)]
        if len(names) == 2:
            finite = not any(math.isinf(m) for m in medians)
            row.append(f"{medians[1] / medians[0]:.2f}x" if finite else "—")
        rows.append(row)
        # a page not shown in time is recorded as null (JSON has no infinity)
        figures[page] = {
            name: None if math.isinf(m) else m for name, m in zip(names, medians, strict=True)
        }
    figures["load_average"] = os.getloadavg()
    header = ["page (median s)", *names] + (["against / this"] if len(names) == 2 else [])
    report(config, "dashboards", rows, header=header, figures=json.loads(json.dumps(figures)))
    say(f"load average {os.getloadavg()[0]:.1f}")
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=whole_number(1), default=200, help="simulated devices")
    parser.add_argument("--minutes", type=whole_number(1), default=60, help="minutes of events")
    parser.add_argument("--loads", type=whole_number(1), default=5, help="timed rounds per tree")
    parser.add_argument(
        "--registry",
        type=whole_number(0),
        default=0,
        help="more devices in the registry that send nothing (e.g. 1000000: the fleet, "
        "silent-device and provisioning pages at a million devices)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        help="another source tree (e.g. a git worktree of an earlier commit) to time side by side",
    )


add_bench(
    "dashboards",
    run_bench,
    "page loads of home, building, fleet and provisioning in Chromium, side by side with "
    "another tree",
    _configure,
)
