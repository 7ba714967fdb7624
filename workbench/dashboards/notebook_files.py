"""Where the served dashboard pages and the report notebooks come from.

Both ship inside the package (``workbench/dashboards/notebooks/pages/`` and
``…/notebooks/reports/``, declared as package data) and are found with
:mod:`importlib.resources`, so an installed workbench serves the same pages as a
checkout. ``WORKBENCH_DASHBOARDS_DIR`` and ``WORKBENCH_REPORTS_DIR`` point at
other folders instead (a site's own pages or reports).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from workbench.config import Config
from workbench.exceptions import ConfigError

__all__ = ["DAILY_REPORT", "page_notebooks", "report_notebook"]

DAILY_REPORT = "daily_building_report.ipynb"


def _packaged(kind: str) -> Traversable:
    return resources.files("workbench.dashboards") / "notebooks" / kind


def page_notebooks(config: Config) -> dict[str, Traversable]:
    """The notebooks Voila serves, by file name: every ``*.ipynb`` of the pages folder.

    >>> sorted(page_notebooks(Config.from_env({})))
    ['building.ipynb', 'fleet.ipynb', 'provisioning.ipynb']
    """
    folder = Path(config.dashboards_dir) if config.dashboards_dir else _packaged("pages")
    pages: dict[str, Traversable] = {}
    if folder.is_dir():
        for item in folder.iterdir():
            if item.name.endswith(".ipynb") and not item.name.startswith(".") and item.is_file():
                pages[item.name] = item
    if not pages:
        raise ConfigError(
            f"no dashboard notebooks (*.ipynb) in {folder}",
            hint="point WORKBENCH_DASHBOARDS_DIR at a folder of pages, or unset it "
            "for the installed ones",
        )
    return dict(sorted(pages.items()))


@contextlib.contextmanager
def report_notebook(config: Config, name: str = DAILY_REPORT) -> Iterator[Path]:
    """The report notebook ``name`` as a file on disk (papermill reads a path)."""
    folder = Path(config.reports_dir) if config.reports_dir else _packaged("reports")
    source = folder / name
    if not source.is_file():
        raise ConfigError(
            f"report notebook {name} is not in {folder}",
            hint="point WORKBENCH_REPORTS_DIR at a folder holding it, or unset it "
            "for the installed ones",
        )
    with resources.as_file(source) as path:
        yield path
