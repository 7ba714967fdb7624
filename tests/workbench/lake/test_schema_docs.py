"""docs/ingest.md describes every column of the telemetry contract (the code cites it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbench.lake.schemas import TELEMETRY

DOC = (Path(__file__).resolve().parents[3] / "docs" / "ingest.md").read_text()


def _documented() -> set[str]:
    section = DOC.split("### The telemetry columns", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}


@pytest.mark.parametrize("column", TELEMETRY.names)
def test_every_telemetry_column_is_documented(column):
    assert column in _documented()
