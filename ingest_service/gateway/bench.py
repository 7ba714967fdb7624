"""``workbench bench gateway``: events/s accepted through batched HTTP, and latency at the seed
rate (DESIGN.md §9).

The benchmark provisions devices in a scratch lake under
``$WORKBENCH_HOME/bench/gateway``, starts its own gateway process on free ports
against the configured Kafka (``workbench up`` or ``KAFKA_BOOTSTRAP_SERVERS``)
with a fresh topic, and drives it from separate load-generator processes over
real sockets:

1. throughput: ``--clients`` processes post batches of ``--batch`` events as
   fast as the gateway answers, for ``--seconds``; figure = accepted events/s;
2. latency: single-event requests paced at ``--rate`` events/s (the seed's
   1,667) for ``--seconds``; p50/p99 from each request's scheduled send time.

Each phase runs ``--runs`` times; the medians are reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from typing import Any

from workbench.bench import add_bench, print_table, record_result
from workbench.config import Config

__all__ = ["run_bench"]

_TARGET_EPS = 20_000
_TARGET_P99_MS = 50.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _event(seq: int) -> dict[str, Any]:
    ts = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    return {"ts": ts, "seq": seq, "readings": {"temperature": 21.5, "humidity": 40.2, "light": 310}}


# --- load generator (runs in its own process) ---------------------------------------------


def _load(args: argparse.Namespace) -> dict[str, Any]:
    tokens: list[tuple[str, str]] = json.loads(args.tokens)
    host, port = args.host, args.port
    deadline = time.monotonic() + args.seconds
    if args.mode == "batch":
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
    # paced single events
    latencies: list[float] = []
    refused_box = [0]
    lock = threading.Lock()
    next_slot = [0]
    interval = 1.0 / args.rate
    start = time.monotonic() + 0.2

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while True:
            with lock:
                i = next_slot[0]
                next_slot[0] += 1
            scheduled = start + i * interval
            if scheduled > deadline:
                return
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            _device, token = tokens[i % len(tokens)]
            conn.request(
                "POST",
                "/v1/telemetry",
                json.dumps(_event(i)),
                {"Authorization": token, "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            done = time.monotonic()
            with lock:
                if response.status == 202:
                    latencies.append(done - scheduled)
                else:
                    refused_box[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "refused": refused_box[0]}


def _load_main() -> None:
    p = argparse.ArgumentParser()
    for name in ("mode", "host", "tokens"):
        p.add_argument(f"--{name}")
    for name in ("port", "batch", "threads"):
        p.add_argument(f"--{name}", type=int, default=1)
    for name in ("seconds", "rate"):
        p.add_argument(f"--{name}", type=float, default=1.0)
    print(json.dumps(_load(p.parse_args())))


# --- orchestration ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Scratch:
    config: Config
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    tokens: list[tuple[str, str]]


def _start(config: Config, devices: int) -> _Scratch:
    from workbench.kafka import ensure_topic
    from workbench.registry import Registry, sas_token

    home = config.home / "bench" / "gateway"
    shutil.rmtree(home, ignore_errors=True)
    env = {
        **config.env(),
        "WORKBENCH_HOME": str(home),
        "WORKBENCH_LAKE": str(home / "lake"),
        "KAFKA_BOOTSTRAP_SERVERS": config.bootstrap_servers,
        "WORKBENCH_TOPIC": f"bench-gateway-{uuid.uuid4().hex[:8]}",
        "WORKBENCH_GATEWAY_PORT": str(_free_port()),
        "WORKBENCH_LEGACY_PORT": str(_free_port()),
        "WORKBENCH_LOG_LEVEL": "WARNING",
    }
    scratch = Config.from_env(env)
    ensure_topic(scratch)
    registry = Registry(scratch)
    registry.add_tenant("t-bench", actor="bench")
    registry.add_building("b-bench", tenant="t-bench", actor="bench")
    tokens = []
    for i in range(devices):
        device_id = f"bench-{i:04d}"
        key = registry.provision(
            device_id, building="b-bench", device_type="environment", actor="bench"
        ).key
        tokens.append((device_id, sas_token(device_id, key, ttl_s=3600)))
    log = (home / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest_service", "gateway"], env=env, stderr=log
    )
    url = f"http://{scratch.host}:{scratch.gateway_port}/healthz"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"bench gateway did not start; see {home / 'gateway.log'}"
                ) from None
            time.sleep(0.2)
    return _Scratch(scratch, env, proc, tokens)


def _generators(s: _Scratch, n: int, mode: str, **opts: Any) -> list[dict[str, Any]]:
    argv = [
        sys.executable,
        "-c",
        "from ingest_service.gateway.bench import _load_main; _load_main()",
        "--mode",
        mode,
        "--host",
        s.config.host,
        "--port",
        str(s.config.gateway_port),
        "--tokens",
        json.dumps(s.tokens),
    ]
    for k, v in opts.items():
        argv += [f"--{k}", str(v)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE) for _ in range(n)]
    return [json.loads(p.communicate()[0]) for p in procs]


def run_bench(config: Config, args: argparse.Namespace) -> int:
    """Run both phases ``--runs`` times; print the table and record the medians."""
    from workbench.cli import say

    say(f"bench gateway: starting a scratch gateway against Kafka at {config.bootstrap_servers}")
    s = _start(config, args.devices)
    eps_runs: list[float] = []
    p50_runs: list[float] = []
    p99_runs: list[float] = []
    refused = 0
    try:
        for run in range(args.runs):
            results = _generators(s, args.clients, "batch", batch=args.batch, seconds=args.seconds)
            accepted = sum(r["accepted"] for r in results)
            refused += sum(r["refused"] for r in results)
            eps_runs.append(accepted / max(r["seconds"] for r in results))
            (paced,) = _generators(
                s, 1, "paced", rate=args.rate, seconds=args.seconds, threads=args.threads
            )
            lat = sorted(paced["latencies"])
            refused += paced["refused"]
            p50_runs.append(1000 * lat[len(lat) // 2])
            p99_runs.append(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))])
            say(
                f"run {run + 1}/{args.runs}: {eps_runs[-1]:,.0f} events/s batched; "
                f"p50 {p50_runs[-1]:.1f} ms, p99 {p99_runs[-1]:.1f} ms at {args.rate:,.0f}/s"
            )
    finally:
        s.proc.terminate()
        s.proc.wait(timeout=15)
    eps = statistics.median(eps_runs)
    p50 = statistics.median(p50_runs)
    p99 = statistics.median(p99_runs)
    print_table(
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
        ],
        header=("FIGURE", f"MEDIAN OF {args.runs}", "TARGET", "MET"),
    )
    record_result(
        config,
        "gateway",
        {
            "events_per_s_batched": round(eps),
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "rate": args.rate,
            "batch": args.batch,
            "clients": args.clients,
            "runs": args.runs,
            "refused": refused,
            "runs_events_per_s": [round(x) for x in eps_runs],
            "runs_p99_ms": [round(x, 2) for x in p99_runs],
        },
    )
    return 0


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=10.0, help="per phase (default 10)")
    p.add_argument("--runs", type=int, default=3, help="repetitions; medians reported (3)")
    p.add_argument("--clients", type=int, default=2, help="batch load processes (2)")
    p.add_argument("--batch", type=int, default=500, help="events per batch request (500)")
    p.add_argument("--rate", type=float, default=1667.0, help="paced events/s (1667)")
    p.add_argument("--threads", type=int, default=16, help="paced sender threads (16)")
    p.add_argument("--devices", type=int, default=100, help="devices provisioned (100)")


add_bench(
    "gateway",
    run_bench,
    "gateway: events/s through batched HTTP and p50/p99 latency at the seed rate",
    _configure,
)
