"""Docstring examples of the proving modules run."""

from __future__ import annotations

import pytest

from tests.doctests import assert_examples_pass

MODULES = ["proving.bench.broker", "proving.bench.mqtt", "proving.ports"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    assert_examples_pass(name)
