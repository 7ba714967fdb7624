"""``python -m simulator``."""

from __future__ import annotations

from simulator.cli import main
from workbench._process import hard_exit

__all__: list[str] = []

hard_exit(main())
