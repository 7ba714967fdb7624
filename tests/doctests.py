"""Running a module's docstring examples as a test, for the per-package test_doctests.py."""

from __future__ import annotations

import doctest
import importlib


def assert_examples_pass(name: str) -> None:
    """Run the docstring examples of module ``name``: it must have some, and all must pass."""
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
