"""Docstring examples of the alarms modules run."""

from __future__ import annotations

import pytest

from tests.doctests import assert_examples_pass


@pytest.mark.parametrize(
    "name",
    [
        "workbench.alarms.rules",
        "workbench.alarms.evaluate",
        "workbench.alarms.store",
        "workbench.alarms.channels",
        "workbench.alarms.contactpoints",
        "workbench.alarms.targets",
    ],
)
def test_docstring_examples(name):
    assert_examples_pass(name)
