"""``workbench bench mqtt``: hold N device connections on the MQTT door at 1 event/min each.

A scratch gateway on free ports (``--devices`` bulk-provisioned in one import, as for
``bench gateway``) against the configured Kafka; ``--generators`` load processes open one
MQTT 3.1.1 connection per device (IoT Hub style CONNECT with the device's SAS token),
spread over ``--sources`` loopback source addresses (about 28,000 ephemeral ports per
source address and destination port), then each device publishes one event at QoS 1
every ``--interval`` seconds (phases spread evenly) for ``--seconds``.

**Spreading past the open-files limit.** Every connection is a file descriptor in a
gateway worker and in a generator, and the hard limit per process here is 20,000 (a
container may not raise it, even as root). :func:`spread` picks, for ``--devices``,
enough gateway workers, generators and source addresses that none needs more than its
limit allows (or refuses the ones given, saying how many are needed): 100,000
connections take 7 workers, 6 generators and 4 source addresses. A device whose
connect fails (reset in the storm, a refusal) retries after a random back-off, as a
real one would, until the load starts.

Printed and recorded: connections held at the end, time for all to connect (the connect
storm), publishes sent and acknowledged, records on the topic (every PUBACK must be a
stored record), p50/p99 publish→PUBACK latency, the gateway's RSS and its growth per
1,000 connections, and its CPU while holding the load. The load generators are plain
asyncio over hand-written 3.1.1 packets (a few KiB per connection), so the figures are
the gateway's, not a client library's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ingest_service.gateway import mqtt_codec as codec
from proving.bench import add_bench, report
from workbench.config import Config
from workbench.exceptions import ConfigError

__all__ = ["Spread", "run_bench", "spread"]


_FD_RESERVE = 1024  # what a process holds besides device sockets: files, Kafka, listeners
_PORTS_PER_SOURCE = 28_000  # ephemeral ports (32768-60999) per source address and port
_HEADROOM = 1.25  # the kernel hands accepts to the workers unevenly
_ACK_WAIT_S = 30.0  # a PUBACK later than this counts the connection as dropped


@dataclasses.dataclass(frozen=True)
class Spread:
    """How ``devices`` connections are shared out under an open-files limit."""

    workers: int
    generators: int
    sources: int
    worker_cap: int  # WORKBENCH_MQTT_MAX_CONNECTIONS of each scratch worker


def spread(
    devices: int,
    fd_limit: int,
    *,
    workers: int | None = None,
    generators: int | None = None,
    sources: int | None = None,
) -> Spread:
    """The fewest workers, generators and source addresses (or those given, checked)
    that hold ``devices`` connections with at most ``fd_limit`` files per process.

    >>> spread(100_000, 20_000)
    Spread(workers=7, generators=6, sources=4, worker_cap=17858)
    >>> spread(5_000, 20_000, workers=2)
    Spread(workers=2, generators=1, sources=1, worker_cap=3125)
    >>> spread(100_000, 20_000, generators=2)
    Traceback (most recent call last):
    ...
    workbench.exceptions.ConfigError: --generators 2 cannot open 100,000 connections: ...
    """
    room = fd_limit - _FD_RESERVE
    if devices < 1:
        raise ConfigError(f"--devices {devices}: give at least 1")
    if room < 1:
        raise ConfigError(f"the open-files limit is {fd_limit}: too low to hold a connection")
    need = {
        "workers": -(-int(devices * _HEADROOM) // room),
        "generators": -(-devices // room),
        "sources": -(-devices // _PORTS_PER_SOURCE),
    }
    given = {"workers": workers, "generators": generators, "sources": sources}
    for name, value in given.items():
        if value is not None and value < need[name]:
            raise ConfigError(
                f"--{name} {value} cannot open {devices:,} connections: at most "
                f"{room if name != 'sources' else _PORTS_PER_SOURCE:,} fit in one "
                + ("source address (ephemeral ports)" if name == "sources" else "process")
                + f" (open-files limit {fd_limit:,})",
                hint=f"give --{name} {need[name]} or more, or leave it out",
            )
    if need["sources"] > 250:
        raise ConfigError(f"--devices {devices:,}: more than 250 loopback sources needed")
    n_workers = workers or need["workers"]
    cap = min(room, -(-int(devices * _HEADROOM) // n_workers))
    return Spread(n_workers, generators or need["generators"], sources or need["sources"], cap)


def _raise_nofile(wanted: int) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((wanted, max(hard, wanted)), (min(wanted, hard), hard)):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _connect_packet(device: str, token: str) -> bytes:
    body = b"\x00\x04MQTT\x04\xc2" + struct.pack("!H", 300) + codec.string(device)
    return codec.frame(0x10, body + codec.string(device) + codec.string(token))


class _Refused(Exception):
    """The gateway answered CONNECT with a refusal."""


async def _handshake(
    device: str, token: str, source: str, args: argparse.Namespace
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(args.host, args.port, local_addr=(source, 0))
    try:
        writer.write(_connect_packet(device, token))
        connack = await reader.readexactly(4)
    except BaseException:
        writer.close()
        raise
    if connack[3] != 0:
        writer.close()
        raise _Refused(f"connack {connack[3]}")
    return reader, writer


async def _connect(
    device: str,
    token: str,
    source: str,
    args: argparse.Namespace,
    gate: asyncio.Semaphore,
    stats: dict[str, Any],
    deadline: float,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Connect, retrying after a random 1-5 s back-off as a device would, until
    ``deadline`` (loop time); None when it passed. At most ``--concurrency`` handshakes
    of a generator are under way at once."""
    loop = asyncio.get_running_loop()
    errors: dict[str, int] = stats["connect_errors"]
    while True:
        try:
            async with asyncio.timeout_at(deadline), gate:
                return await _handshake(device, token, source, args)
        except _Refused as exc:
            failure = str(exc)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            failure = type(exc).__name__
        errors[failure] = errors.get(failure, 0) + 1
        backoff = 1.0 + 4.0 * random.random()
        if loop.time() + backoff >= deadline:
            return None
        stats["retries"] += 1
        await asyncio.sleep(backoff)


async def _device(
    device: str,
    token: str,
    source: str,
    args: argparse.Namespace,
    gate: asyncio.Semaphore,
    stats: dict[str, Any],
    start_at: float,
) -> None:
    loop = asyncio.get_running_loop()
    # the connect storm: everyone connects before start_at, or gives up
    conn = await _connect(device, token, source, args, gate, stats, start_at)
    if conn is None:
        stats["never_connected"] += 1
        return
    stats["connected"] += 1
    stats["last_connect"] = time.monotonic()
    reader, writer = conn
    topic = codec.string(f"devices/{device}/messages/events/")
    end = start_at + args.seconds
    # first publish at a random phase of the interval, then every interval
    next_at = start_at + random.random() * args.interval
    seq = 0
    pending: bytes | None = None  # a publish not acknowledged yet: re-sent after a reconnect
    packet_id = b""
    sent = 0.0
    try:
        while True:
            try:
                if pending is None:
                    # idle until the next publish, reading as a client's loop does: a
                    # closed connection (a gateway restart) is noticed at once
                    wait = min(next_at, end) - loop.time()
                    if wait > 0:
                        with contextlib.suppress(TimeoutError):
                            if not await asyncio.wait_for(reader.read(1), wait):
                                raise asyncio.IncompleteReadError(b"", 1)
                        continue
                    if loop.time() >= end:
                        break
                    seq += 1
                    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    payload = b'{"ts":"%s","seq":%d,"readings":{"temperature":21.5}}' % (
                        ts.encode(),
                        seq,
                    )
                    packet_id = struct.pack("!H", seq % 65535 + 1)
                    pending = codec.frame(0x32, topic + packet_id + payload)
                    sent = loop.time()
                    stats["sent"] += 1
                writer.write(pending)
                ack = await asyncio.wait_for(reader.readexactly(4), _ACK_WAIT_S)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                writer.close()
                dropped_at = time.monotonic()
                conn = await _connect(device, token, source, args, gate, stats, end)
                if conn is None:
                    stats["dropped"] += 1
                    if pending is not None:  # it may be stored: its PUBACK never came
                        stats["unacked"] += 1
                    return
                reader, writer = conn
                stats["reconnected"] += 1
                stats["last_reconnect"] = time.monotonic()
                stats["reconnect_s"].append(time.monotonic() - dropped_at)
                if pending is not None:  # QoS 1: the same packet again, flagged DUP
                    pending = bytes([pending[0] | 0x08]) + pending[1:]
                    stats["resent"] += 1
                continue
            if ack[0] == 0x40 and ack[2:4] == packet_id:
                stats["acks"] += 1
                if not pending[0] & 0x08:  # a re-sent one's wait is the reconnect's
                    stats["latencies"].append(loop.time() - sent)
            pending = None
            next_at += args.interval
        stats["held"] += 1
    finally:
        writer.close()


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    pairs = json.loads(Path(args.tokens).read_text())[args.first : args.first + args.count]
    sources = args.sources.split(",")
    stats: dict[str, Any] = {
        "connected": 0,
        "held": 0,
        "dropped": 0,
        "sent": 0,
        "acks": 0,
        "latencies": [],
        "connect_errors": {},
        "retries": 0,
        "never_connected": 0,
        "last_connect": 0.0,
        "reconnected": 0,
        "reconnect_s": [],
        "resent": 0,
        "unacked": 0,
        "last_reconnect": 0.0,
    }
    gate = asyncio.Semaphore(args.concurrency)
    loop = asyncio.get_running_loop()
    began = time.monotonic()
    # everyone starts publishing once the storm is over (or after --storm seconds)
    start_at = loop.time() + args.storm
    await asyncio.gather(
        *(
            _device(d, t, sources[i % len(sources)], args, gate, stats, start_at)
            for i, (d, t) in enumerate(pairs)
        )
    )
    stats["connect_s"] = max(0.0, stats["last_connect"] - began)
    del stats["last_connect"]
    return stats  # last_reconnect stays: monotonic, compared with the restart's time


def _load_main() -> None:
    p = argparse.ArgumentParser()
    for name in ("host", "tokens", "out", "sources"):
        p.add_argument(f"--{name}", required=True)
    for name in ("port", "first", "count", "concurrency"):
        p.add_argument(f"--{name}", type=int, required=True)
    for name in ("interval", "seconds", "storm"):
        p.add_argument(f"--{name}", type=float, required=True)
    args = p.parse_args()
    _raise_nofile(args.count + 1024)
    try:
        import uvloop

        result = uvloop.run(_load(args))
    except ImportError:
        result = asyncio.run(_load(args))
    Path(args.out).write_text(json.dumps(result))


def _rss_bytes(proc: subprocess.Popen[bytes]) -> int:
    import psutil

    parent = psutil.Process(proc.pid)
    total = 0
    for p in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _topic_records(config: Config) -> int:
    from kafka import KafkaConsumer, TopicPartition

    from workbench.kafka import client_settings

    consumer = KafkaConsumer(**client_settings(config))
    try:
        parts = [
            TopicPartition(config.topic, p) for p in consumer.partitions_for_topic(config.topic)
        ]
        return int(sum(consumer.end_offsets(parts).values()))
    finally:
        consumer.close()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_bench(config: Config, args: argparse.Namespace) -> int:
    """Start the scratch gateway, run the generators, print and record the figures."""
    from proving.bench.gateway import _gateway_cpu_s, _start, launch_gateway
    from proving.processes import stop_process
    from workbench.cli import say

    n = args.devices
    _raise_nofile(2 * (n + 4096))  # inherited by the gateway, its workers, the generators
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    plan = spread(
        n,
        fd_limit,
        workers=args.workers or max(config.gateway_workers, spread(n, fd_limit).workers),
        generators=args.generators,
        sources=args.sources,
    )
    storm = args.storm if args.storm is not None else min(120.0, max(10.0, n / 500))
    say(
        f"bench mqtt: {n:,} devices over {plan.workers} gateway workers, {plan.generators} "
        f"generators, {plan.sources} source addresses (open files per process: {fd_limit:,}); "
        f"a scratch gateway against {config.bootstrap_servers}"
    )
    scratch = dataclasses.replace(config, mqtt_max_connections=plan.worker_cap)
    began = time.monotonic()
    s = _start(scratch, n, plan.workers)
    say(f"bench mqtt: devices provisioned and gateway up in {time.monotonic() - began:.0f} s")
    try:
        idle_rss = _rss_bytes(s.proc)
        cpu0 = _gateway_cpu_s(s.proc)
        sources = [f"127.0.0.{2 + i}" for i in range(plan.sources)]
        per = -(-n // plan.generators)
        argv = [
            sys.executable,
            "-c",
            "from proving.bench.mqtt import _load_main; _load_main()",
            "--host",
            s.config.host,
            "--port",
            str(s.config.mqtt_port),
            "--tokens",
            str(s.tokens),
            "--sources",
            ",".join(sources),
            "--interval",
            str(args.interval),
            "--seconds",
            str(args.seconds),
            "--concurrency",
            str(args.concurrency),
            "--storm",
            str(storm),
        ]
        outs = [s.tokens.with_name(f"mqtt-load-{i}.json") for i in range(plan.generators)]
        began = time.monotonic()
        procs = [
            subprocess.Popen(
                [*argv, "--first", str(i * per), "--count", str(per), "--out", str(out)]
            )
            for i, out in enumerate(outs)
        ]
        held_rss = 0
        cpu = 0.0
        restart_at = began + storm + args.restart_after if args.restart_after else None
        restarted: float | None = None
        while any(p.poll() is None for p in procs):
            time.sleep(2.0)
            held_rss = max(held_rss, _rss_bytes(s.proc))
            if restart_at is not None and restarted is None and time.monotonic() >= restart_at:
                # every connection drops at once and every device comes back: the
                # reconnect storm of a gateway restart
                say(f"bench mqtt: restarting the gateway ({held_rss / 2**20:,.0f} MiB)")
                cpu += _gateway_cpu_s(s.proc) - cpu0
                restarted = time.monotonic()
                stop_process(s.proc, timeout_s=30)
                s = dataclasses.replace(s, proc=launch_gateway(s.config, s.env))
                cpu0 = _gateway_cpu_s(s.proc)
                say(f"bench mqtt: gateway back in {time.monotonic() - restarted:.1f} s")
        wall = time.monotonic() - began
        cpu += _gateway_cpu_s(s.proc) - cpu0
        say(f"bench mqtt: load done in {wall:.0f} s; stopping the scratch gateway")
        results = [json.loads(out.read_text()) for out in outs]
        stored = _topic_records(s.config)
        lake_rows: int | None = None
        lake_distinct: int | None = None
        if args.lake:
            from proving.bench.ingest import drain_into_lake

            say(f"bench mqtt: draining {stored:,} records into a scratch lake…")
            drain = s.config.home / "drain"
            rate, lake_rows = drain_into_lake(s.config, 1, stored, drain)
            import polars as pl

            (lake,) = drain.glob("lake-*")
            lake_distinct = (
                pl.read_delta(str(lake / "telemetry"), columns=["device_id", "seq"]).unique().height
            )
            say(f"bench mqtt: {lake_rows:,} rows stored ({rate:,.0f} events/s)")
    finally:
        stop_process(s.proc, timeout_s=30)
    latencies = [x for r in results for x in r["latencies"]]
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["connect_errors"].items():
            errors[k] = errors.get(k, 0) + v
    connected = sum(r["connected"] for r in results)
    figures = {
        "devices": n,
        "connected": connected,
        "held_to_the_end": sum(r["held"] for r in results),
        "dropped": sum(r["dropped"] for r in results),
        "connect_errors": errors,
        "connect_retries": sum(r["retries"] for r in results),
        "never_connected": sum(r["never_connected"] for r in results),
        "connect_storm_s": round(max(r["connect_s"] for r in results), 1),
        "restarted_after_s": args.restart_after,
        "reconnected": sum(r["reconnected"] for r in results),
        # from the gateway's stop to the last device's CONNACK from the new one
        "all_back_after_restart_s": (
            round(max(r["last_reconnect"] for r in results) - restarted, 1)
            if restarted is not None
            else None
        ),
        "p99_reconnect_s": round(
            _percentile([x for r in results for x in r["reconnect_s"]], 0.99), 1
        ),
        "resent_after_reconnect": sum(r["resent"] for r in results),
        "sent": sum(r["sent"] for r in results),
        "acks": sum(r["acks"] for r in results),
        "records_in_kafka": stored,
        # each acknowledged publish once, re-sends de-duplicated on (device_id, seq)
        "rows_in_lake": lake_rows,
        "distinct_device_seq_in_lake": lake_distinct,
        # publishes in hand when their device gave up reconnecting: stored or not
        "unacked_when_dropped": sum(r["unacked"] for r in results),
        "p50_ms": round(_percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "gateway_rss_idle_mib": round(idle_rss / 2**20, 1),
        "gateway_rss_held_mib": round(held_rss / 2**20, 1),
        "rss_per_1000_connections_mib": round(
            (held_rss - idle_rss) / 2**20 / max(1, connected) * 1000, 2
        ),
        "gateway_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "seconds": args.seconds,
        "interval_s": args.interval,
        "workers": plan.workers,
        "generators": plan.generators,
        "sources": plan.sources,
        "open_files_limit": fd_limit,
        "load_average": round(os.getloadavg()[0], 1),
    }
    rows = [[k, v] for k, v in figures.items()]
    report(config, "mqtt", rows, header=["figure", "value"], figures=figures)
    # every PUBACK is a stored record; a record beyond them is a publish re-sent after
    # a reconnect whose first copy was stored (the processor keeps one of (device, seq)),
    # or one whose device gave up before its PUBACK came
    unacked = figures["unacked_when_dropped"]
    extra = figures["records_in_kafka"] - figures["acks"]
    kafka_ok = 0 <= extra <= figures["resent_after_reconnect"] + unacked
    # in the lake: no (device, seq) twice, every acknowledged publish, and beyond those
    # only publishes whose device gave up waiting for the PUBACK
    lake_ok = lake_rows is None or (
        lake_rows == lake_distinct and figures["acks"] <= lake_rows <= figures["acks"] + unacked
    )
    return 0 if kafka_ok and lake_ok else 1


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=10000, help="connections, one per device (10000)")
    p.add_argument("--seconds", type=float, default=180.0, help="how long the load is held (180)")
    p.add_argument(
        "--interval", type=float, default=60.0, help="seconds between a device's events (60)"
    )
    p.add_argument(
        "--generators", type=int, default=None, help="load processes (default: as few as fit)"
    )
    p.add_argument(
        "--sources",
        type=int,
        default=None,
        help="loopback source addresses 127.0.0.2… (default: as few as fit)",
    )
    p.add_argument(
        "--storm",
        type=float,
        default=None,
        help="seconds for connecting (retries included) before publishing; default "
        "devices/500, 10-120",
    )
    p.add_argument(
        "--concurrency", type=int, default=500, help="handshakes at once per generator (500)"
    )
    p.add_argument(
        "--lake",
        action="store_true",
        help="then drain the topic into a scratch lake with a processor: every "
        "acknowledged publish must be one row",
    )
    p.add_argument(
        "--restart-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="restart the gateway this long into the load: every device reconnects "
        "(the reconnect storm) and re-sends its unacknowledged publish",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="gateway workers (default: WORKBENCH_GATEWAY_WORKERS, more if the devices need)",
    )


add_bench(
    "mqtt",
    run_bench,
    "hold N MQTT device connections at 1 event/min each: connect storm, acks, p99, RSS",
    _configure,
)
