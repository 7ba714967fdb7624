"""A server that fails to start is shown in ``workbench status`` (when and why) until the
user's next server starts; the user is told on the hub's side too."""

from __future__ import annotations

import pytest

from proving.hub_session import HubSession
from workbench.hub.failures import clear_spawn_failure, spawn_failures
from workbench.stack import supervisor
from workbench.tenancy import Principal, UserStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _hub_line(hub) -> tuple[str, dict]:
    status = {s.name: s for s in supervisor.status(hub.config)}["hub"]
    assert status.healthy, status.detail
    return status.detail, status.metrics or {}


def test_a_failed_spawn_shows_in_status_until_the_next_start(hub, hub_user):
    analyst, password = hub_user("analyst", "t-0001")
    session = HubSession(hub.url, analyst, password)
    assert session.login.status_code == 302, session.login.text
    # disabled between login and spawn: the spawner's own check refuses the start
    store = UserStore(hub.config)
    store.disable(analyst, by=Principal.system("test"))
    with pytest.raises(AssertionError, match=r"did not start|spawn refused"):
        session.spawn()
    assert "is disabled or not a notebook user" in spawn_failures(hub.config)[analyst]["reason"]
    detail, metrics = _hub_line(hub)
    assert f"{analyst}'s server failed to start at " in detail
    assert "is disabled or not a notebook user" in detail
    assert metrics["spawn_failures"] >= 1

    store.enable(analyst, by=Principal.system("test"))
    try:
        session.spawn()
        detail, _ = _hub_line(hub)
        assert analyst not in spawn_failures(hub.config)
        assert f"{analyst}'s server failed" not in detail
    finally:
        session.stop()
        clear_spawn_failure(hub.config, analyst)
