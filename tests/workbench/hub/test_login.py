"""The hub's login is the workbench's: wrong passwords are refused, throttled and audited
like at the other doors, and a viewer is sent to the dashboards instead of a server."""

from __future__ import annotations

import polars as pl
import pytest

from proving.hub_session import HubSession
from workbench.tenancy import Principal, access_log

pytestmark = [pytest.mark.integration]


def _hub_logins(hub, user: str) -> pl.DataFrame:
    log = access_log(hub.config, principal=Principal.system("test"))
    return log.filter((pl.col("user") == user) & (pl.col("action") == "login:hub"))


def test_viewer_is_refused_a_server_and_shown_the_dashboards(hub, hub_user):
    viewer, password = hub_user("viewer", "t-0001")
    session = HubSession(hub.url, viewer, password)
    assert session.login.status_code == 403
    page = session.login.text
    assert "viewer" in page
    dashboards = f"http://{hub.config.host}:{hub.config.panel_port}/"
    assert f'href="{dashboards}"' in page
    assert session.token == ""
    entries = _hub_logins(hub, viewer)
    assert entries["outcome"].to_list() == ["denied"]
    assert "dashboards" in entries["detail"][0]


def test_wrong_passwords_are_refused_audited_and_then_throttled(hub, hub_user):
    analyst, password = hub_user("analyst", "t-0002")
    for _ in range(hub.config.login_max_failures):
        wrong = HubSession(hub.url, analyst, "not-the-password")
        assert wrong.login.status_code == 403
        assert "Invalid username or password" in wrong.login.text
    # backed off: the right password is refused too, for now, and said so
    right = HubSession(hub.url, analyst, password)
    assert right.login.status_code == 429
    assert "back" in right.login.text.lower()
    entries = _hub_logins(hub, analyst)
    assert entries["outcome"].to_list() == ["denied"] * (hub.config.login_max_failures + 1)
    assert entries["detail"][-1] == "throttled"
