"""papermill reads every parameter of the analyst notebooks and the report (a line it
cannot parse is a warning at every run, and `papermill --help-notebook` loses it)."""

from __future__ import annotations

import logging

import nbformat
import pytest
from papermill.translators import PythonTranslator

from tests.notebooks.dashboards_lake import PACKAGED, ROOT

NOTEBOOKS = [
    ROOT / "notebooks" / "exploration.ipynb",
    ROOT / "notebooks" / "hive_query_explorer.ipynb",
    PACKAGED / "reports" / "daily_building_report.ipynb",
    PACKAGED / "pages" / "provisioning.ipynb",
]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_parses_every_parameter_line(notebook, caplog):
    book = nbformat.read(notebook, as_version=4)
    (cell,) = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    assigned = [
        line.split("=")[0].strip()
        for line in cell.source.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    ]
    with caplog.at_level(logging.WARNING, logger="papermill"):
        parsed = PythonTranslator.inspect(cell)
    assert not [r.getMessage() for r in caplog.records], notebook
    assert [p.name for p in parsed] == assigned
