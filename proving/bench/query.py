"""``workbench bench query``: typical HiveQL through pyhive over a simulated lake.

The lake is written straight to Delta by :func:`proving.sample.write_sample_lake`
(the Kafka path would take minutes for 10 M events and measure ingest, not
queries) into ``$WORKBENCH_HOME/bench/query-lake``, a directory per size, and reused;
a HiveServer2 is started in-process on a free port and
every query runs ``--runs`` times through a real pyhive connection (median
reported), on each engine of ``--engines`` in turn (DuckDB, Spark on
``WORKBENCH_SPARK_MASTER``), side by side with the ratio and the peak resident memory
of the process and its children (Spark's JVM) while the queries ran. Then, per engine,
the p50 and p99 of a small query of one tenant's analyst alone and while another
tenant's analyst runs a heavy one over and over, as a ratio: does one tenant's scan hold
up another's short answer? ``--events`` may name several sizes (``10000000,100000000``):
each is timed in turn, and a last table shows how each engine's medians grow from one
size to the next.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import itertools
import secrets
import shutil
import statistics
import threading
import time
from typing import Any

from proving.bench import Timing, add_bench, report, timed_runs
from proving.ports import free_port
from workbench.cli import print_table, say
from workbench.config import Config
from workbench.exceptions import InvalidInput

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


# one tenant's short question, asked while another tenant scans all its days
SMALL = "SELECT count(*) AS events FROM telemetry WHERE event_date = to_date('{end}')"
HEAVY = QUERIES["same, grouped by to_date(ts)"]
LIGHT_USER, HEAVY_USER = ("bench-light", "t-0001"), ("bench-heavy", "t-0002")


def ensure_bench_lake(
    config: Config, *, events: int, devices: int, days: float
) -> tuple[Config, dt.datetime]:
    """The benchmarks' simulated lake of this size under
    ``$WORKBENCH_HOME/bench/query-lake/<events>-events-<devices>-devices-<days>-days``
    (written once per size, then reused); returns its config and the end of its events."""
    from proving.sample import write_sample_lake

    lakes = config.home / "bench" / "query-lake"
    if (lakes / "telemetry").exists():  # the layout before one directory per size
        shutil.rmtree(lakes)
    lake = lakes / f"{events}-events-{devices}-devices-{days:g}-days"
    marker = lake / "written"
    bench_config = dataclasses.replace(config, lake=str(lake))
    if not marker.exists():
        shutil.rmtree(lake, ignore_errors=True)
        lake.mkdir(parents=True)
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


class _PeakRss:
    """The largest resident memory of this process and its children (Spark's JVM) seen
    while it runs, sampled every 50 ms."""

    def __init__(self) -> None:
        import psutil

        self.peak = 0
        self._me = psutil.Process()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        import psutil

        total = self._me.memory_info().rss
        for child in self._me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return int(total)

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> _PeakRss:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def _bench_analyst(config: Config, user: str, tenant: str) -> str:
    """An analyst of ``tenant`` in the benchmark lake's user store, with a fresh password."""
    from workbench.exceptions import NotFound
    from workbench.tenancy import Principal, UserStore

    password = secrets.token_urlsafe(16)
    store = UserStore(config)
    try:
        store.get(user)
    except NotFound:
        store.add(user, role="analyst", tenant=tenant, password=password, by=Principal.system())
    else:
        store.set_password(user, password, by=Principal.system())
    return password


@dataclasses.dataclass(frozen=True)
class Contention:
    """Seconds of the small query alone and while the heavy one ran (``samples`` each)."""

    alone: list[float]
    during: list[float]
    heavy_runs: int

    @staticmethod
    def p(times: list[float], q: int) -> float:
        """The ``q``-th percentile of ``times``."""
        return statistics.quantiles(times, n=100, method="inclusive")[q - 1]


def _small_under_heavy(
    server: Any, config: Config, params: dict[str, str], samples: int
) -> Contention:
    """Time :data:`SMALL` as one tenant's analyst, alone and then while another tenant's
    analyst runs :data:`HEAVY` in a loop on its own connection."""
    from pyhive import hive
    from TCLIService.ttypes import TOperationState

    waiting = (
        TOperationState.INITIALIZED_STATE,
        TOperationState.PENDING_STATE,
        TOperationState.RUNNING_STATE,
    )

    def connect(user: tuple[str, str]) -> Any:
        password = _bench_analyst(config, *user)
        return hive.connect(
            host=server.host, port=server.port, username=user[0], password=password, auth="CUSTOM"
        )

    small, heavy = SMALL.format(**params), HEAVY.format(**params)
    light = connect(LIGHT_USER)
    cursor = light.cursor()

    def timed() -> float:
        t0 = time.perf_counter()
        cursor.execute(small)
        cursor.fetchall()
        return time.perf_counter() - t0

    timed()  # warm-up
    alone = [timed() for _ in range(samples)]
    stop, started = threading.Event(), threading.Event()
    runs = [0]
    failures: list[Exception] = []

    def hammer() -> None:
        conn = connect(HEAVY_USER)
        try:
            heavy_cursor = conn.cursor()
            while not stop.is_set():
                heavy_cursor.execute(heavy, async_=True)
                started.set()
                while heavy_cursor.poll().operationState in waiting:
                    time.sleep(0.01)
                heavy_cursor.fetchall()
                runs[0] += 1
        except Exception as exc:
            failures.append(exc)
        finally:
            started.set()
            conn.close()

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    started.wait()
    time.sleep(0.2)  # its scan is under way, not only submitted
    during = [timed() for _ in range(samples)]
    stop.set()
    thread.join()
    light.close()
    if failures:
        raise failures[0]
    return Contention(alone, during, runs[0])


def _time_engine(
    bench_config: Config, engine: str, params: dict[str, str], runs: int, samples: int
) -> tuple[dict[str, Timing[int]], int, float, Contention]:
    """Every query through pyhive on a HiveServer2 running ``engine``; the timings, the
    peak RSS (process and children) while they ran, and the engine's start-up seconds."""
    from pyhive import hive

    from workbench.query.client import ADMIN_USER, ensure_admin_secret
    from workbench.query.hiveserver2 import HiveServer2

    engine_config = dataclasses.replace(bench_config, hive_engine=engine)
    server = HiveServer2(engine_config, port=free_port(), flight_port=0)
    t0 = time.perf_counter()
    server.start()
    startup = time.perf_counter() - t0
    timings: dict[str, Timing[int]] = {}
    try:
        conn = hive.connect(
            host=server.host,
            port=server.port,
            username=ADMIN_USER,
            password=ensure_admin_secret(engine_config),
            auth="CUSTOM",
        )
        cursor = conn.cursor()
        cursor.arraysize = 10_000
        with _PeakRss() as peak:
            for name, template in QUERIES.items():
                sql = template.format(**params)

                def run(sql: str = sql) -> int:
                    cursor.execute(sql)
                    return len(cursor.fetchall())

                say(f"  {engine}: {name}")
                timings[name] = timed_runs(run, runs=runs)
        conn.close()
        say(f"  {engine}: small query alone and under another tenant's heavy one")
        contention = _small_under_heavy(server, engine_config, params, samples)
    finally:
        server.stop()
    return timings, peak.peak, startup, contention


def bench_query(config: Config, args: argparse.Namespace) -> int:
    """Build (or reuse) the lake of each size, serve it on each engine in turn, time the
    queries, print them side by side (and, for several sizes, how each engine's times
    grow from one size to the next) and record."""
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - {"duckdb", "spark"})
    if unknown or not engines:
        raise InvalidInput(
            f"--engines {args.engines!r}: expected duckdb, spark or duckdb,spark",
            hint="e.g. --engines duckdb,spark",
        )
    if args.samples < 2:
        raise InvalidInput(
            f"--samples {args.samples}: at least 2 are needed for a p99", hint="e.g. --samples 30"
        )
    sizes: list[int] = args.events
    by_size = {events: _time_size(config, args, engines, events) for events in sizes}
    several = len(sizes) > 1
    header = (["events"] if several else []) + ["query", "rows"]
    for engine in engines:
        header += [f"{engine} median ms", f"{engine} best ms"]
    if len(engines) == 2:
        header.append(f"{engines[1]}/{engines[0]}")
    rows_out: list[list[object]] = []
    for events, measured in by_size.items():
        rows_out += [([_millions(events)] if several else []) + row for row in measured.rows]
    figures: dict[str, Any] = {"devices": args.devices, "runs": args.runs}
    if several:
        figures["events"] = sizes
        figures["by_events"] = {str(e): m.figures for e, m in by_size.items()}
    else:
        figures["events"] = sizes[0]
        figures.update(by_size[sizes[0]].figures)
    growth = _growth(sizes, engines, by_size) if several else []
    if growth:
        figures["growth"] = {
            f"{_millions(a)} -> {_millions(b)}": {
                engine: {name: ratio for name, ratio in ratios.items()}
                for engine, ratios in per_engine.items()
            }
            for (a, b), per_engine in growth
        }
    report(config, "query", rows_out, header=header, figures=figures)
    for (a, b), per_engine in growth:
        say(f"how each engine's median grows from {_millions(a)} to {_millions(b)} events:")
        growth_header = [
            "query",
            *(f"{engine} {_millions(b)} / {_millions(a)}" for engine in engines),
        ]
        growth_rows: list[list[object]] = [
            [name, *(f"{per_engine[engine][name]:.1f}x" for engine in engines)] for name in QUERIES
        ]
        print_table(growth_rows, header=growth_header)
    return 0


def _millions(events: int) -> str:
    """``10000000`` → ``10 M``; sizes under a million as they are."""
    return f"{events / 1e6:g} M" if events >= 1_000_000 else f"{events:,}"


@dataclasses.dataclass(frozen=True)
class _Size:
    """One lake size's table rows, its figures, and each engine's timings."""

    rows: list[list[object]]
    figures: dict[str, Any]
    timings: dict[str, dict[str, Timing[int]]]


def _time_size(config: Config, args: argparse.Namespace, engines: list[str], events: int) -> _Size:
    bench_config, end = ensure_bench_lake(
        config, events=events, devices=args.devices, days=args.days
    )
    say(f"{_millions(events)} events:")
    fmt = "%Y-%m-%d %H:%M:%S"
    params = {
        "end": end.strftime("%Y-%m-%d"),
        "from3h": (end - dt.timedelta(hours=3)).strftime(fmt),
        "from15m": (end - dt.timedelta(minutes=15)).strftime(fmt),
    }
    figures: dict[str, Any] = {}
    results = {}
    contended: dict[str, Contention] = {}
    for engine in engines:
        timings, peak, startup, contention = _time_engine(
            bench_config, engine, params, args.runs, args.samples
        )
        results[engine] = timings
        contended[engine] = contention
        figures[engine] = {
            "peak_rss_mb": round(peak / 2**20),
            "startup_s": round(startup, 2),
            **{n: {"median_s": round(t.median_s, 4), "rows": t.result} for n, t in timings.items()},
            "small_under_heavy": {
                "samples": args.samples,
                "heavy_runs": contention.heavy_runs,
                **{
                    f"p{q}_{when}_s": round(Contention.p(times, q), 4)
                    for q in (50, 99)
                    for when, times in (("alone", contention.alone), ("during", contention.during))
                },
            },
        }
    rows_out: list[list[object]] = []
    for name in QUERIES:
        first = results[engines[0]][name]
        row: list[object] = [name, first.result]
        for engine in engines:
            t = results[engine][name]
            row += [f"{t.median_s * 1e3:.0f}", f"{t.best_s * 1e3:.0f}"]
        if len(engines) == 2:
            row.append(f"{results[engines[1]][name].median_s / first.median_s:.1f}x")
        rows_out.append(row)
    for q in (50, 99):
        # per engine: alone → during (during/alone); last column: the engines' during ratio
        row = [f"small query p{q}: alone → during heavy", ""]
        during = []
        for engine in engines:
            c = contended[engine]
            alone_s, during_s = Contention.p(c.alone, q), Contention.p(c.during, q)
            during.append(during_s)
            row += [f"{alone_s * 1e3:.0f} → {during_s * 1e3:.0f}", f"({during_s / alone_s:.1f}x)"]
        if len(engines) == 2:
            row.append(f"{during[1] / during[0]:.1f}x")
        rows_out.append(row)
    memory: list[object] = ["peak RSS MB (start-up s)", ""]
    for engine in engines:
        memory += [f"{figures[engine]['peak_rss_mb']}", f"({figures[engine]['startup_s']:.0f} s)"]
    rows_out.append(memory + ([""] if len(engines) == 2 else []))
    return _Size(rows_out, figures, results)


def _growth(
    sizes: list[int], engines: list[str], by_size: dict[int, _Size]
) -> list[tuple[tuple[int, int], dict[str, dict[str, float]]]]:
    """For each pair of consecutive sizes: per engine and query, the larger size's median
    over the smaller's (10.0 when the time grows with the events)."""
    out = []
    for a, b in itertools.pairwise(sizes):
        out.append(
            (
                (a, b),
                {
                    engine: {
                        name: round(
                            by_size[b].timings[engine][name].median_s
                            / by_size[a].timings[engine][name].median_s,
                            2,
                        )
                        for name in QUERIES
                    }
                    for engine in engines
                },
            )
        )
    return out


def _sizes(text: str) -> list[int]:
    """``--events`` of ``bench query``: one size or several, comma-separated, ascending."""
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a number of events, or several separated by commas "
            "(e.g. 10000000,100000000)"
        ) from None
    if not sizes or any(n <= 0 for n in sizes) or sizes != sorted(set(sizes)):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected positive sizes, ascending, each once (e.g. 10000000,100000000)"
        )
    return sizes


def add_lake_options(p: argparse.ArgumentParser, *, several: bool = False) -> None:
    """The size of the shared benchmark lake (see :func:`ensure_bench_lake`); with
    ``several``, ``--events`` takes a comma-separated list of sizes."""
    if several:
        p.add_argument(
            "--events",
            type=_sizes,
            default=[10_000_000],
            help="events in the lake (10 M); several sizes separated by commas are timed "
            "one after the other, with how each engine's times grow "
            "(e.g. 10000000,100000000)",
        )
    else:
        p.add_argument("--events", type=int, default=10_000_000, help="events in the lake (10 M)")
    p.add_argument("--devices", type=int, default=10_000, help="devices sending them (10,000)")
    p.add_argument("--days", type=float, default=7.0, help="days the events span (7)")


def _configure(p: argparse.ArgumentParser) -> None:
    add_lake_options(p, several=True)
    p.add_argument("--runs", type=int, default=5, help="timed runs per query (5)")
    p.add_argument(
        "--samples",
        type=int,
        default=30,
        help="runs of the small query alone and again under another tenant's heavy one (30)",
    )
    p.add_argument(
        "--engines",
        default="duckdb",
        help="HiveQL engines to time side by side, in order: duckdb, spark or duckdb,spark "
        "(spark runs on WORKBENCH_SPARK_MASTER, default local[2])",
    )


add_bench(
    "query",
    bench_query,
    "time typical HiveQL through pyhive over a simulated lake of N events",
    _configure,
)
