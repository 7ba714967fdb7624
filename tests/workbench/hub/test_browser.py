"""The hub in a real browser: Playwright drives the system Chromium (as the dashboards'
browser tests do) against the session's hub. An analyst logs in with the hub's form,
lands in JupyterLab on their own server, opens a notebook from the launcher, runs a
``%%sql`` cell over the HiveServer2 door with the hub's token and sees their tenant's
rows only; a viewer logs in and gets the page that sends them to the dashboards.

Screenshots land in tests/artifacts/ (gitignored). A hub that cannot spawn fails here
(never skips).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from proving.hub_session import HubSession
from tests.chromium import chromium
from workbench.hub.settings import dashboards_url
from workbench.lake.tables import table_uri

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# a spawn, JupyterLab's first load and a kernel's start on the shared 2-core machine
LAB_TIMEOUT_MS = 180_000

SETUP_CELL = """%load_ext sql
%config SqlMagic.autopolars = True
import sqlalchemy
from workbench.hub.kernel import hive_url
engine = sqlalchemy.create_engine(hive_url())
%sql engine"""

SQL_CELL = """%%sql
SELECT tenant_id, building_id, count(*) AS events
FROM telemetry GROUP BY tenant_id, building_id ORDER BY building_id"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as b:
        yield b


def _login(browser, hub, user: str, password: str):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    return page


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"hub-{name}.png"), full_page=True)


def _run_cell(page, index: int, code: str) -> object:
    """Type ``code`` into the active cell (the ``index``-th), run it (Shift+Enter moves
    on to a new cell) and wait until it ran; the cell."""
    from playwright.sync_api import expect

    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(index)
    cell.locator(".cm-content").click()
    # inserted as one edit: no auto-indent or bracket closing on the way
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    # done when its prompt shows an execution count ("[*]" while it runs)
    expect(cell.locator(".jp-InputPrompt")).to_have_text(
        re.compile(r"\[\d+\]"), timeout=LAB_TIMEOUT_MS
    )
    return cell


def test_analyst_runs_a_sql_cell_in_jupyterlab_and_sees_only_their_tenant(browser, hub, hub_user):
    from playwright.sync_api import expect

    ann, password = hub_user("analyst", "t-0001")
    page = _login(browser, hub, ann, password)
    try:
        # the hub spawns the analyst's own server and sends the browser into JupyterLab
        page.wait_for_url(re.compile(rf"/user/{ann}/lab"), timeout=LAB_TIMEOUT_MS)
        page.locator(".jp-LauncherCard[data-category='Notebook']").first.click(
            timeout=LAB_TIMEOUT_MS
        )
        page.wait_for_selector(
            ".jp-Notebook .jp-Cell.jp-mod-active .cm-content", timeout=LAB_TIMEOUT_MS
        )
        # the kernel is connected and idle (the status bar says so) before a cell runs:
        # a cell run while the kernel is still starting is not queued, it is dropped
        expect(page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(
            timeout=LAB_TIMEOUT_MS
        )
        _run_cell(page, 0, SETUP_CELL)
        sql_cell = _run_cell(page, 1, SQL_CELL)
        table = sql_cell.locator(".jp-OutputArea-output table")
        _shot(page, "analyst-sql-cell")
        outputs = page.locator(".jp-OutputArea-output")
        assert table.count() == 1, outputs.all_inner_texts()
        shown = [
            tuple(cell.strip().strip('"') for cell in row.split("\t"))
            for row in table.locator("tbody tr").all_inner_texts()
        ]
        expected = (
            pl.read_delta(table_uri(hub.config, "telemetry"))
            .filter(pl.col("tenant_id") == "t-0001")
            .group_by("tenant_id", "building_id")
            .agg(pl.len().alias("events"))
            .sort("building_id")
        )
        assert expected.height > 0
        assert shown == [(t, b, str(n)) for t, b, n in expected.rows()], (
            shown,
            outputs.all_inner_texts(),
        )
        assert "t-0002" not in table.inner_text()
    except Exception:
        _shot(page, "analyst-failed")  # what the browser showed, for the failure's reader
        raise
    finally:
        page.context.close()
        HubSession(hub.url, ann, password).stop()  # its memory back for the session's rest


def test_viewer_gets_the_page_that_links_to_the_dashboards(browser, hub, hub_user):
    viewer, password = hub_user("viewer", "t-0001")
    page = _login(browser, hub, viewer, password)
    try:
        page.wait_for_load_state()
        link = page.locator("#dashboards-link")
        assert link.get_attribute("href") == dashboards_url(hub.config)
        assert f"{viewer} is a viewer" in page.inner_text("body")
        assert f"/user/{viewer}" not in page.url  # no server, no JupyterLab
        _shot(page, "viewer-refused")
    finally:
        page.context.close()
