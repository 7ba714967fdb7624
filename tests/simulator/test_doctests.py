"""Docstring examples of the simulator's modules run."""

from __future__ import annotations

import pytest

from tests.doctests import assert_examples_pass

MODULES = ["simulator.fleet", "simulator.physics", "simulator.scenarios.base"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    assert_examples_pass(name)
