"""The alarm notifier as a stack component: ``workbench up`` starts it, ``workbench
status`` shows a failing webhook and a failing SMTP server, and the deliveries go out once
the endpoints answer."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from proving.ports import free_port
from tests.conftest import run_cli
from tests.workbench.alarms.test_contact_points import Mailbox
from tests.workbench.alarms.test_notify import Receiver, _raise
from workbench.alarms import rulebook, store
from workbench.config import Config
from workbench.lake.tables import ensure_tables
from workbench.tenancy import Principal

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _notifier(env: dict[str, str]) -> dict:
    doc = json.loads(run_cli(env, "status", "--json").stdout)
    return next(c for c in doc["components"] if c["name"] == "notifier")


def _until(env: dict[str, str], done, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    entry = _notifier(env)
    while not done(entry) and time.monotonic() < deadline:
        time.sleep(0.5)
        entry = _notifier(env)
    return entry


def test_up_starts_the_notifier_and_status_shows_a_failing_webhook(wb_env):
    port, smtp_port = free_port(), free_port()
    env = {
        **wb_env,
        "WORKBENCH_WEBHOOK_ALLOW": "127.0.0.1",
        "WORKBENCH_SMTP_HOST": "127.0.0.1",
        "WORKBENCH_SMTP_PORT": str(smtp_port),
    }
    config = Config.from_env(env)
    ensure_tables(config)
    doc = f'[[webhook]]\nurl = "http://127.0.0.1:{port}/hook"\n[[email]]\nto = ["ops@t1.example"]\n'
    ops = Principal("ops", "operator", "t-1")
    rulebook.set_rules(config, "t-1", doc, source="t-1.toml", principal=ops)
    store.record(config, [_raise("s1", 1)], now=dt.datetime.now(dt.UTC))

    up = run_cli(env, "up", "notifier")
    assert up.returncode == 0, up.stderr
    entry = _until(env, lambda e: "2 failing" in e["detail"])
    assert entry["healthy"] is True, entry
    assert entry["metrics"]["pending"] == 2 and entry["metrics"]["failing"] == 2, entry
    # each failing contact point with its error
    assert f"http://127.0.0.1:{port}/hook: ConnectError" in entry["detail"], entry["detail"]
    assert "mailto:ops@t1.example: ConnectionRefusedError" in entry["detail"], entry["detail"]

    # the endpoints come back: the retries deliver
    receiver, mailbox = Receiver(port=port), Mailbox(port=smtp_port)
    try:
        entry = _until(env, lambda e: (e.get("metrics") or {}).get("delivered") == 2)
        assert entry["metrics"] == {
            "delivered": 2,
            "pending": 0,
            "failing": 0,
            "suppressed": 0,
            "last_error": None,
        }, entry
        assert [a["device_id"] for a in receiver.accepted()] == ["s1"]
        assert [to for _, to, _ in mailbox.mails] == [["ops@t1.example"]]
    finally:
        receiver.server.shutdown()
        mailbox.controller.stop()
