"""``workbench bench store-cost``: what the lake costs on S3 at the seed's rate.

A scratch stack (embedded broker, gateway, processor; :class:`proving.scratch.ScratchStack`)
keeps its lake on a real S3-compatible server (moto's, :class:`proving.objstore.MotoS3`),
with the default commit interval (1 s) unless ``WORKBENCH_COMMIT_INTERVAL`` says
otherwise. Every request the stack's processes send to the store goes through a counting
proxy on loopback (:class:`proving.objstore.StoreProxy`), which sorts it by kind (the way S3 bills:
PUT/POST/LIST, GET/HEAD, DELETE) and by the table it touches. Simulated devices send at
``--rate`` events/s (the seed's 1,667: 100,000 devices, one event a minute each) for
``--seconds``; the requests of the steady window after ``--warmup`` seconds are set
against the events stored in it. Then the bench lists the bucket (bytes and objects per
event of ``telemetry``) and times reading one building's day back from the store. The
bench's own reads go to the store directly, so they are not counted.

It prints the requests per second and per 1,000 events by table, and a month at the
seed rate at S3 Standard's list prices (:data:`PRICES`), with the arithmetic in
docs/storage.md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import time
import urllib.parse
from typing import Any

import polars as pl

from proving.bench import add_bench, report
from workbench.cli import say
from workbench.config import Config

__all__ = ["PRICES", "bench_store_cost", "request_kind"]

# S3 Standard list prices, us-east-1 (USD): storage per GB-month (first 50 TB), and per
# 1,000 requests; DELETE is free. Check the provider's page before you quote a figure.
PRICES = {"GB-month": 0.023, "PUT/POST/LIST": 0.005, "GET/HEAD": 0.0004}
_MONTH_S = 30 * 24 * 3600
_KINDS = ("PUT", "POST", "LIST", "GET", "HEAD", "DELETE")
_BILLED = {"PUT": "PUT/POST/LIST", "POST": "PUT/POST/LIST", "LIST": "PUT/POST/LIST",
           "GET": "GET/HEAD", "HEAD": "GET/HEAD"}  # fmt: skip


def request_kind(method: str, target: str, root: str) -> tuple[str, str]:
    """(kind, table) of one path-style S3 request; ``root`` is ``/bucket/prefix``.

    >>> request_kind("GET", "/b/lake?list-type=2&prefix=lake%2Ftelemetry%2F_delta_log", "/b/lake")
    ('LIST', 'telemetry')
    >>> request_kind("PUT", "/b/lake/registry/devices/part-1.parquet", "/b/lake")
    ('PUT', 'registry/devices')
    >>> request_kind("HEAD", "/b/lake/building_state/_delta_log/00000000007.json", "/b/lake")
    ('HEAD', 'building_state')
    """
    url = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(url.query)
    path = urllib.parse.unquote(url.path)
    if method == "GET" and ("list-type" in query or path.rstrip("/").count("/") <= 1):
        kind, path = "LIST", "/" + root.split("/")[1] + "/" + query.get("prefix", [""])[0]
    else:
        kind = method
    rest = path[len(root) :].strip("/").split("/") if path.startswith(root) else ["(outside)"]
    grouped = rest[0] in ("registry", "audit") and len(rest) > 1
    return kind, "/".join(rest[:2]) if grouped else rest[0] or "(root)"


@dataclasses.dataclass
class _Window:
    seconds: float
    events: int
    requests: collections.Counter[tuple[str, str]]


def bench_store_cost(config: Config, args: argparse.Namespace) -> int:
    """Run the stack on moto's S3 behind the counter, print and record the figures."""
    from proving.objstore import MotoS3, StoreProxy
    from proving.scratch import ScratchStack

    devices = max(1, round(args.rate * args.interval))
    root = config.home / "bench" / f"store-cost-{os.getpid()}"
    with MotoS3(root / "moto") as moto:
        prefix = "lake"
        root_path = f"/{moto.bucket}/{prefix}"
        counter = StoreProxy(moto.url, lambda method, path: request_kind(method, path, root_path))
        counter.thread.start()
        direct = moto.env()
        settings = {
            **direct,
            "AWS_ENDPOINT_URL": counter.url,
            "WORKBENCH_LAKE": moto.lake(prefix),
            "WORKBENCH_COMMIT_INTERVAL": os.environ.get("WORKBENCH_COMMIT_INTERVAL", "1"),
        }
        saved = {k: os.environ.get(k) for k in direct}
        os.environ.update(direct)  # the bench's own reads: straight to the store, not counted
        stack = ScratchStack(home=root / "stack", settings=settings, report=say)
        try:
            say(f"starting broker, gateway and processor with the lake on S3 ({moto.url}) …")
            stack.up()
            say(f"{devices:,} devices send {args.rate:,.0f} events/s for {args.seconds:.0f} s …")
            run = stack.simulate(devices=devices, interval_s=args.interval, duration_s=args.seconds)
            if stack.wait_stored(1, timeout_s=120) < 1:
                raise RuntimeError("no event reached the lake within 120 s")
            time.sleep(args.warmup)
            start = (time.monotonic(), stack.stored().height, counter.snapshot())
            time.sleep(max(1.0, args.seconds - args.warmup - 2))
            end = (time.monotonic(), stack.stored().height, counter.snapshot())
            run.wait(timeout=args.seconds + 120)
            window = _Window(end[0] - start[0], end[1] - start[1], end[2] - start[2])
            # the stack stopped before the bucket is listed and the counter read: a commit
            # landing between the two would be listed but not yet counted
            stack.close()
            stored = stack.stored().height
            everything = counter.snapshot()
            sizes = _table_sizes(moto, prefix, "telemetry")
            read_s, day_rows = _read_a_building_day(stack.config.lake)
        finally:
            stack.close()
            counter.shutdown()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return _report(config, args, window, everything, stored, sizes, read_s, day_rows)


def _table_sizes(moto: Any, prefix: str, table: str) -> dict[str, int]:
    """Objects and bytes of ``table`` in the bucket: data files and log."""
    from pyarrow import fs

    s3 = fs.S3FileSystem(
        access_key=moto.access_key, secret_key=moto.secret_key, region="us-east-1",
        endpoint_override=moto.url, scheme="http",
    )  # fmt: skip
    found = s3.get_file_info(fs.FileSelector(f"{moto.bucket}/{prefix}/{table}", recursive=True))
    files = [f for f in found if f.type == fs.FileType.File]
    log = [f for f in files if "/_delta_log/" in f.path]
    data = [f for f in files if "/_delta_log/" not in f.path]
    return {
        "data_objects": len(data),
        "data_bytes": sum(f.size or 0 for f in data),
        "log_objects": len(log),
        "log_bytes": sum(f.size or 0 for f in log),
    }


def _read_a_building_day(lake: str) -> tuple[float, int]:
    """Seconds to read the busiest building's rows of the newest day back from S3."""
    uri = f"{lake.rstrip('/')}/telemetry"
    pick = (
        pl.scan_delta(uri)
        .group_by("building_id", "event_date")
        .len()
        .sort(["event_date", "len"], descending=True)
        .head(1)
        .collect()
    )
    building, day = pick["building_id"][0], pick["event_date"][0]
    started = time.perf_counter()
    rows = (
        pl.scan_delta(uri)
        .filter((pl.col("building_id") == building) & (pl.col("event_date") == day))
        .collect()
        .height
    )
    return time.perf_counter() - started, rows


def _report(
    config: Config,
    args: argparse.Namespace,
    window: _Window,
    everything: collections.Counter[tuple[str, str]],
    stored: int,
    sizes: dict[str, int],
    read_s: float,
    day_rows: int,
) -> int:
    per_s = window.events / window.seconds if window.seconds else 0.0
    tables = sorted({table for _, table in window.requests})
    rows: list[list[object]] = []
    billed: collections.Counter[str] = collections.Counter()
    for table in [*tables, "all"]:
        counts = {
            kind: sum(
                n for (k, t), n in window.requests.items() if k == kind and table in (t, "all")
            )
            for kind in _KINDS
        }
        total = sum(counts.values())
        if table == "all":
            for kind, n in counts.items():
                if kind in _BILLED:
                    billed[_BILLED[kind]] += n
        per_1k = 1000 / window.events if window.events else 0.0
        rows.append(
            [
                table,
                *(f"{counts[k] / window.seconds:,.2f}" for k in _KINDS),
                f"{total / window.seconds:,.1f}",
                f"{total * per_1k:,.2f}",
            ]
        )
    bytes_per_event = (sizes["data_bytes"] + sizes["log_bytes"]) / stored if stored else 0.0
    seed = args.rate
    month_gb = bytes_per_event * seed * _MONTH_S / 1e9
    requests_month = {k: n / window.seconds * _MONTH_S for k, n in billed.items()}
    cost = {
        "storage added in a month": month_gb * PRICES["GB-month"],
        **{f"{k} requests": n / 1000 * PRICES[k] for k, n in requests_month.items()},
    }
    say(
        f"window {window.seconds:.0f} s: {window.events:,} events stored ({per_s:,.0f}/s of "
        f"{args.rate:,.0f}); telemetry holds {stored:,} rows in {sizes['data_objects']:,} data "
        f"objects ({sizes['data_bytes']:,} bytes) and {sizes['log_objects']:,} log objects "
        f"({sizes['log_bytes']:,} bytes): {bytes_per_event:,.1f} bytes/event, "
        f"{(sizes['data_objects'] + sizes['log_objects']) / max(stored, 1) * 1000:,.2f} "
        f"objects per 1,000 events; one building's day ({day_rows:,} rows) read back in "
        f"{read_s:.3f} s"
    )
    say(
        f"a month at {seed:,.0f} events/s: {month_gb:,.1f} GB more stored, "
        + ", ".join(f"{n / 1e6:,.2f} M {k} requests" for k, n in requests_month.items())
        + "; at S3 Standard list prices "
        + ", ".join(f"{k} ${v:,.2f}" for k, v in cost.items())
        + f"; total ${sum(cost.values()):,.2f} for the month's new data and requests"
    )
    report(
        config,
        "store-cost",
        rows,
        header=["table", *(f"{k}/s" for k in _KINDS), "all/s", "per 1,000 events"],
        figures={
            "rate": args.rate,
            "window_s": round(window.seconds, 1),
            "events": window.events,
            "events_per_s": round(per_s, 1),
            "commit_interval_s": float(os.environ.get("WORKBENCH_COMMIT_INTERVAL", "1")),
            "requests": {f"{k} {t}": n for (k, t), n in sorted(window.requests.items())},
            "requests_whole_run": {f"{k} {t}": n for (k, t), n in sorted(everything.items())},
            "telemetry": sizes,
            "telemetry_rows": stored,
            "bytes_per_event": round(bytes_per_event, 1),
            "building_day_read_s": round(read_s, 3),
            "building_day_rows": day_rows,
            "month": {"gb": round(month_gb, 1), "usd": {k: round(v, 2) for k, v in cost.items()}},
        },
    )
    return 0


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=1667.0, help="events/s (the seed's: 1,667)")
    p.add_argument("--interval", type=float, default=1.2, help="each device's seconds between "
                   "events (devices = rate * interval)")  # fmt: skip
    p.add_argument("--seconds", type=float, default=60.0, help="sending time (60)")
    p.add_argument("--warmup", type=float, default=15.0, help="seconds not counted (15)")


add_bench(
    "store-cost",
    bench_store_cost,
    "the lake on S3 at the seed's rate: requests by kind and table, bytes per event, a month",
    _configure,
)
