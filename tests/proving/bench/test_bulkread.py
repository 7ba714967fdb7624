"""``workbench bench bulk-read`` through the real command on a small lake: every path brings
the same rows into polars (the bench refuses to print figures otherwise), side by side
with the bare transfer's floor and the direct read's ceiling."""

from __future__ import annotations

import pytest

from tests.conftest import isolated_env
from tests.proving.bench.support import run_bench

pytestmark = pytest.mark.integration

_PATHS = (
    "Flight door, same host (shared memory)",
    "Flight door over gRPC",
    "HiveServer2 + pyhive fetchall",
    "bare Flight transfer of that result (floor)",
    "direct Delta read (ceiling)",
)


def test_every_path_reads_the_same_rows_side_by_side(tmp_path):
    env = isolated_env(tmp_path / "home")
    done, figures = run_bench(
        env, "bulk-read", "--events", "4000", "--devices", "40", "--days", "1", "--rows", "500",
        "--runs", "1", timeout=300,
    )  # fmt: skip
    for case in ("one building's day", "500 rows x 5 columns"):
        rows = {figures[f"{case} / {path}"]["rows"] for path in _PATHS}
        assert len(rows) == 1 and rows.pop() > 0, figures
        for path in _PATHS:
            assert figures[f"{case} / {path}"]["median_s"] > 0
            assert path in done.stdout
