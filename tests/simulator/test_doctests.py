"""Docstring examples of the simulator's modules run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["simulator.fleet", "simulator.physics", "simulator.scenarios.base"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
