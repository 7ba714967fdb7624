"""Browser tests: Playwright drives the system Chromium against a real Voila server over a
lake produced by the processor's commit path (and a real gateway for provisioning).

Screenshots land in tests/artifacts/ (gitignored)."""

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

from tests.conftest import free_port
from tests.workbench.dashboards.conftest import expected_5m
from tests.workbench.dashboards.lake import USERS, DashLake, make_lake
from workbench.kafka import ensure_topic
from workbench.registry import sas_token
from workbench.tenancy import Principal, access_log

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
RENDER_TIMEOUT_MS = 90_000


@dataclasses.dataclass
class Site:
    lake: DashLake
    url: str
    log: Path


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
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
        KAFKA_BOOTSTRAP_SERVERS=broker_config.bootstrap_servers,
        WORKBENCH_TOPIC=topic,
        WORKBENCH_TOPIC_PARTITIONS="1",
        WORKBENCH_DASHBOARD_REFRESH="1",
    )
    ensure_topic(lake.config)
    log = lake.config.home / "voila.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest_service", "voila"],
            env=lake.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{lake.config.host}:{lake.config.voila_port}"
    try:
        _wait_http(f"{url}/login", proc, log)
        yield Site(lake, url, log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: run 'make system-deps' (never 'playwright install')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


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
    page.goto(f"{site.url}/voila/render/building.ipynb")
    assert "/login" in page.url and page.locator("#username").count() == 1
    page.context.close()


def test_viewer_sees_the_expected_numbers_of_their_building(browser, site):
    page = _login(browser, site, "rita")
    _render(page, site, "building.ipynb", ".wb-kpi-temperature")
    want = expected_5m(site.lake, "b-0001")
    assert page.inner_text(".wb-kpi-temperature") == f"{want['temperature']:.1f} °C"
    assert page.inner_text(".wb-kpi-humidity") == f"{want['humidity']:.1f} %RH"
    assert page.inner_text(".wb-kpi-light") == f"{want['light']:.1f} lux"
    assert page.inner_text(".wb-kpi-readings") == str(want["readings"])
    assert page.inner_text(".wb-silent-count") == "1"
    page.wait_for_selector(".wb-trends img, img.wb-trends", timeout=10_000)
    _shot(page, "building-viewer")
    page.goto(f"{site.url}/logout")
    page.goto(f"{site.url}/voila/render/building.ipynb")
    assert "/login" in page.url
    page.context.close()


def test_viewer_cannot_reach_another_tenants_building(browser, site):
    secret = "b-0002"  # tenant t-0002's; rita is t-0001's viewer of b-0001
    forged = {"X-Workbench-Identity": f"root|{int(time.time()) + 3600}|forged"}
    page = _login(browser, site, "rita", extra_http_headers=forged)
    # 1. the URL parameter
    _render(page, site, f"building.ipynb?building={secret}", ".wb-kpi-temperature")
    assert "not one of yours" in page.inner_text(".wb-message")
    assert secret not in page.inner_text(".wb-header")
    # 2. the widget: a forged option in the picker
    page.evaluate(
        """(secret) => {
            const select = document.querySelector('.wb-picker select');
            const option = document.createElement('option');
            option.value = secret; option.textContent = secret;
            select.appendChild(option);
            select.value = secret;
            select.dispatchEvent(new Event('change', {bubbles: true}));
        }""",
        secret,
    )
    time.sleep(3)
    assert secret not in page.inner_text(".wb-header")
    assert "Building 2" not in page.inner_text("body")
    # 3. the forged identity header did not make rita an admin
    _render(page, site, "fleet.ipynb", ".wb-error")
    assert "rita (viewer) may not see the fleet overview" in page.inner_text(".wb-error")
    _render(page, site, "provisioning.ipynb", ".wb-error")
    assert "may not provision" in page.inner_text(".wb-error")
    _shot(page, "viewer-refused")
    page.context.close()


def test_alarms_appear_within_seconds_of_a_fire(browser, site):
    from simulator.scenarios import parse_scenarios

    fire = parse_scenarios("fire")[0]
    b, _, _ = fire.target(site.lake.fleet)  # type: ignore[attr-defined]
    building = site.lake.fleet.buildings[b].building_id
    page = _login(browser, site, "root")
    _render(page, site, f"building.ipynb?building={building}", ".wb-kpi-temperature")
    assert page.inner_text(".wb-smoke-count") == "0"
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    site.lake.feed(site.lake.records(start, 2, scenario="fire"))
    page.wait_for_selector(".wb-alarm-box", timeout=20_000)  # refresh every 1 s here
    assert int(page.inner_text(".wb-alarm-box .wb-smoke-count")) >= 1
    _shot(page, "fire")
    _render(page, site, "fleet.ipynb", ".wb-fleet table")
    first_row = page.locator(".wb-fleet tr").nth(1).inner_text()
    assert building in first_row  # the burning building leads the fleet overview
    _shot(page, "fleet")
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
