"""Browser tests: Playwright drives the system Chromium against a real dashboards server
(the Panel pages and Voila's provisioning, one process) over a lake produced by the
processor's commit path (and a real gateway for provisioning).

Screenshots (home, fleet and building at 1280 and 375 px, for a viewer and an operator)
and the page-load figures (``dashboards-page-load.json``) land in tests/artifacts/
(gitignored)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from tests.chromium import chromium
from tests.conftest import free_port
from tests.workbench.dashboards.conftest import expected_5m
from tests.workbench.dashboards.lake import USERS, DashLake, make_lake
from workbench.kafka import ensure_topic, external_env
from workbench.lake.tables import table_uri
from workbench.registry import sas_token
from workbench.tenancy import Principal, access_log

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
RENDER_TIMEOUT_MS = 90_000


@dataclasses.dataclass
class Site:
    lake: DashLake
    url: str  # Voila (provisioning)
    log: Path
    panel: str  # the Panel pages: home, building, fleet


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not up: {log.read_text()[-3000:]}") from None
            time.sleep(0.3)


@pytest.fixture(scope="module")
def site(tmp_path_factory, broker_config) -> Iterator[Site]:
    topic = f"telemetry-dash-{free_port()}"
    lake = make_lake(
        tmp_path_factory.mktemp("voila") / "home",
        **external_env(broker_config),
        WORKBENCH_TOPIC=topic,
        WORKBENCH_TOPIC_PARTITIONS="1",
        WORKBENCH_DASHBOARD_REFRESH="1",
    )
    ensure_topic(lake.config)
    log = lake.config.home / "voila.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.dashboards"],
            env=lake.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{lake.config.host}:{lake.config.voila_port}"
    panel = f"http://{lake.config.host}:{lake.config.panel_port}"
    try:
        _wait_http(f"{url}/login", proc, log)
        _wait_http(f"{panel}/login", proc, log)
        yield Site(lake, url, log, panel)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as b:
        yield b


def _login(browser, site: Site, user: str, password: str | None = None, **context):
    page = browser.new_context(**context).new_page()
    page.goto(f"{site.url}/login")
    page.fill("#username", user)
    page.fill("#password", password or USERS[user][2])
    page.click("#login")
    page.wait_for_load_state()
    return page


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboards-{name}.png"), full_page=True)


def _render(page, site: Site, path: str, selector: str) -> None:
    page.goto(f"{site.url}/voila/render/{path}")
    page.wait_for_selector(selector, timeout=RENDER_TIMEOUT_MS)


def test_login_page_refuses_a_wrong_password_and_logs_it(browser, site):
    page = _login(browser, site, "rita", "not-the-password")
    assert "invalid user name or password" in page.inner_text(".wb-login-error")
    _shot(page, "login-refused")
    log = access_log(site.lake.config, principal=Principal.system())
    denied = log.filter((pl.col("action") == "login:voila") & (pl.col("outcome") == "denied"))
    assert "rita" in denied["user"].to_list()
    page.context.close()


def test_pages_need_a_login(browser, site):
    page = browser.new_context().new_page()
    for url in (
        f"{site.panel}/building",
        f"{site.panel}/",
        f"{site.url}/voila/render/building.ipynb",
    ):
        page.goto(url)
        assert "/login" in page.url and page.locator("#username").count() == 1, url
    # a forged session cookie is no login either
    forged = f"root|{int(time.time()) + 3600}|forged"
    page.context.add_cookies([{"name": "wb_session", "value": forged, "url": site.panel}])
    page.goto(f"{site.panel}/fleet")
    assert "/login" in page.url
    page.context.close()


def _panel_login(browser, site: Site, user: str, **context):
    page = browser.new_context(**context).new_page()
    page.goto(f"{site.panel}/login")
    page.fill("#username", user)
    page.fill("#password", USERS[user][2])
    page.click("#login")
    page.wait_for_selector(".wb-who")
    return page


PAGE_LOADS: dict[str, list[float]] = {}


def _open(page, site: Site, path: str, selector: str, name: str) -> None:
    """Open a Panel page and wait for its main content; the time it took goes to the
    page-load figures (reported, never asserted)."""
    started = time.monotonic()
    page.goto(f"{site.panel}{path}")
    page.wait_for_selector(selector, timeout=RENDER_TIMEOUT_MS)
    PAGE_LOADS.setdefault(name, []).append(round(time.monotonic() - started, 2))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "dashboards-page-load.json").write_text(json.dumps(PAGE_LOADS, indent=1))


def _series(page, name: str) -> dict:
    """The data the browser's Bokeh document holds for the chart source ``name``."""
    return page.evaluate(
        """(name) => {
            const source = window.Bokeh.documents[0].get_model_by_name(name);
            const data = {};
            for (const [key, values] of Object.entries(source.data)) {
                data[key] = Array.from(values, (v) => (Number.isNaN(v) ? null : v));
            }
            return data;
        }""",
        name,
    )


def _both_widths(page, name: str) -> None:
    """Screenshots at 1280 and 375 px; at 375 the page must not scroll sideways."""
    for width in (1280, 375):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(500)  # let the layout settle
        _shot(page, f"{name}-{width}")
        if width == 375:
            assert page.evaluate("() => document.documentElement.scrollWidth") <= 375, name
    page.set_viewport_size({"width": 1280, "height": 900})


def test_viewer_home_building_and_refusals_all_served_from_this_machine(browser, site):
    from playwright.sync_api import expect

    page = _panel_login(browser, site, "rita")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    # home: who she is, exactly the pages a viewer may open, a logout link
    page.goto(f"{site.panel}/")
    assert "rita" in page.inner_text(".wb-user")
    assert page.inner_text(".wb-role") == "viewer"
    assert page.inner_text(".wb-tenant") == "t-0001"
    links = page.eval_on_selector_all(".wb-links a", "as => as.map(a => a.className)")
    assert links == ["wb-link-building"]
    assert page.locator("a.wb-logout").count() == 1
    assert "Select items to open" not in page.inner_text("body")
    page.goto(f"{site.url}/")  # Voila's start page was its raw file list: now the home
    page.wait_for_selector(".wb-who")
    assert page.url.startswith(site.panel)
    _open(page, site, "/", ".wb-who", "home")
    _both_widths(page, "home-viewer")
    # building: the five-minute averages recomputed from telemetry, a live Bokeh chart
    _open(page, site, "/building", ".wb-kpi-temperature", "building")
    want = expected_5m(site.lake, "b-0001")
    assert page.inner_text(".wb-kpi-temperature") == f"{want['temperature']:.1f} °C"
    assert page.inner_text(".wb-kpi-humidity") == f"{want['humidity']:.1f} %RH"
    assert page.inner_text(".wb-kpi-light") == f"{want['light']:.1f} lux"
    assert page.inner_text(".wb-kpi-readings") == str(want["readings"])
    assert page.inner_text(".wb-silent-count") == "1"
    # Bokeh draws the chart on a canvas, no <img>
    page.wait_for_selector(".wb-trends canvas", state="attached", timeout=30_000)
    assert page.locator(".wb-trends img").count() == 0
    shown = page.evaluate(  # every text the page's Bokeh document holds
        "() => Array.from(Bokeh.documents[0].all_models, (m) => m.text || '').join(' ')"
    )
    assert "Building 1" in shown and "Voila" not in shown and "docs/" not in shown
    # pause holds the page still (the refresh runs every second here), resume goes on
    page.click(".wb-pause button")
    page.wait_for_timeout(1500)  # a refresh already under way may still land
    paused_at = page.inner_text(".wb-updated-at")
    page.wait_for_timeout(3000)  # three refresh periods
    assert page.inner_text(".wb-updated-at") == paused_at
    page.click(".wb-pause button")
    expect(page.locator(".wb-updated-at")).not_to_have_text(paused_at, timeout=20_000)
    # the range picker: one row per minute of the range, minutes without data are gaps
    page.select_option(".wb-range select", "last 1 h")
    page.wait_for_function(
        "() => Bokeh.documents[0].get_model_by_name('wb-trends').data.time.length === 60",
        timeout=30_000,
    )
    hour = _series(page, "wb-trends")
    assert None in hour["temperature_avg"]  # the lake holds 15 minutes: the rest are gaps
    page.select_option(".wb-range select", "last 15 min")
    page.wait_for_function(
        "() => Bokeh.documents[0].get_model_by_name('wb-trends').data.time.length === 15",
        timeout=30_000,
    )
    # CSV export: the chart's minutes with data, as the lake has them
    with page.expect_download() as download:
        page.click(".wb-csv a, .wb-csv button")
    csv = pl.read_csv(download.value.path(), try_parse_dates=True)
    metrics = pl.read_delta(table_uri(site.lake.config, "building_metrics_1m")).filter(
        pl.col("building_id") == "b-0001"
    )
    first, last = csv["window_start"].min(), csv["window_start"].max()
    stored = metrics.filter(pl.col("window_start").is_between(first, last))
    assert csv.height == stored.height > 0
    assert csv["readings"].to_list() == stored.sort("window_start")["readings"].to_list()
    assert last < dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)  # held back
    # drill-down: one device's own readings
    page.select_option(".wb-device-picker select", index=1)
    page.wait_for_function(
        """() => {
            const source = Bokeh.documents[0].get_model_by_name('wb-device-series');
            return source !== null && source.data.time.length > 0;
        }""",
        timeout=30_000,
    )
    device = page.eval_on_selector(".wb-device-picker select", "s => s.value").split(" ")[0]
    series = _series(page, "wb-device-series")
    events = pl.read_delta(table_uri(site.lake.config, "telemetry")).filter(
        pl.col("device_id") == device
    )
    assert 0 < len(series["time"]) <= events.height
    _both_widths(page, "building-viewer")
    # fleet: refused, with a link to her building page
    _open(page, site, "/fleet", ".wb-refusal", "fleet (refused)")
    assert "may not see the fleet overview" in page.inner_text(".wb-message")
    _both_widths(page, "fleet-viewer")
    page.click(".wb-refusal a.wb-building-link")
    page.wait_for_selector(".wb-kpi-temperature", timeout=RENDER_TIMEOUT_MS)
    # offline-complete: nothing this session loaded came from anywhere but this machine
    local = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")
    assert requests and [u for u in requests if not u.startswith(local)] == []
    # logout ends the session of both servers
    page.click("a.wb-home-link")
    page.click("a.wb-logout")
    page.goto(f"{site.panel}/building")
    assert "/login" in page.url
    page.goto(f"{site.url}/voila/render/provisioning.ipynb")
    assert "/login" in page.url
    page.context.close()


def test_viewer_cannot_reach_another_tenants_building(browser, site):
    from playwright.sync_api import expect

    secret = "b-0002"  # tenant t-0002's; rita is t-0001's viewer of b-0001
    page = _panel_login(browser, site, "rita", timezone_id="Asia/Tokyo")
    # 1. the URL parameter
    _open(page, site, f"/building?building={secret}", ".wb-kpi-temperature", "building")
    assert "not one of yours" in page.inner_text(".wb-notice")
    # (and times are shown in the browser's own time zone)
    expect(page.locator(".wb-zone select")).to_have_value("Asia/Tokyo", timeout=20_000)
    assert page.inner_text(".wb-building-title").startswith("Building 1 (b-0001")
    # 2. the widget: a forged value pushed into the picker's Bokeh model
    page.evaluate(
        """(secret) => {
            const doc = window.Bokeh.documents[0];
            const picker = Array.from(doc.all_models).find(
                (m) => m.css_classes && m.css_classes.includes('wb-picker'));
            picker.options = [...picker.options, secret];
            picker.value = secret;
        }""",
        secret,
    )
    page.wait_for_timeout(3000)  # the server had time to act on it (and must refuse)
    assert page.inner_text(".wb-building-title").startswith("Building 1 (b-0001")
    # 3. the shared login: Voila's provisioning knows her, and refuses her
    _render(page, site, "provisioning.ipynb", ".wb-error")
    assert "may not provision" in page.inner_text(".wb-error")
    _shot(page, "viewer-refused")
    page.context.close()


def test_operator_fleet_monitor_and_a_fire_live(browser, site):
    from playwright.sync_api import expect

    from simulator.scenarios import parse_scenarios

    fire = parse_scenarios("fire")[0]
    b, _, _ = fire.target(site.lake.fleet)  # type: ignore[attr-defined]
    building = site.lake.fleet.buildings[b].building_id
    user = "ops" if site.lake.fleet.buildings[b].tenant_id == "t-0001" else "root"
    page = _panel_login(browser, site, user)
    links = page.eval_on_selector_all(".wb-links a", "as => as.map(a => a.className)")
    assert links == ["wb-link-building", "wb-link-fleet", "wb-link-provisioning"]
    _both_widths(page, f"home-{user}")
    _open(page, site, "/fleet", ".wb-card", "fleet")
    cards = page.eval_on_selector_all(".wb-card", "cs => cs.map(c => c.dataset.building)")
    assert sorted(cards) == sorted(
        b.building_id
        for b in site.lake.fleet.buildings
        if user == "root" or b.tenant_id == "t-0001"
    )
    page.fill(".wb-search input", cards[-1])  # search narrows to one building
    expect(page.locator(".wb-card")).to_have_count(1, timeout=20_000)
    assert page.locator(".wb-card").get_attribute("data-building") == cards[-1]
    page.fill(".wb-search input", "")
    expect(page.locator(".wb-card")).to_have_count(len(cards), timeout=20_000)
    page.select_option(".wb-sort select", "building id")
    expect(page.locator(".wb-card").last).to_have_attribute("data-building", max(cards))
    ordered = page.eval_on_selector_all(".wb-card", "cs => cs.map(c => c.dataset.building)")
    assert ordered == sorted(cards)
    _both_widths(page, f"fleet-{user}")
    # the building page, live: a fire shows in the alarm box and in the chart's data
    page.click(f".wb-card[data-building='{building}']")  # click-through
    page.wait_for_selector(".wb-kpi-temperature", timeout=RENDER_TIMEOUT_MS)
    assert page.inner_text(".wb-smoke-count") == "0"
    page.wait_for_selector(".wb-trends canvas", state="attached", timeout=30_000)
    before = _series(page, "wb-trends")
    _both_widths(page, f"building-{user}")
    now = dt.datetime.now(dt.UTC)
    site.lake.feed(site.lake.records(now - dt.timedelta(minutes=4), 3, scenario="fire"))
    site.lake.feed(site.lake.records(now - dt.timedelta(seconds=5), 1, scenario="fire"))
    page.wait_for_selector(".wb-alarm-box", timeout=20_000)  # refresh every 1 s here
    assert int(page.inner_text(".wb-alarm-box .wb-smoke-count")) >= 1
    page.wait_for_function(
        """(before) => {
            const now = Bokeh.documents[0].get_model_by_name('wb-trends').data.temperature_avg;
            return JSON.stringify(Array.from(now)) !== JSON.stringify(before);
        }""",
        arg=before["temperature_avg"],
        timeout=20_000,
    )
    _shot(page, "fire")
    _open(page, site, "/fleet", ".wb-card", "fleet")
    first = page.locator(".wb-card").first
    assert first.get_attribute("data-building") == building  # the burning building leads
    assert "wb-status-alarm" in (first.get_attribute("class") or "")
    _shot(page, "fleet-fire")
    page.context.close()


def _gateway(site: Site) -> subprocess.Popen[bytes]:
    cfg = site.lake.config
    log = cfg.home / "gateway.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest_service", "gateway"],
        env=site.lake.env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    _wait_http(f"http://{cfg.host}:{cfg.gateway_port}/healthz", proc, log)
    return proc


def _send(site: Site, device: str, key: str) -> int:
    cfg = site.lake.config
    body = json.dumps(
        {
            "ts": dt.datetime.now(dt.UTC).isoformat(),
            "seq": 1,
            "readings": {"temperature": 21.0, "humidity": 40.0, "light": 100.0},
        }
    ).encode()
    request = urllib.request.Request(
        f"http://{cfg.host}:{cfg.gateway_port}/v1/telemetry",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": sas_token(device, key)},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_reloading_the_provisioning_page_past_the_kernel_cap_is_never_refused(browser, site):
    """Each page left or reloaded gives its kernel back (its unload call carries the
    _xsrf cookie's value): opening the page two times more than a user may have kernels
    still shows it. After a login on the Panel server nothing set that cookie, every
    page's kernel waited for the culler (10 min), and the fourth load was refused."""
    cap = site.lake.config.dashboard_max_kernels_per_user
    page = _panel_login(browser, site, "opal")  # the login of the home page, as users do
    for _ in range(cap + 2):
        _render(page, site, "provisioning.ipynb", ".wb-prov-submit")
        assert page.query_selector(".wb-error") is None
    assert any(c["name"] == "_xsrf" for c in page.context.cookies())
    page.context.close()


def test_operator_provisions_a_device_that_can_then_send(browser, site):
    page = _login(browser, site, "ops")
    _render(page, site, "provisioning.ipynb", ".wb-prov-submit")
    page.fill(".wb-prov-device input", "web-dev-1")
    page.fill(".wb-prov-building input", "b-0001")
    page.click(".wb-prov-submit")
    page.wait_for_selector(".wb-new-key", timeout=30_000)
    key = page.inner_text(".wb-new-key").strip()
    _shot(page, "provisioned")
    # a duplicate id: a clear message in the page, nothing applied
    page.click(".wb-prov-submit")
    page.wait_for_selector(".wb-prov-result .wb-error", timeout=30_000)
    assert "already provisioned" in page.inner_text(".wb-prov-result")
    # a building of another tenant reads as unknown
    page.fill(".wb-prov-device input", "web-dev-2")
    page.fill(".wb-prov-building input", "b-0002")
    page.click(".wb-prov-submit")
    page.wait_for_function(
        "() => document.querySelector('.wb-prov-result').innerText.includes(\"b-0002\")",
        timeout=30_000,
    )
    assert "unknown building 'b-0002'" in page.inner_text(".wb-prov-result")
    _shot(page, "provision-refused")
    gateway = _gateway(site)
    try:
        deadline = time.monotonic() + 20
        status = _send(site, "web-dev-1", key)
        while status == 403 and time.monotonic() < deadline:  # registry poll interval
            time.sleep(0.5)
            status = _send(site, "web-dev-1", key)
        assert status == 202
        assert _send(site, "web-dev-2", key) == 403  # never provisioned
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
    page.context.close()


def test_malformed_csv_upload_shows_per_row_errors_and_imports_nothing(browser, site, tmp_path):
    bad = tmp_path / "devices.csv"
    bad.write_text(
        "device_id,building_id,device_type\ncsv-1,b-0001,environment\ncsv-2,b-9999,smoke\n"
    )
    page = _login(browser, site, "ops")
    _render(page, site, "provisioning.ipynb", ".wb-prov-submit")
    page.click("text=Import CSV")
    with page.expect_file_chooser() as chooser:  # ipywidgets' upload input is not in the DOM
        page.click(".wb-import-file")
    chooser.value.set_files(str(bad))
    page.wait_for_selector(".wb-import-file:has-text('(1)')", timeout=10_000)
    page.click(".wb-import-submit")
    page.wait_for_selector(".wb-import-errors", timeout=30_000)
    assert "unknown building_id" in page.inner_text(".wb-import-errors")
    assert "nothing was imported" in page.inner_text(".wb-import-result")
    _shot(page, "import-refused")
    from workbench.dashboards.data import registry_for

    devices = registry_for(site.lake.config, Principal.system()).devices()
    assert devices.filter(pl.col("device_id").str.starts_with("csv-")).height == 0
    page.context.close()
