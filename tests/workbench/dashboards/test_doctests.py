"""The dashboards modules' docstring examples run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "workbench.dashboards.identity",
    "workbench.dashboards.data",
    "workbench.dashboards.provisioning",
    "workbench.dashboards.reports",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
