"""The processor modules' docstring examples run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "ingest_service.processor.checkpoint",
    "ingest_service.processor.decode",
    "ingest_service.processor.fetcher.flags",
    "ingest_service.processor.main",
    "ingest_service.processor.ndjson",
    "ingest_service.processor.packed",
    "ingest_service.processor.processor",
    "ingest_service.processor.dedup",
    "ingest_service.processor.sink",
    "ingest_service.processor.windows",
    "workbench.lake",
    "workbench.lake.promote",
    "workbench.lake.read",
    "workbench.lake.schemas",
    "workbench.lake.tables",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
