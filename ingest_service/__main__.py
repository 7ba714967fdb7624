"""``python -m ingest_service gateway|process``: the headless ingest services."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from workbench._process import hard_exit
from workbench.config import Config
from workbench.service import run_service, service_parser

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
    "process": (
        _lazy("ingest_service.processor.main", "run_processor"),
        "event processor: Kafka topic -> Delta lake tables, exactly once",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the service name and run it."""
    parser = service_parser("python -m ingest_service", "Run one of the headless ingest services.")
    sub = parser.add_subparsers(dest="service", metavar="SERVICE", required=True)
    for name, (_, help_text) in SERVICES.items():
        sub.add_parser(name, help=help_text, description=help_text)
    args = parser.parse_args(argv)
    return run_service(f"ingest_service {args.service}", SERVICES[args.service][0])


if __name__ == "__main__":
    hard_exit(main())
