"""``python -m workbench.dashboards``: the Voila dashboards server as its own process."""

from __future__ import annotations

from collections.abc import Sequence

from workbench._process import hard_exit
from workbench.dashboards.server import run_voila
from workbench.service import run_service, service_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the dashboards until SIGTERM/SIGINT."""
    service_parser(
        "python -m workbench.dashboards", "Voila dashboards with per-user login"
    ).parse_args(argv)
    return run_service("voila", run_voila)


if __name__ == "__main__":
    hard_exit(main())
