"""The groups `make test` keeps on one xdist worker name files that exist: a renamed test
module would otherwise drop out of its group silently and run beside another stack."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import _GROUPS

ROOT = Path(__file__).resolve().parent.parent


def test_every_grouped_path_exists() -> None:
    missing = [p for paths in _GROUPS.values() for p in paths if not (ROOT / p).exists()]
    assert missing == []
