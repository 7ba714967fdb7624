"""Every dashboard and analyst notebook of issue 7 runs top to bottom under papermill against
a lake produced by the processor's commit path; a failing cell fails the test."""

from __future__ import annotations

import datetime as dt

import nbformat
import papermill as pm
import pytest

from tests.notebooks.dashboards_lake import PACKAGED, ROOT, execute
from tests.workbench.dashboards.lake import make_lake

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTEBOOKS = {
    "building": (PACKAGED / "pages" / "building.ipynb", {"as_user": "rita", "live": False}),
    "fleet": (PACKAGED / "pages" / "fleet.ipynb", {"as_user": "ops", "live": False}),
    "provisioning": (PACKAGED / "pages" / "provisioning.ipynb", {"as_user": "ops"}),
    "exploration": (ROOT / "notebooks" / "exploration.ipynb", {"as_user": "ann", "hours": 1.0}),
    "daily_report": (
        PACKAGED / "reports" / "daily_building_report.ipynb",
        {"as_user": "rita", "building": "b-0001"},
    ),
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return make_lake(tmp_path_factory.mktemp("nb") / "home")


def _text(path) -> str:
    book = nbformat.read(path, as_version=4)
    out = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            out.append(str(output.get("text", "")))
            out.extend(str(v) for v in output.get("data", {}).values())
    return "\n".join(out)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(name, lake, tmp_path):
    notebook, params = NOTEBOOKS[name]
    if name == "daily_report":
        params = {**params, "date": dt.datetime.now(dt.UTC).date().isoformat()}
    out = tmp_path / f"{name}.ipynb"
    execute(notebook, out, lake.env, **params)
    text = _text(out)
    assert "Traceback" not in text
    assert "wb-error" not in text  # a view that could not draw shows its error, not a widget
    drawn = {"building": "wb-kpi-temperature", "fleet": "wb-card"}.get(name)
    if drawn:  # the Panel page's own output, not only an empty layout
        assert drawn in text


def test_every_notebook_has_a_parameters_cell():
    for notebook, _ in NOTEBOOKS.values():
        book = nbformat.read(notebook, as_version=4)
        tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, notebook


def test_the_harness_fails_on_a_failing_cell(lake, tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="fails on purpose"):
        execute(
            ROOT / "tests" / "notebooks" / "fixtures" / "failing.ipynb",
            tmp_path / "failing.ipynb",
            lake.env,
        )


def test_the_exploration_notebook_sees_only_the_analysts_tenant(lake, tmp_path):
    out = tmp_path / "exploration.ipynb"
    execute(ROOT / "notebooks" / "exploration.ipynb", out, lake.env, as_user="ann", hours=1.0)
    text = _text(out)
    assert "acting as ann (analyst); 2 building(s) in scope" in text
    assert "b-0002" not in text and "b-0004" not in text
