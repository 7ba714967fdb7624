"""Docstring examples of the public modules run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "workbench.config",
    "workbench.events",
    "workbench.kafka",
    "workbench.lake.read",
    "workbench.ops.broker_bench",
    "workbench.tenancy.principal",
    "workbench.tenancy.passwords",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
