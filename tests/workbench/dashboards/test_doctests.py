"""The dashboards modules' docstring examples run."""

from __future__ import annotations

import pytest

from tests.doctests import assert_examples_pass

MODULES = [
    "workbench.dashboards.analyst",
    "workbench.dashboards.identity",
    "workbench.dashboards.sessions",
    "workbench.dashboards.data",
    "workbench.dashboards.notebook_files",
    "workbench.dashboards.provisioning",
    "workbench.dashboards.reports",
    "workbench.dashboards.views.panel_common",
    "workbench.dashboards.views.formatting",
    "workbench.dashboards.login",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    assert_examples_pass(name)
