"""``python -m ingest_service gateway|process``: the headless services."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from workbench._process import hard_exit
from workbench.config import Config, settings_help
from workbench.exceptions import WorkbenchError
from workbench.logs import configure_logging

__all__ = ["SERVICES", "main"]


def _lazy(module: str, function: str) -> Callable[[Config], int]:
    def run(config: Config) -> int:
        entry: Callable[[Config], int] = getattr(importlib.import_module(module), function)
        return entry(config)

    return run


# service name -> (entry point, help); one line per service.
SERVICES: dict[str, tuple[Callable[[Config], int], str]] = {
    "gateway": (
        _lazy("ingest_service.gateway", "run_gateway"),
        "HTTP gateway and legacy TCP adapter",
    ),
    "hiveserver2": (
        _lazy("ingest_service.hiveserver2", "run_hiveserver2"),
        "HiveServer2 endpoint (HiveQL over the lake)",
    ),
    "process": (
        _lazy("ingest_service.processor.main", "run_processor"),
        "event processor: Kafka topic -> Delta lake tables, exactly once",
    ),
    "voila": (
        _lazy("workbench.dashboards.server", "run_voila"),
        "Voila dashboards with per-user login",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the service name, configure logging, run it."""
    parser = argparse.ArgumentParser(
        prog="python -m ingest_service",
        description="Run one of the workbench's headless services.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="service", metavar="SERVICE", required=True)
    for name, (_, help_text) in SERVICES.items():
        sub.add_parser(name, help=help_text, description=help_text)
    args = parser.parse_args(argv)
    try:
        config = Config.from_env()
        configure_logging(config.log_level)
        return SERVICES[args.service][0](config)
    except WorkbenchError as exc:
        print(f"ingest_service {args.service}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    hard_exit(main())
