"""``workbench bench registry``: what the device registry costs the gateway at 10k, 100k and
1M devices, side by side in one run.

Per size (``--sizes``, default ``10000,100000,1000000``), in a scratch lake under
``$WORKBENCH_HOME/bench/registry``:

1. bulk import of that many devices (one commit; progress on stderr);
2. in this process, the gateway's own registry view (:class:`DeviceCache`): CPU of the
   first load (what every worker paid per change before the change feed: a full reload),
   then ``--changes`` disables, each followed by one ``refresh()`` whose CPU is the cost of
   one change by feed — counted, so a resync shows instead of hiding in the median;
3. a real gateway with ``--workers`` processes on free ports against the configured Kafka
   (``workbench up`` or ``KAFKA_BOOTSTRAP_SERVERS``): its start-up time (launch until every
   worker serves), each worker's RSS, and the RSS above a gateway of the same build with no
   fleet, per device;
4. ``--changes`` times: ``Registry.provision`` returns → the first 202 for the new device,
   then ``Registry.disable`` returns → its first refusal, each over a new connection
   per request, with the number of requests it took (1 is the read-your-writes promise).

CPU figures are per worker (each worker does the same work) and robust on a shared
machine; the wall-clock ones depend on what else runs, and the load average is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from proving.bench import add_bench, report, scratch_gateway_env
from proving.processes import stop_process
from workbench.cli import say, whole_number
from workbench.config import Config

__all__ = ["run_bench"]

_DEFAULT_SIZES = "10000,100000,1000000"
_ANSWER_WAIT_S = 10.0  # how long a probe keeps asking before it counts the change as lost
_BODY = b'{"ts":"2026-12-06T09:00:00.000Z","seq":1,"readings":{"temperature":21.5}}'


@dataclasses.dataclass
class _Scratch:
    home: Path
    env: dict[str, str]
    config: Config


def _scratch(config: Config, name: str, workers: int) -> _Scratch:
    from workbench.kafka import ensure_topic

    home = config.home / "bench" / "registry" / name
    env = {
        **scratch_gateway_env(config, home, workers=workers),
        # a 1M-device load takes longer than the default start-up allowance
        "WORKBENCH_STARTUP_TIMEOUT": "600",
        # a run from a source snapshot (PYTHONPATH) measures that snapshot's gateway too
        **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
    }
    scratch = Config.from_env(env)
    ensure_topic(scratch)
    return _Scratch(home, env, scratch)


def _progress(size: int) -> Callable[[str, int, int], None]:
    """Import progress on stderr, a line per tenth of each stage."""
    shown: dict[str, int] = {}
    started = time.monotonic()

    def progress(stage: str, done: int, total: int) -> None:
        tenth = 10 * done // max(1, total)
        if shown.get(stage, -1) >= tenth:
            return
        shown[stage] = tenth
        if stage == "writing" and done == 0:
            say(f"  {size:,} devices: writing (one MERGE commit, no progress until it ends)")
        else:
            took = time.monotonic() - started
            say(f"  {size:,} devices: {stage} {done:,}/{total:,} ({took:.0f} s)")

    return progress


def _import(s: _Scratch, size: int) -> float:
    """Tenant, building and ``size`` devices in one import; the import's wall seconds."""
    from workbench.registry import Registry
    from workbench.tenancy.principal import Principal

    registry = Registry(s.config, principal=Principal.system("bench"))
    registry.add_tenant("t-bench")
    registry.add_building("b-bench", tenant="t-bench")
    if size == 0:  # the baseline: one device, so that the table exists and workers load
        registry.provision("fleet-0000000", building="b-bench", device_type="environment")
        return 0.0
    fleet = s.home / "fleet.csv"
    with fleet.open("w") as f:
        f.write("device_id,building_id,device_type\n")
        for start in range(0, size, 100_000):
            f.writelines(
                f"fleet-{i:07d},b-bench,environment\n"
                for i in range(start, min(size, start + 100_000))
            )
    t0 = time.monotonic()
    result = registry.import_csv(fleet, progress=_progress(size))
    took = time.monotonic() - t0
    if result["inserted"] != size:
        raise RuntimeError(f"the import inserted {result['inserted']} devices, not {size}")
    fleet.unlink()
    return took


def _view_costs(s: _Scratch, changes: int) -> dict[str, Any]:
    """CPU of the gateway's registry view: the first (full) load, and one change by feed."""
    from ingest_service.gateway.devices import DeviceCache
    from workbench.registry import Registry
    from workbench.tenancy.principal import Principal

    registry = Registry(s.config, principal=Principal.system("bench"))
    cache = DeviceCache(s.config, name="bench")
    t0 = time.process_time()
    cache.refresh()
    full_ms = 1000 * (time.process_time() - t0)
    loaded = len(cache)
    per_change: list[float] = []
    by_feed = 0
    for i in range(changes):
        registry.disable(f"fleet-{i:07d}")
        resyncs = cache.resyncs
        t0 = time.process_time()
        moved = cache.refresh()
        per_change.append(1000 * (time.process_time() - t0))
        entry = cache.get(f"fleet-{i:07d}")
        if moved and cache.resyncs == resyncs and entry is not None and entry.status == "disabled":
            by_feed += 1
    return {
        "devices_loaded": loaded,
        "full_reload_cpu_ms": round(full_ms, 1),
        "change_cpu_ms_median": round(statistics.median(per_change), 2) if per_change else None,
        "change_cpu_ms_max": round(max(per_change), 2) if per_change else None,
        "changes": changes,
        "changes_by_feed": by_feed,
        "resyncs": cache.resyncs,
    }


@contextlib.contextmanager
def _gateway(s: _Scratch) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """A gateway on the scratch lake; yields it and the seconds from launch until every
    worker serves (``/healthz`` names a registry version all of them have loaded)."""
    log = (s.home / "gateway.log").open("wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest_service", "gateway"], env=s.env, stderr=log
    )
    url = f"http://{s.config.host}:{s.config.gateway_port}/healthz"
    deadline = t0 + s.config.startup_timeout
    try:
        while True:
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(url, timeout=2) as r:
                    health = json.loads(r.read())
                if health.get("registry_version_all", health.get("registry_version")) is not None:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bench gateway did not start; see {s.home / 'gateway.log'}")
            time.sleep(0.05)
        yield proc, time.monotonic() - t0
    finally:
        stop_process(proc, timeout_s=60)
        log.close()


def _worker_rss(proc: subprocess.Popen[bytes]) -> list[int]:
    import psutil

    return [w.memory_info().rss for w in psutil.Process(proc.pid).children()]


def _worker_cpu(proc: subprocess.Popen[bytes]) -> list[float]:
    """CPU seconds (user + system) each worker has used so far: its start-up, once it
    serves, counted in a way the host's other jobs do not inflate as they do wall time."""
    import psutil

    return [sum(w.cpu_times()[:2]) for w in psutil.Process(proc.pid).children()]


def _post(s: _Scratch, token: str) -> int:
    """One event over a new connection (the kernel picks the worker); the status."""
    conn = http.client.HTTPConnection(s.config.host, s.config.gateway_port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/telemetry",
            _BODY,
            {"Authorization": token, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _until(s: _Scratch, token: str, wanted: Callable[[int], bool]) -> tuple[float | None, int]:
    """Seconds until an answer is ``wanted`` (None: not within the wait) and requests sent."""
    t0 = time.perf_counter()
    sent = 0
    while time.perf_counter() - t0 < _ANSWER_WAIT_S:
        sent += 1
        if wanted(_post(s, token)):
            return time.perf_counter() - t0, sent
        time.sleep(0.01)
    return None, sent


def _propagation(s: _Scratch, changes: int) -> dict[str, Any]:
    """provision → first 202, disable → first refusal, ``changes`` times each."""
    from workbench.registry import Registry, sas_token
    from workbench.tenancy.principal import Principal

    registry = Registry(s.config, principal=Principal.system("bench"))
    out: dict[str, list[Any]] = {k: [] for k in ("provision_s", "to_202_s", "to_202_requests")}
    out |= {k: [] for k in ("disable_s", "to_refusal_s", "to_refusal_requests")}
    for i in range(changes):
        device = f"probe-{i}"
        t0 = time.perf_counter()
        key = registry.provision(device, building="b-bench", device_type="environment").key
        out["provision_s"].append(time.perf_counter() - t0)
        took, sent = _until(s, sas_token(device, key), lambda status: status == 202)
        out["to_202_s"].append(took)
        out["to_202_requests"].append(sent)
        t0 = time.perf_counter()
        registry.disable(device)
        out["disable_s"].append(time.perf_counter() - t0)
        took, sent = _until(s, sas_token(device, key, ttl_s=601), lambda status: status == 403)
        out["to_refusal_s"].append(took)
        out["to_refusal_requests"].append(sent)
    return out


def _ms(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    return {
        "median_ms": round(1000 * statistics.median(got), 2) if got else None,
        "max_ms": round(1000 * max(got), 2) if got else None,
        "missed": len(values) - len(got),
    }


def _one_size(
    config: Config, size: int, args: argparse.Namespace, base_rss: float
) -> dict[str, Any]:
    say(f"bench registry: {size:,} devices")
    s = _scratch(config, f"n{size}", args.workers)
    figures: dict[str, Any] = {"devices": size, "import_s": round(_import(s, size), 2)}
    say(f"  {size:,} devices imported in {figures['import_s']:.1f} s; measuring the view's CPU")
    figures |= _view_costs(s, args.changes)
    say(f"  starting a gateway with {args.workers} workers")
    with _gateway(s) as (proc, started_s):
        figures["startup_s"] = round(started_s, 2)
        figures["startup_cpu_s"] = [round(c, 2) for c in _worker_cpu(proc)]
        rss = _worker_rss(proc)
        figures["worker_rss_mib"] = [round(r / 2**20, 1) for r in rss]
        mean = statistics.mean(rss) if rss else 0.0
        figures["bytes_per_device_per_worker"] = round((mean - base_rss) / size) if size else None
        say(f"  up in {started_s:.1f} s; measuring provision → 202 and disable → refusal")
        prop = _propagation(s, args.changes)
    figures["provision_command"] = _ms(prop["provision_s"])
    figures["provision_to_202"] = _ms(prop["to_202_s"]) | {"requests": prop["to_202_requests"]}
    figures["disable_command"] = _ms(prop["disable_s"])
    figures["disable_to_refusal"] = _ms(prop["to_refusal_s"]) | {
        "requests": prop["to_refusal_requests"]
    }
    figures["load_average"] = round(os.getloadavg()[0], 2)
    shutil.rmtree(s.home, ignore_errors=True)  # a million devices' lake: do not keep it
    return figures


def _baseline(config: Config, workers: int) -> dict[str, Any]:
    """A gateway whose registry holds one device (what a fleet adds to): its workers' mean
    RSS, and their start-up, wall and CPU."""
    s = _scratch(config, "empty", workers)
    _import(s, 0)
    with _gateway(s) as (proc, started_s):
        cpu = _worker_cpu(proc)
        rss = _worker_rss(proc)
    shutil.rmtree(s.home, ignore_errors=True)
    return {
        "rss": statistics.mean(rss) if rss else 0.0,
        "startup_s": round(started_s, 2),
        "startup_cpu_s": [round(c, 2) for c in cpu],
    }


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes {text!r}: comma-separated whole numbers"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: each size must be at least 1")
    return sizes


def _cell(figure: dict[str, Any], unit: str = "ms") -> str:
    if figure["median_ms"] is None:
        return f"none within {_ANSWER_WAIT_S:g} s"
    text = f"{figure['median_ms']:,.1f} (max {figure['max_ms']:,.1f}) {unit}"
    requests = figure.get("requests")
    if requests is not None and max(requests) > 1:
        text += f", {max(requests)} requests"
    if figure["missed"]:
        text += f", {figure['missed']} missed"
    return text


def run_bench(config: Config, args: argparse.Namespace) -> int:
    """Every size in turn; print the sizes side by side and record all figures."""
    sizes = ", ".join(f"{n:,}" for n in args.sizes)
    say(f"bench registry: sizes {sizes}; Kafka at {config.bootstrap_servers}")
    baseline = _baseline(config, args.workers)
    results = [_one_size(config, n, args, baseline["rss"]) for n in args.sizes]
    rows: list[tuple[object, ...]] = [
        ("bulk import, one commit", *(f"{r['import_s']:,.1f} s" for r in results)),
        ("full reload, CPU per worker", *(f"{r['full_reload_cpu_ms']:,.0f} ms" for r in results)),
        (
            "one change by feed, CPU per worker",
            *(
                f"{r['change_cpu_ms_median']:,.1f} (max {r['change_cpu_ms_max']:,.1f}) ms"
                for r in results
            ),
        ),
        (
            "changes by feed / full resyncs",
            *(f"{r['changes_by_feed']} of {r['changes']} / {r['resyncs']}" for r in results),
        ),
        (
            f"gateway start-up, {args.workers} workers serving",
            *(f"{r['startup_s']:,.1f} s" for r in results),
        ),
        (
            "start-up CPU per worker (1-device registry: "
            + " / ".join(f"{c:.1f}" for c in baseline["startup_cpu_s"])
            + " s)",
            *(" / ".join(f"{c:.1f}" for c in r["startup_cpu_s"]) + " s" for r in results),
        ),
        (
            "worker RSS",
            *(" / ".join(f"{m:,.0f}" for m in r["worker_rss_mib"]) + " MiB" for r in results),
        ),
        (
            "memory per device per worker",
            *(f"{r['bytes_per_device_per_worker']:,} B" for r in results),
        ),
        ("provision command", *(_cell(r["provision_command"]) for r in results)),
        ("provision returned -> first 202", *(_cell(r["provision_to_202"]) for r in results)),
        (
            "disable command (waits for every worker)",
            *(_cell(r["disable_command"]) for r in results),
        ),
        ("disable returned -> first refusal", *(_cell(r["disable_to_refusal"]) for r in results)),
        ("load average after", *(f"{r['load_average']:.1f}" for r in results)),
    ]
    report(
        config,
        "registry",
        rows,
        header=("FIGURE", *(f"{n:,} DEVICES" for n in args.sizes)),
        figures={
            "sizes": args.sizes,
            "workers": args.workers,
            "changes": args.changes,
            "baseline_worker_rss_mib": round(baseline["rss"] / 2**20, 1),
            "baseline_startup_s": baseline["startup_s"],
            "baseline_startup_cpu_s": baseline["startup_cpu_s"],
            "by_size": {str(r["devices"]): r for r in results},
        },
    )
    return 0


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=_sizes(_DEFAULT_SIZES),
        help=f"registry sizes measured side by side (default {_DEFAULT_SIZES})",
    )
    p.add_argument(
        "--changes",
        type=whole_number(1),
        default=5,
        help="disables, provisions measured per size (5)",
    )
    p.add_argument(
        "--workers", type=whole_number(1), default=2, help="gateway worker processes (2)"
    )


add_bench(
    "registry",
    run_bench,
    "registry: gateway CPU per change, propagation, memory and start-up at 10k/100k/1M devices",
    _configure,
)
