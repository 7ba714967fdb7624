"""``workbench bench gateway``: events/s accepted through batched HTTP, and latency at the seed
rate.

The benchmark bulk-provisions ``--devices`` devices (one import) in a scratch lake
under ``$WORKBENCH_HOME/bench/gateway``, starts its own gateway
(``--workers`` processes, default ``WORKBENCH_GATEWAY_WORKERS``) on free ports
against the configured Kafka (``workbench up`` or ``KAFKA_BOOTSTRAP_SERVERS``)
with a fresh topic, and drives it from separate load-generator processes over
real sockets:

1. throughput: ``--clients`` processes post batches of ``--batch`` events as
   fast as the gateway answers, for ``--seconds``; figure = accepted events/s;
2. latency, the way the seed fleet sends: open loop, event ``i`` due at
   ``i / --rate`` seconds, from device ``i % --devices``, **one event per request**
   (what the simulator and real devices send), over ``--connections`` shared
   keep-alive connections (``--connect new``: a new connection per request);
   p50/p99 from each event's *due* time, so a generator or a gateway that falls
   behind shows in the figures instead of slowing the schedule down.

Each phase runs ``--runs`` times; the medians are reported, with the gateway's
CPU time per 1,000 events (robust on a shared machine, where the wall-clock
figures depend on what else runs) and the load average seen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from proving.bench import add_bench, report, scratch_gateway_env
from workbench.config import Config
from workbench.events import format_ts

__all__ = ["run_bench"]

_TARGET_EPS = 20_000
_TARGET_P99_MS = 50.0


def _event(seq: int) -> dict[str, Any]:
    # the simulator's (and the device contract's) form: UTC, milliseconds, Z
    ts = format_ts(dt.datetime.now(dt.UTC))
    return {"ts": ts, "seq": seq, "readings": {"temperature": 21.5, "humidity": 40.2, "light": 310}}


# --- load generator (runs in its own process) ---------------------------------------------


def _load(args: argparse.Namespace) -> dict[str, Any]:
    tokens: list[tuple[str, str]] = json.loads(Path(args.tokens).read_text())
    if args.mode == "paced":
        from ingest_service.gateway.server import run_loop

        box: list[dict[str, Any]] = []

        async def paced() -> None:
            box.append(await _paced(args, tokens))

        run_loop(paced())  # uvloop too: the generator shares the 2 cores with the gateway
        return box[0]
    host, port = args.host, args.port
    deadline = time.monotonic() + args.seconds
    conn = http.client.HTTPConnection(host, port, timeout=30)
    accepted = refused = 0
    seq = 0
    started = time.monotonic()
    while time.monotonic() < deadline:
        _device, token = tokens[seq // args.batch % len(tokens)]
        body = json.dumps({"events": [_event(seq + i) for i in range(args.batch)]})
        seq += args.batch
        conn.request(
            "POST",
            "/v1/telemetry",
            body,
            {"Authorization": token, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        response.read()
        if response.status == 202:
            accepted += args.batch
        else:
            refused += 1
            time.sleep(0.05)
    return {"accepted": accepted, "refused": refused, "seconds": time.monotonic() - started}


async def _paced(args: argparse.Namespace, tokens: list[tuple[str, str]]) -> dict[str, Any]:
    """Devices, open loop: event ``i`` is due at ``start + i / rate`` and comes from device
    ``i % devices``, one event per request, on a free connection of the pool (or on a new
    connection per request with ``--connect new``). Latency counts from the due time, so a
    generator or gateway that falls behind shows up in the figures instead of hiding."""
    loop = asyncio.get_running_loop()
    heads = [
        (
            f"POST /v1/telemetry HTTP/1.1\r\nHost: {args.host}\r\nAuthorization: {token}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        for _device, token in tokens
    ]
    reuse = args.connect == "keepalive"
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    if reuse:
        for _ in range(args.connections):
            pool.put_nowait(await asyncio.open_connection(args.host, args.port))
    latencies: list[float] = []
    refused = [0]
    reuse_lost = [0]

    async def one(i: int, due: float) -> None:
        body = (
            b'{"ts":"%b","seq":%d,"readings":{"temperature":21.5,"humidity":40.2,"light":310}}'
            % (format_ts(dt.datetime.now(dt.UTC)).encode(), i)
        )
        request = b"%bContent-Length: %d\r\n\r\n%b" % (heads[i % len(heads)], len(body), body)
        try:
            if reuse:
                reader, writer = await pool.get()
            else:
                reader, writer = await asyncio.open_connection(args.host, args.port)
        except OSError:
            refused[0] += 1
            return
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            ok = head.startswith(b"HTTP/1.1 202")
        except (OSError, asyncio.IncompleteReadError):
            ok = False
            writer.close()
            if reuse:  # replace the broken connection in the pool
                try:
                    reader, writer = await asyncio.open_connection(args.host, args.port)
                except OSError:
                    reuse_lost[0] += 1
                    reader = None  # type: ignore[assignment]
        if ok:
            latencies.append(loop.time() - due)
        else:
            refused[0] += 1
        if not reuse:
            writer.close()
        elif reader is not None:
            pool.put_nowait((reader, writer))

    interval = 1.0 / args.rate
    start = loop.time() + 0.2
    end = start + args.seconds
    tasks: list[asyncio.Task[None]] = []
    i = 0
    while True:
        due = start + i * interval
        if due > end:
            break
        delay = due - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
        i += 1
    await asyncio.gather(*tasks)
    return {"latencies": latencies, "refused": refused[0], "sent": i, "lost": reuse_lost[0]}


def _load_main() -> None:
    p = argparse.ArgumentParser()
    for name in ("mode", "host", "tokens", "connect", "out"):
        p.add_argument(f"--{name}")
    for name in ("port", "batch", "connections"):
        p.add_argument(f"--{name}", type=int, default=1)
    for name in ("seconds", "rate"):
        p.add_argument(f"--{name}", type=float, default=1.0)
    args = p.parse_args()
    # a file, not stdout: libuv may leave stdout non-blocking, and a 400 kB line to a
    # pipe whose reader is slow then fails half-written
    Path(args.out).write_text(json.dumps(_load(args)))


# --- orchestration ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Scratch:
    config: Config
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    tokens: Path  # JSON list of [device_id, SAS token]


def _start(config: Config, devices: int, workers: int | None = None) -> _Scratch:
    from kafka.errors import KafkaError

    from workbench.exceptions import WorkbenchError
    from workbench.kafka import ensure_topic
    from workbench.registry import Registry, sas_token
    from workbench.registry.keys import derive_device_key, load_master_key
    from workbench.tenancy.principal import Principal

    home = config.home / "bench" / "gateway"
    env = scratch_gateway_env(config, home, workers=workers or config.gateway_workers)
    scratch = Config.from_env(env)
    try:
        ensure_topic(scratch)
    except KafkaError as exc:
        raise WorkbenchError(
            f"no Kafka broker answers at {scratch.bootstrap_servers} ({exc})",
            hint="the bench sends into the stack's broker: start it with 'workbench up' "
            "(or set KAFKA_BOOTSTRAP_SERVERS to a cluster)",
        ) from exc
    registry = Registry(scratch, principal=Principal.system("bench"))
    registry.add_tenant("t-bench")
    registry.add_building("b-bench", tenant="t-bench")
    ids = [f"bench-{i:06d}" for i in range(devices)]
    fleet = home / "fleet.csv"
    fleet.write_text(
        "device_id,building_id,device_type\n" + "".join(f"{d},b-bench,environment\n" for d in ids)
    )
    registry.import_csv(fleet)  # one commit; imported devices are at key version 1
    master = load_master_key(scratch)
    tokens = home / "tokens.json"
    tokens.write_text(
        json.dumps([(d, sas_token(d, derive_device_key(master, d, 1), ttl_s=3600)) for d in ids])
    )
    return _Scratch(scratch, env, launch_gateway(scratch, env), tokens)


def launch_gateway(scratch: Config, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the scratch gateway (again, after a restart: the same ports and registry)
    and wait until it answers ``/healthz``; its stderr goes to ``gateway.log`` in the
    scratch home."""
    home = scratch.home
    log = (home / "gateway.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest_service", "gateway"], env=env, stderr=log
    )
    url = f"http://{scratch.host}:{scratch.gateway_port}/healthz"
    # as long as `workbench up` waits: a loaded machine starts a worker slowly
    deadline = time.monotonic() + scratch.startup_timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"bench gateway did not start; see {home / 'gateway.log'}"
                ) from None
            time.sleep(0.2)


def _generators(s: _Scratch, n: int, mode: str, **opts: Any) -> list[dict[str, Any]]:
    argv = [
        sys.executable,
        "-c",
        "from proving.bench.gateway import _load_main; _load_main()",
        "--mode",
        mode,
        "--host",
        s.config.host,
        "--port",
        str(s.config.gateway_port),
        "--tokens",
        str(s.tokens),
    ]
    for k, v in opts.items():
        argv += [f"--{k}", str(v)]
    outs = [s.tokens.with_name(f"load-{mode}-{i}.json") for i in range(n)]
    procs = [subprocess.Popen([*argv, "--out", str(out)]) for out in outs]
    results = []
    for proc, out in zip(procs, outs, strict=True):
        if proc.wait() != 0:
            raise RuntimeError(f"load generator ({mode}) failed with exit code {proc.returncode}")
        results.append(json.loads(out.read_text()))
    return results


def _gateway_cpu_s(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds used so far by the gateway and its workers."""
    import psutil

    total = 0.0
    parent = psutil.Process(proc.pid)
    for p in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def run_bench(config: Config, args: argparse.Namespace) -> int:
    """Run both phases ``--runs`` times; print the table and record the medians."""
    from workbench.cli import say

    say(f"bench gateway: starting a scratch gateway against Kafka at {config.bootstrap_servers}")
    s = _start(config, args.devices, args.workers)
    eps_runs: list[float] = []
    p50_runs: list[float] = []
    p99_runs: list[float] = []
    cpu_batch: list[float] = []  # gateway CPU ms per 1,000 events
    cpu_paced: list[float] = []
    loads: list[float] = [os.getloadavg()[0]]
    refused = 0
    try:
        for run in range(args.runs):
            cpu0 = _gateway_cpu_s(s.proc)
            results = _generators(s, args.clients, "batch", batch=args.batch, seconds=args.seconds)
            accepted = sum(r["accepted"] for r in results)
            refused += sum(r["refused"] for r in results)
            eps_runs.append(accepted / max(r["seconds"] for r in results))
            cpu_batch.append(1e6 * (_gateway_cpu_s(s.proc) - cpu0) / max(1, accepted))
            cpu0 = _gateway_cpu_s(s.proc)
            (paced,) = _generators(
                s,
                1,
                "paced",
                rate=args.rate,
                seconds=args.seconds,
                connections=args.connections,
                connect=args.connect,
            )
            lat = sorted(paced["latencies"]) or [float("inf")]
            cpu_paced.append(1e6 * (_gateway_cpu_s(s.proc) - cpu0) / max(1, len(lat)))
            refused += paced["refused"]
            p50_runs.append(1000 * lat[len(lat) // 2])
            p99_runs.append(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))])
            loads.append(os.getloadavg()[0])
            say(
                f"run {run + 1}/{args.runs}: {eps_runs[-1]:,.0f} events/s batched; "
                f"p50 {p50_runs[-1]:.1f} ms, p99 {p99_runs[-1]:.1f} ms at {args.rate:,.0f}/s; "
                f"load average {loads[-1]:.1f}"
            )
    finally:
        s.proc.terminate()
        s.proc.wait(timeout=30)
    eps = statistics.median(eps_runs)
    p50 = statistics.median(p50_runs)
    p99 = statistics.median(p99_runs)
    report(
        config,
        "gateway",
        [
            (
                "batched HTTP throughput",
                f"{eps:,.0f} events/s",
                f">= {_TARGET_EPS:,}",
                "yes" if eps >= _TARGET_EPS else "NO",
            ),
            (f"p50 latency at {args.rate:,.0f} events/s", f"{p50:.1f} ms", "", ""),
            (
                f"p99 latency at {args.rate:,.0f} events/s",
                f"{p99:.1f} ms",
                f"< {_TARGET_P99_MS:.0f} ms",
                "yes" if p99 < _TARGET_P99_MS else "NO",
            ),
            ("requests refused", str(refused), "0", "yes" if refused == 0 else "NO"),
            (
                "gateway CPU per 1,000 events, batched",
                f"{statistics.median(cpu_batch):.0f} ms",
                "",
                "",
            ),
            (
                "gateway CPU per 1,000 events, 1 per request",
                f"{statistics.median(cpu_paced):.0f} ms",
                "",
                "",
            ),
            ("load average during the runs", f"{max(loads):.1f} (max)", "", ""),
        ],
        header=("FIGURE", f"MEDIAN OF {args.runs}", "TARGET", "MET"),
        figures={
            "events_per_s_batched": round(eps),
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "rate": args.rate,
            "batch": args.batch,
            "devices": args.devices,
            "paced_connect": args.connect,
            "paced_connections": args.connections,
            "clients": args.clients,
            "runs": args.runs,
            "workers": s.config.gateway_workers,
            "refused": refused,
            "runs_events_per_s": [round(x) for x in eps_runs],
            "runs_p99_ms": [round(x, 2) for x in p99_runs],
            "cpu_ms_per_1000_batched": round(statistics.median(cpu_batch), 1),
            "cpu_ms_per_1000_single": round(statistics.median(cpu_paced), 1),
            "load_average": [round(x, 2) for x in loads],
        },
    )
    return 0


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=10.0, help="per phase (default 10)")
    p.add_argument("--runs", type=int, default=3, help="repetitions; medians reported (3)")
    p.add_argument("--clients", type=int, default=2, help="batch load processes (2)")
    p.add_argument("--batch", type=int, default=500, help="events per batch request (500)")
    p.add_argument("--rate", type=float, default=1667.0, help="paced events/s (1667)")
    p.add_argument(
        "--connections",
        type=int,
        default=64,
        help="keep-alive connections the paced devices share (64)",
    )
    p.add_argument(
        "--connect",
        choices=("keepalive", "new"),
        default="keepalive",
        help="paced phase: share keep-alive connections, or one new connection per request",
    )
    p.add_argument("--devices", type=int, default=2000, help="devices provisioned (2000)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="gateway worker processes (default: WORKBENCH_GATEWAY_WORKERS)",
    )


add_bench(
    "gateway",
    run_bench,
    "gateway: events/s through batched HTTP and p50/p99 latency at the seed rate",
    _configure,
)
