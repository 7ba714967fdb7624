"""``workbench bench bulk-read``: dataframe-sized reads into polars, four ways side by side.

Over the benchmarks' simulated lake (:func:`proving.bench.query.ensure_bench_lake`,
2 M events by default) a HiveServer2 with its Arrow Flight door is started in-process
on free ports, and an analyst of the first tenant (a real user of the lake's user
store, password login) brings two results into polars:

* **one building's day**: every column of one building's events on the last full day;
* **N rows** (1 M by default): five columns of the tenant's telemetry.

Each through the Flight door on this machine (:func:`workbench.query.local_door.local_read`:
the result in shared memory, what ``workbench.hub.kernel.query`` uses in a notebook
beside the door), through the Flight door over gRPC
(:func:`workbench.query.flight.flight_read`, what it uses when the door is on another
machine), through HiveServer2 with pyhive's
``fetchall`` (what ``%%sql`` and ``hive_connection`` do), and read straight from the
Delta files with polars as the system user with the same tenant filter: the ceiling
no scoped door can beat. A fourth row is the floor of any door over a socket: the
direct read's result served as it is by a bare Arrow Flight server (no login, engine
or scope) and read back. Medians of ``--runs`` runs after one warm-up; ratios are to
the direct read.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
from collections.abc import Callable
from functools import partial
from typing import Any

import polars as pl

from proving.bench import Timing, add_bench, report, timed_runs
from proving.bench.query import ensure_bench_lake
from proving.ports import free_port
from workbench.cli import say
from workbench.config import Config

__all__ = ["bench_bulk_read"]

_ANALYST = "bench-analyst"
_PASSWORD = "bench-analyst-password"
_COLUMNS = ["device_id", "ts", "temperature", "humidity", "light"]


def _ensure_analyst(config: Config, tenant: str) -> None:
    from workbench.exceptions import AlreadyExists
    from workbench.tenancy import Principal, UserStore

    # added, or there from an earlier run
    with contextlib.suppress(AlreadyExists):
        UserStore(config).add(
            _ANALYST, role="analyst", tenant=tenant, password=_PASSWORD, by=Principal.system()
        )


def bench_bulk_read(config: Config, args: argparse.Namespace) -> int:
    """Build (or reuse) the lake, serve it, time the three paths, print and record."""
    from pyhive import hive

    from workbench.lake.tables import table_uri
    from workbench.query.flight import flight_read
    from workbench.query.hiveserver2 import HiveServer2
    from workbench.query.local_door import local_read

    bench_config, end = ensure_bench_lake(
        config, events=args.events, devices=args.devices, days=args.days
    )
    uri = table_uri(bench_config, "telemetry")
    first = pl.scan_delta(uri).select("tenant_id", "building_id").head(1).collect().row(0)
    tenant, building = first
    day = (end - dt.timedelta(days=1)).date()
    _ensure_analyst(bench_config, tenant)
    in_tenant = pl.col("tenant_id") == tenant
    cases: dict[str, tuple[str, Callable[[], pl.DataFrame]]] = {
        "one building's day": (
            f"SELECT * FROM telemetry WHERE building_id = '{building}' AND event_date = '{day}'",
            lambda: (
                pl.scan_delta(uri)
                .filter(
                    in_tenant & (pl.col("building_id") == building) & (pl.col("event_date") == day)
                )
                .collect()
            ),
        ),
        f"{args.rows:,} rows x 5 columns": (
            f"SELECT {', '.join(_COLUMNS)} FROM telemetry LIMIT {args.rows}",
            lambda: pl.scan_delta(uri).filter(in_tenant).select(_COLUMNS).head(args.rows).collect(),
        ),
    }
    server = HiveServer2(bench_config, port=free_port(), flight_port=0)
    server.start()
    rows_out: list[list[object]] = []
    figures: dict[str, object] = {"events": args.events, "runs": args.runs, "tenant": tenant}
    conn = hive.connect(
        host=server.host, port=server.port, username=_ANALYST, password=_PASSWORD, auth="CUSTOM"
    )
    try:
        cursor = conn.cursor()
        cursor.arraysize = 10_000

        def via_flight(sql: str) -> pl.DataFrame:
            table = flight_read(
                sql, host=server.host, port=server.flight_port, user=_ANALYST, password=_PASSWORD
            )
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            return frame

        def via_shared_memory(sql: str) -> pl.DataFrame:
            table = local_read(sql, port=server.flight_port, user=_ANALYST, password=_PASSWORD)
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            return frame

        def via_pyhive(sql: str) -> pl.DataFrame:
            cursor.execute(sql)
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
            return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)

        for case, (sql, direct) in cases.items():
            say(f"timing {case} ...")
            base = timed_runs(direct, runs=args.runs)
            timings = {
                "Flight door, same host (shared memory)": timed_runs(
                    partial(via_shared_memory, sql), runs=args.runs
                ),
                "Flight door over gRPC": timed_runs(partial(via_flight, sql), runs=args.runs),
                "HiveServer2 + pyhive fetchall": timed_runs(
                    partial(via_pyhive, sql), runs=args.runs
                ),
                "bare Flight transfer of that result (floor)": _transfer(base.result, args.runs),
                "direct Delta read (ceiling)": base,
            }
            for path, t in timings.items():
                rows = t.result.height
                if rows != base.result.height:
                    raise AssertionError(
                        f"{case}: {path} returned {rows} rows, the lake holds {base.result.height}"
                    )
                rows_out.append(
                    [
                        case,
                        path,
                        f"{rows:,}",
                        f"{t.median_s:.3f}",
                        f"{rows / t.median_s:,.0f}",
                        f"{t.median_s / base.median_s:.1f}x",
                    ]
                )
                figures[f"{case} / {path}"] = {"median_s": round(t.median_s, 4), "rows": rows}
    finally:
        conn.close()
        server.stop()
    report(
        config,
        "bulk-read",
        rows_out,
        header=["read", "path", "rows", "median s", "rows/s", "vs direct"],
        figures=figures,
    )
    return 0


def _transfer(frame: pl.DataFrame, runs: int) -> Timing[pl.DataFrame]:
    """Timed runs of reading ``frame`` into polars from a bare Flight server on loopback."""
    import threading

    import pyarrow.flight as fl

    table = frame.to_arrow()

    class _Bare(fl.FlightServerBase):  # type: ignore[misc]
        def do_get(self, context: Any, ticket: fl.Ticket) -> fl.RecordBatchStream:
            return fl.RecordBatchStream(table)

    server = _Bare("grpc+tcp://127.0.0.1:0")
    threading.Thread(target=server.serve, name="bare-flight", daemon=True).start()
    client = fl.FlightClient(f"grpc+tcp://127.0.0.1:{server.port}")

    def read() -> pl.DataFrame:
        got = pl.from_arrow(client.do_get(fl.Ticket(b"result")).read_all())
        assert isinstance(got, pl.DataFrame)
        return got

    try:
        return timed_runs(read, runs=runs)
    finally:
        client.close()
        server.shutdown()


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=2_000_000, help="events in the lake (2 M)")
    p.add_argument("--devices", type=int, default=2_000, help="devices sending them (2,000)")
    p.add_argument("--days", type=float, default=7.0, help="days the events span (7)")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the big read (1 M)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per path (3)")


add_bench(
    "bulk-read",
    bench_bulk_read,
    "dataframe-sized reads into polars: Arrow Flight door vs pyhive vs the Delta files",
    _configure,
)
