"""Shared benchmark plumbing: ``workbench bench <name>`` sub-verbs, result tables and the
results log (DESIGN.md §9).

A module adds a benchmark with :func:`add_bench` and is listed in
:data:`workbench.bench.cli.BENCH_MODULES`; its handler prints a table with
:func:`print_table` and appends its figures with :func:`record_result`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from workbench.cli import print_table
from workbench.config import Config

__all__ = [
    "Bench",
    "Timing",
    "add_bench",
    "benches",
    "print_table",
    "record_result",
    "results_path",
    "timed_runs",
]

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
    """The registered benchmarks, by name."""
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
