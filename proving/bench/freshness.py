"""``workbench bench freshness``: event accepted by the gateway -> visible in ``building_state``
(target: p99 <= 2 s at the seed's rate).

1. A private ``$WORKBENCH_HOME/bench/freshness-*`` home with its own lake, a fresh topic
   and processor group, and free ports; ``--devices`` simulated devices
   (``simulator.fleet.Fleet``, HTTP devices only) are provisioned through the registry.
2. The real broker (embedded, or the configured external Kafka), gateway and
   processor start as subprocesses through the supervisor, at default settings
   (``WORKBENCH_COMMIT_INTERVAL`` etc. as configured).
3. A sender subprocess posts one event per request through the gateway (the
   simulator's pipelined HTTP client, at most ``--depth`` requests in flight on each of
   ``--connections`` keep-alive connections, a connection silent for 10 s dropped and
   its requests counted as failed), open loop at ``--rate`` events/s for
   ``--seconds``. The first device of every building is its *probe* device: once a
   second it sends an event with ``ts`` = now and records the wall-clock time its
   ``202`` arrived. Every other event carries ``ts`` = now - ``--lag`` seconds, so a
   building's ``last_event_ts`` reaches a probe's ``ts`` only through that probe
   (or a later one of the same device, same partition, accepted after it).
4. The bench process polls ``building_state`` through the reading API every
   ``--poll`` seconds and notes, per building, when (end of the read)
   ``last_event_ts`` first reached each probe's ``ts``.

Freshness of a probe = visible time - 202 time; p50/p95/p99/max over the probes
after ``--warmup`` seconds. A probe still invisible 30 s after the sender finished counts
as infinitely late; requests unanswered 60 s after the schedule's end are reported. The
accepted rate is counted up to the last answer, so falling behind the schedule shows.
Resolution: one poll interval plus one read.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from proving.bench import add_bench, report
from proving.ports import free_port
from workbench.config import Config

__all__ = ["freshness_percentiles", "run_bench", "visible_at"]

_TARGET_P99_S = 2.0
_READINGS = (
    b'{"temperature":21.5,"humidity":40.2,"light":310}',
    b'{"smoke":false}',
    b'{"intrusion":false}',
)


# --- pure logic ---------------------------------------------------------------------------


def visible_at(history: list[tuple[float, int]], ts_ms: int) -> float | None:
    """The first poll time at which ``last_event_ts`` (ms) was ``>= ts_ms``; ``history`` is
    one building's ``(poll time, last_event_ts ms)`` in poll order (non-decreasing ts)."""
    keys = [ts for _, ts in history]
    i = bisect.bisect_left(keys, ts_ms)
    return history[i][0] if i < len(history) else None


def freshness_percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max (nearest rank) of ``values`` (``inf`` for never-visible probes)."""
    if not values:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": ordered[-1]}


# --- sender (its own process, so the poller's lake reads do not stall it) -----------------


def _format_ts(epoch: float) -> str:
    from workbench.events import format_ts

    return format_ts(dt.datetime.fromtimestamp(epoch, dt.UTC))


async def _send(spec: dict[str, Any]) -> dict[str, Any]:
    from simulator.targets.http1 import Pipeline, Response, build_post

    host, port = spec["host"], spec["port"]
    hostport = f"{host}:{port}"
    devices: list[dict[str, Any]] = spec["devices"]
    probes = [d for d in devices if d["probe"]]
    regular = [d for d in devices if not d["probe"]] or probes
    heads = {
        d["device_id"]: f"Authorization: {d['token']}\r\nContent-Type: application/json\r\n"
        for d in devices
    }
    seqs = dict.fromkeys(heads, 0)
    rate, seconds, lag = float(spec["rate"]), float(spec["seconds"]), float(spec["lag"])
    depth, timeout_s = int(spec["depth"]), float(spec["timeout"])
    accepted = refused = failed = sent = 0
    probe_log: list[tuple[str, int, float, int]] = []  # building, ts ms, 202 time, seq
    queue: asyncio.Queue[tuple[bytes, tuple[str, int, int] | None]] = asyncio.Queue()
    last_answer = [0.0]

    def request(device: dict[str, Any], ts: float) -> bytes:
        did = device["device_id"]
        seqs[did] += 1
        # a device's "cycle" (the alarms bench's probes) replaces its kind's readings
        cycle = [c.encode() for c in device.get("cycle", ())] or [_READINGS[device["kind"]]]
        readings = cycle[seqs[did] % len(cycle)]
        body = b'{"ts":"%b","seq":%d,"readings":%b}' % (
            _format_ts(ts).encode(),
            seqs[did],
            readings,
        )
        return build_post(hostport, "/v1/telemetry", heads[did], body)

    def done(response: Response | BaseException, probe: tuple[str, int, int] | None) -> None:
        nonlocal accepted, refused, failed
        now = time.time()
        last_answer[0] = now
        if isinstance(response, BaseException):
            failed += 1
        elif response.status == 202:
            accepted += 1
            if probe is not None:
                probe_log.append((probe[0], probe[1], now, probe[2]))
        else:
            refused += 1

    async def connection() -> None:
        """One keep-alive connection: up to ``depth`` pipelined requests in flight, like the
        simulator; a connection silent for ``timeout`` s is dropped (its requests count as
        failed, nothing is resent) and replaced."""
        pipe: Pipeline | None = None
        while True:
            batch = [await queue.get()]
            while len(batch) < depth and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                if pipe is None or pipe.closed:
                    pipe = await asyncio.wait_for(Pipeline.connect(host, port), timeout_s)
                futures = pipe.send([req for req, _ in batch])
                finished, _ = await asyncio.wait(futures, timeout=timeout_s)
            except (OSError, TimeoutError) as exc:
                for _, probe in batch:
                    done(exc, probe)
                continue
            if len(finished) < len(futures):
                pipe.close()
            for f, (_, probe) in zip(futures, batch, strict=True):
                if not f.done() or f.cancelled():
                    done(TimeoutError("no answer"), probe)
                elif f.exception() is not None:
                    done(f.exception() or ConnectionError(), probe)
                else:
                    done(f.result(), probe)

    def post(req: bytes, probe: tuple[str, int, int] | None) -> None:
        nonlocal sent
        sent += 1
        queue.put_nowait((req, probe))

    workers = [asyncio.create_task(connection()) for _ in range(spec["connections"])]
    start = time.time() + 0.2
    end = start + seconds
    i = 0  # regular events sent so far
    second = 0  # probe rounds sent so far
    regular_rate = max(rate - len(probes), 1.0)
    while True:
        now = time.time()
        if now >= end:
            break
        while start + second <= now and start + second < end:
            for d in probes:
                t = time.time()
                ms = int(t * 1000)
                post(request(d, ms / 1000), (d["building_id"], ms, seqs[d["device_id"]]))
            second += 1
        due = int((now - start) * regular_rate)
        while i < due:
            post(request(regular[i % len(regular)], time.time() - lag), None)
            i += 1
        await asyncio.sleep(0.005)
    elapsed = time.time() - start
    deadline = time.monotonic() + 60
    while accepted + refused + failed < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    drain_s = time.time() - start - elapsed
    unanswered = sent - accepted - refused - failed
    backlog = queue.qsize()
    crashed = [repr(w.exception()) for w in workers if w.done() and not w.cancelled()]
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return {
        "sent": sent,
        "accepted": accepted,
        "refused": refused,
        "failed": failed,
        "seconds": elapsed,
        "answered_s": max(last_answer[0] - start, elapsed),
        "drain_s": drain_s,
        "unanswered": unanswered,
        "backlog": backlog,
        "crashed": crashed,
        "start": start,
        "probes": probe_log,
    }


def _sender_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = asyncio.run(_send(spec))
    Path(spec["out"]).write_text(json.dumps(result))


# --- the bench ----------------------------------------------------------------------------


def _bench_config(config: Config, home: Path) -> Config:
    return dataclasses.replace(
        config,
        home=home,
        lake=str(home / "lake"),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        gateway_port=free_port(),
        legacy_port=free_port(),
        mqtt_port=free_port(),
        hive_port=free_port(),
        voila_port=free_port(),
        panel_port=free_port(),
        topic=f"bench-fresh-{uuid.uuid4().hex[:8]}",
        processor_group=f"bench-fresh-{uuid.uuid4().hex[:8]}",
    )


def _wait_registry(config: Config, want: int, timeout_s: float = 60.0) -> None:
    url = f"http://{config.host}:{config.gateway_port}/healthz"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                seen = json.loads(response.read()).get("registry_version")
            if isinstance(seen, int) and seen >= want:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the bench gateway did not load registry version {want} in {timeout_s}s")


class _Poller(threading.Thread):
    """Reads ``building_state`` every ``interval`` s; keeps per-building change history."""

    def __init__(self, config: Config, interval: float) -> None:
        super().__init__(name="freshness-poller", daemon=True)
        self.config = config
        self.interval = interval
        self.history: dict[str, list[tuple[float, int]]] = {}
        self.read_s: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import polars as pl

        from workbench.lake.read import building_state
        from workbench.tenancy.principal import Principal

        principal = Principal.system("freshness-bench")
        while not self.stop.is_set():
            began = time.time()
            try:
                state = building_state(self.config, principal=principal)
                rows = state.select(
                    "building_id", pl.col("last_event_ts").dt.epoch("ms").alias("ms")
                ).rows()
            except Exception:
                self.errors += 1
                rows = []
            seen = time.time()  # the end of the read: visibility is not claimed earlier
            self.read_s.append(seen - began)
            for building, ms in rows:
                h = self.history.setdefault(building, [])
                if not h or ms > h[-1][1]:
                    h.append((seen, int(ms)))
            self.stop.wait(max(0.0, self.interval - (time.time() - began)))


def run_bench(config: Config, args: argparse.Namespace) -> int:
    """``workbench bench freshness``."""
    from simulator.fleet import Fleet
    from simulator.provision import provision_fleet, registry
    from simulator.targets.gateway import _sas
    from workbench.cli import say
    from workbench.stack import supervisor

    (config.home / "bench").mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="freshness-", dir=config.home / "bench"))
    bench = _bench_config(config, home)
    fleet = Fleet.generate(args.devices, seed=0, fbk1_share=0.0)
    try:
        say(f"provisioning {len(fleet):,} devices in {len(fleet.buildings)} buildings…")
        keys = provision_fleet(bench, fleet)
        want = registry(bench).version("devices") or 0
        say("starting broker, gateway and processor (supervisor)…")
        supervisor.up(bench, only=["broker", "kafka", "gateway", "processor"], report=say)
        poller: _Poller | None = None
        try:
            _wait_registry(bench, want)
            expiry = int(time.time()) + 24 * 3600
            first_of: dict[int, int] = {}
            for i, b in enumerate(fleet.building_index.tolist()):
                first_of.setdefault(b, i)
            probe_devices = set(first_of.values())
            devices = [
                {
                    "device_id": fleet.device_ids[i],
                    "building_id": fleet.buildings[int(fleet.building_index[i])].building_id,
                    "kind": int(fleet.kind[i]),
                    "probe": i in probe_devices,
                    "token": _sas(fleet.device_ids[i], keys[i], expiry),
                }
                for i in range(len(fleet))
                if i in keys
            ]
            spec_path = home / "sender.json"
            out = home / "sender.out.json"
            spec_path.write_text(
                json.dumps(
                    {
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
                )
            )
            poller = _Poller(bench, args.poll)
            poller.start()
            say(
                f"sending {args.rate:,.0f} events/s for {args.seconds:g} s "
                f"({len(probe_devices)} probes/s) through the gateway…"
            )
            sender = subprocess.run(
                [sys.executable, "-m", "proving.bench.freshness", str(spec_path)],
                env={**os.environ, **bench.env()},
                timeout=args.seconds + 120,
                check=False,
            )
            if sender.returncode != 0:
                raise RuntimeError(f"the sender exited with {sender.returncode}")
            result = json.loads(out.read_text())
            # wait until every probe is visible (or 30 s)
            deadline = time.monotonic() + 30
            last: dict[str, int] = {}
            for building, ms, *_ in result["probes"]:
                last[building] = max(last.get(building, 0), ms)
            while time.monotonic() < deadline and any(
                visible_at(poller.history.get(b, []), ms) is None for b, ms in last.items()
            ):
                time.sleep(0.2)
        finally:
            if poller is not None:
                poller.stop.set()
                poller.join(timeout=30)
            say("stopping the bench stack…")
            supervisor.down(bench, report=say)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    assert poller is not None
    counted = [p for p in result["probes"] if p[2] >= result["start"] + args.warmup]
    values = []
    for building, ms, accepted_at, _ in counted:
        seen = visible_at(poller.history.get(building, []), ms)
        values.append(math.inf if seen is None else max(0.0, seen - accepted_at))
    pct = freshness_percentiles(values)
    invisible = sum(1 for v in values if math.isinf(v))
    # accepted events over the time from the first due event to the last answer: a gateway
    # (or sender) that falls behind the schedule shows here, not as a longer send phase
    send_rate = result["accepted"] / result["answered_s"]
    read_ms = statistics.median(poller.read_s) * 1000 if poller.read_s else math.nan
    figures = {
        "devices": args.devices,
        "buildings": len(fleet.buildings),
        "rate_target": args.rate,
        "seconds": args.seconds,
        "sent": result["sent"],
        "accepted": result["accepted"],
        "refused": result["refused"],
        "failed": result["failed"],
        "unanswered_after_60s": result["unanswered"],
        "behind_schedule_at_end_s": round(result["answered_s"] - result["seconds"], 2),
        "accepted_per_s": round(send_rate, 1),
        "probes": len(values),
        "probes_never_visible": invisible,
        **{f"freshness_{k}_s": round(v, 3) for k, v in pct.items()},
        "poll_interval_s": args.poll,
        "poll_read_median_ms": round(read_ms, 1),
        "poll_errors": poller.errors,
        "commit_interval_s": bench.commit_interval,
        "commit_max_events": bench.commit_max_events,
        "warmup_s": args.warmup,
        "lag_s": args.lag,
        "load_average": round(os.getloadavg()[0], 2),
    }

    def s(v: float) -> str:
        return "never" if math.isinf(v) else f"{v:.2f} s"

    report(
        config,
        "freshness",
        [
            ("achieved rate (accepted)", f"{send_rate:,.0f} events/s", f"{args.rate:,.0f}"),
            (
                "last answer after the schedule's end",
                f"{result['answered_s'] - result['seconds']:.1f} s",
                "",
            ),
            (
                "refused / failed / unanswered",
                f"{result['refused']:,} / {result['failed']:,} / {result['unanswered']:,}",
                "0 / 0 / 0",
            ),
            ("probes (after warm-up)", f"{len(values):,} ({invisible} never visible)", ""),
            ("freshness p50", s(pct["p50"]), ""),
            ("freshness p95", s(pct["p95"]), ""),
            ("freshness p99", s(pct["p99"]), f"<= {_TARGET_P99_S:g} s"),
            ("freshness max", s(pct["max"]), ""),
            (
                "poll resolution",
                f"every {args.poll:g} s + read ({read_ms:.0f} ms median)",
                "",
            ),
            ("processor WORKBENCH_COMMIT_INTERVAL", f"{bench.commit_interval:g} s", ""),
        ],
        header=(
            "FIGURE",
            f"VALUE ({args.devices:,} devices, {args.seconds:g} s)",
            "TARGET",
        ),
        figures=figures,
    )
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    load_options(parser, poll="building_state poll interval")


def load_options(parser: argparse.ArgumentParser, *, poll: str) -> None:
    """The options of a bench that sends the seed's load through a stack and polls the lake
    (this one and ``bench alarms``); ``poll`` says what ``--poll`` polls."""
    parser.add_argument("--rate", type=float, default=1667.0, help="events/s (seed's rate)")
    parser.add_argument("--seconds", type=float, default=60.0, help="sending time")
    parser.add_argument("--devices", type=int, default=2000, help="simulated devices")
    parser.add_argument("--poll", type=float, default=0.1, help=poll)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of probes not counted")
    parser.add_argument("--lag", type=float, default=5.0, help="non-probe events' ts lag (s)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument(
        "--depth", type=int, default=8, help="pipelined requests in flight per connection"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch home")


add_bench(
    "freshness",
    run_bench,
    "freshness: event accepted by the gateway -> visible in building_state (p50/p99)",
    _configure,
)


if __name__ == "__main__":
    _sender_main(sys.argv[1])
