"""Docstring examples of the registry, gateway validation and translators run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "workbench.registry.keys",
    "workbench.registry.store",
    "ingest_service.gateway.validation",
    "ingest_service.translators.fbk1",
    "ingest_service.translators.bin1",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
