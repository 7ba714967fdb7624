"""``workbench bench alarms``: event accepted by the gateway -> alarm row visible in
``alarms`` -> webhook delivered (target: p99 <= 2 s at the seed's rate), beside the plain
freshness of the same events as the baseline.

It is ``workbench bench freshness`` (:mod:`proving.bench.freshness`: a private home,
lake, topic and ports; the real broker, gateway and processor, plus the alarm
``notifier``, started by the supervisor; a sender subprocess open loop at ``--rate``)
with these differences:

1. each building's probe device is one of its smoke detectors, whose once-a-second
   probes alternate ``smoke: true`` and ``smoke: false`` (``ts`` = now): every other
   probe raises a ``smoke`` alarm of the default rules, the next one ends it;
2. every tenant's rule document is the shipped defaults plus a ``[[webhook]]`` to a
   receiver in the bench process (loopback, allowed for the bench only);
3. for each raising probe the bench notes when its ``202`` arrived, when the alarm row
   (device, ``raised_at`` = the probe's ``ts``) was first seen by a poller reading
   ``alarms`` every ``--poll`` s, when the receiver got its webhook, and when
   ``building_state`` first showed the probe (the baseline).

Latencies are from the ``202``; p50/p99/max over the raising probes after ``--warmup``
seconds, ``inf`` for an alarm never seen or never delivered within 30 s of the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from proving.bench import add_bench, report
from proving.bench.freshness import (
    _bench_config,
    _Poller,
    _wait_registry,
    freshness_percentiles,
    load_options,
    visible_at,
)
from workbench.config import Config

__all__ = ["run_bench"]

_TARGET_P99_S = 2.0
# a probe's readings are _CYCLE[seq % 2] (seq counts from 1): odd ones raise the alarm
_CYCLE = ('{"smoke":false}', '{"smoke":true}')


def _ms(value: Any) -> int:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return int(value.timestamp() * 1000)


class _Receiver:
    """The tenants' webhook endpoint: notes when each alarm (device, raised_at) arrived."""

    def __init__(self) -> None:
        self.arrived: dict[tuple[str, int], float] = {}
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.time()
                outer.requests += 1
                outer.arrived.setdefault((body["device_id"], _ms(body["raised_at"])), now)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class _AlarmPoller(threading.Thread):
    """Reads ``alarms`` every ``interval`` s; notes when each (device, raised_at) appeared."""

    def __init__(self, config: Config, interval: float) -> None:
        super().__init__(name="alarms-poller", daemon=True)
        self.config = config
        self.interval = interval
        self.seen: dict[tuple[str, int], float] = {}
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import polars as pl

        from workbench.alarms.store import alarms
        from workbench.tenancy.principal import Principal

        principal = Principal.system("alarms-bench")
        while not self.stop.is_set():
            began = time.time()
            try:
                rows = (
                    alarms(self.config, principal=principal)
                    .select("device_id", pl.col("raised_at").dt.epoch("ms"))
                    .rows()
                )
            except Exception:
                self.errors += 1
                rows = []
            now = time.time()  # the end of the read: visibility is not claimed earlier
            for device, ms in rows:
                self.seen.setdefault((device, int(ms)), now)
            self.stop.wait(max(0.0, self.interval - (now - began)))


def _set_rules(config: Config, tenants: list[str], url: str) -> None:
    from workbench.alarms.rulebook import set_rules
    from workbench.alarms.rules import DEFAULT_RULES
    from workbench.tenancy.principal import Principal

    # the probes flap on purpose, a raise every two seconds: the smoke rule's flood
    # limit (a few raises per device and hour) would count all but the first ones
    rules = DEFAULT_RULES.replace(
        'severity = "critical"\n', 'severity = "critical"\nmax_raises_per_hour = 0\n', 1
    )
    document = f'{rules}\n[[webhook]]\nurl = "{url}"\nseverities = ["critical"]\n'
    for tenant in tenants:
        set_rules(config, tenant, document, source="bench", principal=Principal.system("bench"))


def _raising(
    probes: list[list[Any]], device_of: dict[str, str], logged: dict[tuple[str, int], int]
) -> tuple[list[tuple[str, str, int, float]], int]:
    """The raising probes ``(building, device, ts ms, 202 time)`` that reached the log in
    order with their neighbours (``logged``: (device, seq) -> offset), and how many did
    not. The sender pipelines over many connections, so on a loaded machine a device's
    probes can reach the gateway out of order; the rules then see, in log order, another
    series than the one sent (e.g. no end between two raises: one alarm, not two).
    """
    raising, reordered = [], 0
    for building, ms, at, seq in probes:
        if _CYCLE[seq % len(_CYCLE)] != '{"smoke":true}':
            continue
        device = device_of[building]
        # the previous raise ended before this one, and this one's end after it: the
        # probes from seq - 2 to seq + 1 in log order
        offsets = [logged.get((device, k)) for k in range(seq - 2, seq + 2)]
        known = [o for o in offsets if o is not None]
        if known != sorted(known):
            reordered += 1
            continue
        raising.append((building, device, ms, at))
    return raising, reordered


def _log_order(config: Config, devices: list[str]) -> dict[tuple[str, int], int]:
    """(device, seq) -> offset in the log of the probe devices' stored events (a device's
    events share a partition)."""
    import polars as pl

    from workbench.lake.read import telemetry
    from workbench.tenancy.principal import Principal

    rows = (
        telemetry(config, principal=Principal.system("alarms-bench"))
        .filter(pl.col("device_id").is_in(devices))
        .select("device_id", "seq", "source_offset")
        .rows()
    )
    return {(device, seq): offset for device, seq, offset in rows}


def _send(
    bench: Config, home: Path, args: argparse.Namespace, devices: list[dict[str, Any]]
) -> dict[str, Any]:
    spec_path, out = home / "sender.json", home / "sender.out.json"
    spec = {
        "host": bench.host,
        "port": bench.gateway_port,
        "devices": devices,
        "rate": args.rate,
        "seconds": args.seconds,
        "lag": args.lag,
        "connections": args.connections,
        "depth": args.depth,
        "timeout": 10.0,
        "out": str(out),
    }
    spec_path.write_text(json.dumps(spec))
    sender = subprocess.run(
        [sys.executable, "-m", "proving.bench.freshness", str(spec_path)],
        env={**os.environ, **bench.env()},
        timeout=args.seconds + 120,
        check=False,
    )
    if sender.returncode != 0:
        raise RuntimeError(f"the sender exited with {sender.returncode}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def run_bench(config: Config, args: argparse.Namespace) -> int:
    """``workbench bench alarms``."""
    from simulator.fleet import DEVICE_TYPES, Fleet
    from simulator.provision import provision_fleet, registry
    from simulator.targets.gateway import _sas
    from workbench.cli import say
    from workbench.stack import supervisor

    (config.home / "bench").mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="alarms-", dir=config.home / "bench"))
    bench = dataclasses.replace(_bench_config(config, home), webhook_allow="127.0.0.1")
    fleet = Fleet.generate(args.devices, seed=0, fbk1_share=0.0)
    smoke = DEVICE_TYPES.index("smoke")
    receiver = _Receiver()
    pollers: list[Any] = []
    try:
        say(f"provisioning {len(fleet):,} devices in {len(fleet.buildings)} buildings…")
        keys = provision_fleet(bench, fleet)
        want = registry(bench).version("devices") or 0
        _set_rules(bench, sorted({b.tenant_id for b in fleet.buildings}), receiver.url)
        say("starting broker, gateway, processor and notifier (supervisor)…")
        supervisor.up(
            bench, only=["broker", "kafka", "gateway", "processor", "notifier"], report=say
        )
        try:
            _wait_registry(bench, want)
            expiry = int(time.time()) + 24 * 3600
            probe_of: dict[int, int] = {}  # building -> its first smoke detector
            for i, b in enumerate(fleet.building_index.tolist()):
                if int(fleet.kind[i]) == smoke and i in keys:
                    probe_of.setdefault(b, i)
            probes = set(probe_of.values())
            devices = [
                {
                    "device_id": fleet.device_ids[i],
                    "building_id": fleet.buildings[int(fleet.building_index[i])].building_id,
                    "kind": int(fleet.kind[i]),
                    "probe": i in probes,
                    "token": _sas(fleet.device_ids[i], keys[i], expiry),
                    **({"cycle": list(_CYCLE)} if i in probes else {}),
                }
                for i in range(len(fleet))
                if i in keys
            ]
            device_of = {
                fleet.buildings[b].building_id: fleet.device_ids[i] for b, i in probe_of.items()
            }
            state, rows = _Poller(bench, args.poll), _AlarmPoller(bench, args.poll)
            pollers = [state, rows]
            for p in pollers:
                p.start()
            say(
                f"sending {args.rate:,.0f} events/s for {args.seconds:g} s "
                f"({len(probes)} smoke probes/s, every other one raising) through the gateway…"
            )
            result = _send(bench, home, args, devices)
            deadline = time.monotonic() + 30
            # every probe stored (the freshness poller saw the last of each building)
            last: dict[str, int] = {}
            for building, ms, *_ in result["probes"]:
                last[building] = max(last.get(building, 0), ms)
            while time.monotonic() < deadline and any(
                visible_at(state.history.get(b, []), ms) is None for b, ms in last.items()
            ):
                time.sleep(0.2)
            logged = _log_order(bench, list(device_of.values()))
            raising, reordered = _raising(result["probes"], device_of, logged)
            while time.monotonic() < deadline and any(
                (d, ms) not in rows.seen or (d, ms) not in receiver.arrived
                for _, d, ms, _ in raising
            ):
                time.sleep(0.2)
        finally:
            for p in pollers:
                p.stop.set()
                p.join(timeout=30)
            say("stopping the bench stack…")
            supervisor.down(bench, report=say)
    finally:
        receiver.server.shutdown()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    counted = [r for r in raising if r[3] >= result["start"] + args.warmup]
    lat: dict[str, list[float]] = {"row": [], "webhook": [], "fresh": []}
    for building, device, ms, accepted_at in counted:
        for name, at in (
            ("row", rows.seen.get((device, ms))),
            ("webhook", receiver.arrived.get((device, ms))),
            ("fresh", visible_at(state.history.get(building, []), ms)),
        ):
            lat[name].append(math.inf if at is None else max(0.0, at - accepted_at))
    pct = {name: freshness_percentiles(values) for name, values in lat.items()}
    missing = {name: sum(1 for v in values if math.isinf(v)) for name, values in lat.items()}
    send_rate = result["accepted"] / result["answered_s"]
    figures = {
        "devices": args.devices,
        "buildings": len(fleet.buildings),
        "rate_target": args.rate,
        "seconds": args.seconds,
        "sent": result["sent"],
        "accepted": result["accepted"],
        "refused": result["refused"],
        "failed": result["failed"],
        "accepted_per_s": round(send_rate, 1),
        "alarms": len(counted),
        "alarms_reordered_not_counted": reordered,
        "alarms_never_visible": missing["row"],
        "alarms_never_delivered": missing["webhook"],
        "webhook_requests": receiver.requests,
        **{f"{name}_{k}_s": round(v, 3) for name, values in pct.items() for k, v in values.items()},
        "poll_interval_s": args.poll,
        "poll_errors": state.errors + rows.errors,
        "commit_interval_s": bench.commit_interval,
        "warmup_s": args.warmup,
        "load_average": round(os.getloadavg()[0], 2),
    }

    def s(v: float) -> str:
        return "never" if math.isinf(v) else f"{v:.2f} s"

    report(
        config,
        "alarms",
        [
            (
                f"latency {k}",
                s(pct["fresh"][k]),
                s(pct["row"][k]),
                s(pct["webhook"][k]),
                f"<= {_TARGET_P99_S:g} s" if k == "p99" else "",
            )
            for k in ("p50", "p99", "max")
        ]
        + [
            (
                "ratio p99 to freshness",
                "1.00",
                *(
                    f"{pct[n]['p99'] / pct['fresh']['p99']:.2f}" if pct["fresh"]["p99"] else "-"
                    for n in ("row", "webhook")
                ),
                "",
            ),
            (
                "never (of alarms)",
                *(f"{missing[n]} of {len(counted)}" for n in ("fresh", "row", "webhook")),
                "0",
            ),
            ("raising probes reordered (not counted)", f"{reordered}", "", "", ""),
            ("achieved rate (accepted)", f"{send_rate:,.0f} events/s", "", "", f"{args.rate:,.0f}"),
        ],
        header=(
            "FIGURE",
            "EVENT FRESHNESS (building_state)",
            "ALARM ROW (alarms)",
            "WEBHOOK DELIVERED",
            "TARGET",
        ),
        figures=figures,
    )
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    load_options(parser, poll="lake poll interval (s)")


add_bench(
    "alarms",
    run_bench,
    "alarms: event accepted by the gateway -> alarm row visible -> webhook delivered "
    "(p50/p99, beside the same events' freshness)",
    _configure,
)
