"""The dashboards server's own entry, ``python -m workbench.dashboards``, and the stack
component that runs it."""

from __future__ import annotations

import sys

from tests.conftest import isolated_env, run_module_help
from workbench.config import Config
from workbench.stack.base import UpOptions
from workbench.stack.components import registered


def test_the_stack_starts_the_dashboards_through_their_own_entry(tmp_path):
    config = Config.from_env(isolated_env(tmp_path))
    (voila,) = [c for c in registered() if c.name == "voila"]
    assert voila.command is not None
    assert voila.command(config, UpOptions()) == [sys.executable, "-m", "workbench.dashboards"]


def test_the_entry_lists_its_settings(tmp_path):
    done = run_module_help("workbench.dashboards", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "WORKBENCH_VOILA_PORT" in done.stdout
