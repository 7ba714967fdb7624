"""``workbench bench query``: typical HiveQL through pyhive over a simulated lake (DESIGN.md §9).

The lake is written straight to Delta by :func:`workbench.query.sample.write_sample_lake`
(the Kafka path would take minutes for 10 M events and measure ingest, not
queries) into ``$WORKBENCH_HOME/bench/query-lake`` and reused while it holds the
asked number of events; a HiveServer2 is started in-process on a free port and
every query runs ``--runs`` times through a real pyhive connection (median
reported).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import shutil
import socket

from workbench.bench import add_bench, print_table, record_result, timed_runs
from workbench.cli import say
from workbench.config import Config

__all__ = [
    "QUERIES",
    "add_lake_options",
    "bench_query",
    "ensure_bench_lake",
]

QUERIES: dict[str, str] = {
    "daily average per building": (
        "SELECT building_id, event_date, avg(temperature) AS temperature_avg, "
        "count(*) AS events FROM telemetry GROUP BY building_id, event_date"
    ),
    "same, grouped by to_date(ts)": (
        "SELECT building_id, to_date(ts) AS day, avg(temperature) AS temperature_avg, "
        "count(*) AS events FROM telemetry GROUP BY building_id, to_date(ts)"
    ),
    "alarm counts per building": (
        "SELECT building_id, sum(CASE WHEN smoke THEN 1 ELSE 0 END) AS smoke_alarms, "
        "sum(CASE WHEN intrusion THEN 1 ELSE 0 END) AS intrusion_alarms "
        "FROM telemetry GROUP BY building_id"
    ),
    "one building, last 3 hours": (
        "SELECT device_id, ts, temperature, humidity FROM telemetry "
        "WHERE building_id = 'b-0001' AND event_date >= date_sub(to_date('{end}'), 1) "
        "AND ts >= '{from3h}'"
    ),
    "silent devices (>15 min)": (
        "SELECT device_id, max(ts) AS last_seen FROM telemetry "
        "WHERE event_date >= date_sub(to_date('{end}'), 1) GROUP BY device_id "
        "HAVING max(ts) < '{from15m}'"
    ),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_bench_lake(
    config: Config, *, events: int, devices: int, days: float
) -> tuple[Config, dt.datetime]:
    """The benchmarks' simulated lake under ``$WORKBENCH_HOME/bench/query-lake`` (written
    once per size, then reused); returns its config and the end of its events."""
    from workbench.query.sample import write_sample_lake

    lake = config.home / "bench" / "query-lake"
    marker = lake / f"events-{events}-devices-{devices}"
    bench_config = dataclasses.replace(config, lake=str(lake))
    if not marker.exists():
        shutil.rmtree(lake, ignore_errors=True)
        say(f"writing {events:,} simulated events of {devices:,} devices to {lake} ...")
        made = write_sample_lake(
            bench_config,
            events=events,
            devices=devices,
            days=days,
            progress=lambda done, total: say(f"  {done:,}/{total:,} events"),
        )
        say(f"lake written in {made.seconds:.1f} s ({made.events / made.seconds:,.0f} events/s)")
        marker.write_text(f"{made.start.isoformat()} {made.end.isoformat()}\n")
    return bench_config, dt.datetime.fromisoformat(marker.read_text().split()[1])


def bench_query(config: Config, args: argparse.Namespace) -> int:
    """Build (or reuse) the lake, serve it, time the queries, print and record."""
    from pyhive import hive

    from ingest_service.hiveserver2 import HiveServer2
    from workbench.query.client import ADMIN_USER, ensure_admin_secret

    bench_config, end = ensure_bench_lake(
        config, events=args.events, devices=args.devices, days=args.days
    )
    fmt = "%Y-%m-%d %H:%M:%S"
    params = {
        "end": end.strftime("%Y-%m-%d"),
        "from3h": (end - dt.timedelta(hours=3)).strftime(fmt),
        "from15m": (end - dt.timedelta(minutes=15)).strftime(fmt),
    }
    server = HiveServer2(bench_config, port=_free_port())
    server.start()
    rows_out, figures = [], {"events": args.events, "devices": args.devices, "runs": args.runs}
    try:
        conn = hive.connect(
            host=server.host,
            port=server.port,
            username=ADMIN_USER,
            password=ensure_admin_secret(bench_config),
            auth="CUSTOM",
        )
        cursor = conn.cursor()
        cursor.arraysize = 10_000
        for name, template in QUERIES.items():
            sql = template.format(**params)

            def run(sql: str = sql) -> int:
                cursor.execute(sql)
                return len(cursor.fetchall())

            t = timed_runs(run, runs=args.runs)
            rows_out.append([name, t.result, f"{t.median_s * 1e3:.0f}", f"{t.best_s * 1e3:.0f}"])
            figures[name] = {"median_s": round(t.median_s, 4), "rows": t.result}
        conn.close()
    finally:
        server.stop()
    print_table(rows_out, header=["query", "rows", "median ms", "best ms"])
    path = record_result(config, "query", figures)
    say(f"results appended to {path}")
    return 0


def add_lake_options(p: argparse.ArgumentParser) -> None:
    """The size of the shared benchmark lake (see :func:`ensure_bench_lake`)."""
    p.add_argument("--events", type=int, default=10_000_000, help="events in the lake (10 M)")
    p.add_argument("--devices", type=int, default=10_000, help="devices sending them (10,000)")
    p.add_argument("--days", type=float, default=7.0, help="days the events span (7)")


def _configure(p: argparse.ArgumentParser) -> None:
    add_lake_options(p)
    p.add_argument("--runs", type=int, default=5, help="timed runs per query (5)")


add_bench(
    "query",
    bench_query,
    "time typical HiveQL through pyhive over a simulated lake of N events",
    _configure,
)
