"""``python -m workbench.query.hiveserver2``: the HiveServer2 endpoint as its own process."""

from __future__ import annotations

from collections.abc import Sequence

from workbench._process import hard_exit
from workbench.query.hiveserver2.server import run_hiveserver2
from workbench.service import run_service, service_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve HiveQL over the lake until SIGTERM/SIGINT."""
    service_parser(
        "python -m workbench.query.hiveserver2", "HiveServer2 endpoint (HiveQL over the lake)"
    ).parse_args(argv)
    return run_service("hiveserver2", run_hiveserver2)


if __name__ == "__main__":
    hard_exit(main())
