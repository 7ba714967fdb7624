"""Docstring examples of the registry, gateway validation and translators run."""

from __future__ import annotations

import pytest

from tests.doctests import assert_examples_pass

MODULES = [
    "workbench.registry.compact",
    "workbench.registry.feed",
    "workbench.registry.keys",
    "workbench.registry.store",
    "workbench.registry.records",
    "ingest_service.translators",
    "ingest_service.gateway.validation",
    "ingest_service.translators.fbk1",
    "ingest_service.translators.bin1",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    assert_examples_pass(name)
