"""The README documents what the code offers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from workbench.config import Config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize(
    "setting",
    [f.metadata["setting"] for f in dataclasses.fields(Config)],
    ids=lambda s: s.env,
)
def test_every_setting_is_in_the_configuration_table(setting):
    assert f"| `{setting.env}` |" in README


@pytest.mark.parametrize("target", ["demo", "down", "test", "lab"])
def test_quick_start_names_the_make_targets(target):
    assert f"make {target}" in README
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert f"\n{target}:" in makefile
