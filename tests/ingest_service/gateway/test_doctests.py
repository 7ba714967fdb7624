"""Docstring examples of the gateway's pure modules run."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "ingest_service.gateway.validation",
        "ingest_service.gateway.replay",
        "ingest_service.gateway.mqtt_codec",
        "ingest_service.gateway.tls",
    ],
)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
