"""``workbench bench NAME``: the benchmarks every part registers (DESIGN.md §9)."""

from __future__ import annotations

import argparse
import importlib

from workbench.bench import benches
from workbench.cli import ArgumentParser, Verb

__all__ = ["BENCH_MODULES", "register"]

# Modules that call workbench.bench.add_bench(...) when imported; append yours.
BENCH_MODULES: tuple[str, ...] = (
    "ingest_service.gateway.bench",
    "workbench.query.bench",
    "simulator.bench",
    "ingest_service.processor.bench",
    "workbench.lake.bench",
    "ingest_service.processor.freshness_bench",
    "workbench.ops.broker_bench",
)


def register(verb: Verb) -> None:
    """Add the ``bench`` group with one sub-verb per registered benchmark."""
    for module in BENCH_MODULES:
        importlib.import_module(module)
    p = verb("bench", None, "measure the system's performance figures (DESIGN.md §9)")
    sub = p.add_subparsers(dest="bench_command", metavar="BENCH", parser_class=ArgumentParser)
    sub.required = True
    for bench in benches():
        bp: argparse.ArgumentParser = sub.add_parser(
            bench.name, help=bench.help, description=bench.help
        )
        bp.set_defaults(handler=bench.handler)
        if bench.configure is not None:
            bench.configure(bp)
