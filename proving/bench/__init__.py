"""Shared benchmark plumbing: ``workbench bench <name>`` sub-verbs and the results log.

A module adds a benchmark with :func:`add_bench` when it is imported, and is named
by an entry point of the ``workbench.benches`` group (see :mod:`workbench.plugins`)::

    [project.entry-points."workbench.benches"]
    lake = "proving.bench.lake"

Its handler ends with :func:`report`: a table of its figures on stdout, and the figures
appended to the results log (:func:`record_result`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from workbench import plugins
from workbench.cli import print_table, say
from workbench.config import Config

__all__ = [
    "GROUP",
    "Bench",
    "Timing",
    "add_bench",
    "benches",
    "record_result",
    "report",
    "results_path",
    "timed_runs",
]

GROUP = "workbench.benches"

BenchHandler = Callable[[Config, argparse.Namespace], int]


@dataclasses.dataclass(frozen=True)
class Bench:
    """One ``workbench bench NAME`` sub-verb."""

    name: str
    handler: BenchHandler
    help: str
    configure: Callable[[argparse.ArgumentParser], None] | None = None


_BENCHES: dict[str, Bench] = {}


def add_bench(
    name: str,
    handler: BenchHandler,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Register ``workbench bench NAME``; ``configure`` adds its options to the parser."""
    _BENCHES[name] = Bench(name, handler, help, configure)


def benches() -> list[Bench]:
    """Every installed benchmark, by name (importing the ``workbench.benches`` modules
    registers them)."""
    plugins.load_all(GROUP)
    return [_BENCHES[k] for k in sorted(_BENCHES)]


def results_path(config: Config) -> Path:
    """``$WORKBENCH_HOME/bench/results.jsonl``."""
    return config.home / "bench" / "results.jsonl"


def record_result(config: Config, bench: str, figures: Mapping[str, Any]) -> Path:
    """Append one JSON line ``{"bench", "at", "host", "figures"}`` to the results log."""
    path = results_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "bench": bench,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "figures": dict(figures),
    }
    with path.open("a") as f:
        f.write(json.dumps(line, default=str) + "\n")
    return path


def report(
    config: Config,
    bench: str,
    rows: Sequence[Sequence[object]],
    *,
    header: Sequence[str],
    figures: Mapping[str, Any],
) -> Path:
    """A bench's results, the same way for every bench: ``rows`` under ``header`` as a
    table on stdout, ``figures`` appended to the results log, and on stderr where."""
    print_table(rows, header=header)
    path = record_result(config, bench, figures)
    say(f"results appended to {path}")
    return path


def scratch_gateway_env(config: Config, home: Path, *, workers: int) -> dict[str, str]:
    """The environment of a bench's own gateway: a fresh ``home`` (emptied first) with its
    own lake, topic and free ports, on ``config``'s Kafka as an external cluster."""
    import shutil
    import uuid

    from proving.ports import free_port
    from workbench.kafka import external_env

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return {
        **config.env(),
        "WORKBENCH_HOME": str(home),
        "WORKBENCH_LAKE": str(home / "lake"),
        **external_env(config),
        "WORKBENCH_TOPIC": f"bench-{home.name}-{uuid.uuid4().hex[:8]}",
        "WORKBENCH_GATEWAY_PORT": str(free_port()),
        "WORKBENCH_LEGACY_PORT": str(free_port()),
        "WORKBENCH_MQTT_PORT": str(free_port()),
        "WORKBENCH_LOG_LEVEL": "WARNING",
        "WORKBENCH_GATEWAY_WORKERS": str(workers),
    }


T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Timing(Generic[T]):
    """Wall-clock figures of repeated runs of one action, and its last result."""

    median_s: float
    best_s: float
    worst_s: float
    result: T


def timed_runs(action: Callable[[], T], *, runs: int) -> Timing[T]:
    """Run ``action`` once to warm caches (not counted), then ``runs`` times, timed."""
    result = action()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times), max(times), result)
