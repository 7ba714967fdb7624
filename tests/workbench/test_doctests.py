"""Docstring examples of the public modules run."""

from __future__ import annotations

import pytest

from tests.doctests import assert_examples_pass

MODULES = [
    "workbench.config",
    "workbench.hub.accounts",
    "workbench.hub.failures",
    "workbench.hub.kernel",
    "workbench.events",
    "workbench.kafka_lag",
    "workbench.lake.maintain",
    "workbench.lake.read",
    "workbench.tenancy.principal",
    "workbench.tenancy.passwords",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    assert_examples_pass(name)
