"""The served pages and report notebooks come from the installed package, or from the
folders WORKBENCH_DASHBOARDS_DIR / WORKBENCH_REPORTS_DIR name; never from the checkout."""

from __future__ import annotations

import fnmatch
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from workbench.config import Config
from workbench.dashboards.notebook_files import DAILY_REPORT, page_notebooks, report_notebook
from workbench.dashboards.server import prepare_root
from workbench.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[3]
PACKAGED = resources.files("workbench.dashboards") / "notebooks"


def _config(tmp_path: Path, **env: str) -> Config:
    return Config.from_env({"WORKBENCH_HOME": str(tmp_path / "home"), **env})


def test_every_packaged_notebook_is_declared_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["workbench"]
    package = ROOT / "workbench"
    notebooks = sorted(package.glob("dashboards/notebooks/**/*.ipynb"))
    assert len(notebooks) == 4
    for notebook in notebooks:
        relative = notebook.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), relative


def test_the_installed_pages_are_served_by_default(tmp_path):
    config = _config(tmp_path)
    assert sorted(page_notebooks(config)) == ["building.ipynb", "fleet.ipynb", "provisioning.ipynb"]
    root = prepare_root(config)
    assert sorted(p.name for p in root.iterdir()) == sorted(page_notebooks(config))
    assert (root / "fleet.ipynb").read_bytes() == (PACKAGED / "pages" / "fleet.ipynb").read_bytes()


def test_a_pages_folder_replaces_the_installed_pages(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "site.ipynb").write_text("{}")
    (pages / "notes.txt").write_text("not a page")
    config = _config(tmp_path, WORKBENCH_DASHBOARDS_DIR=str(pages))
    prepare_root(_config(tmp_path))  # an earlier start with the installed pages
    root = prepare_root(config)
    assert sorted(p.name for p in root.iterdir()) == ["site.ipynb"]  # no stale page served


def test_a_pages_folder_without_notebooks_is_a_config_error(tmp_path):
    config = _config(tmp_path, WORKBENCH_DASHBOARDS_DIR=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="WORKBENCH_DASHBOARDS_DIR"):
        page_notebooks(config)


def test_the_report_notebook_comes_from_the_package_or_the_reports_folder(tmp_path):
    with report_notebook(_config(tmp_path)) as path:
        assert path.name == DAILY_REPORT and path.is_file()
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / DAILY_REPORT).write_text("{}")
    with report_notebook(_config(tmp_path, WORKBENCH_REPORTS_DIR=str(reports))) as path:
        assert path == reports / DAILY_REPORT
    with (
        pytest.raises(ConfigError, match="WORKBENCH_REPORTS_DIR"),
        report_notebook(_config(tmp_path, WORKBENCH_REPORTS_DIR=str(tmp_path))),
    ):
        pass
