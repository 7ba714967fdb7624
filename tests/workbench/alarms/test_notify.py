"""Webhook notifications against a real local HTTP receiver: signed, retried with
back-off, delivered once per alarm, never to a private address unless allowed."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workbench.alarms import rulebook, store
from workbench.alarms.evaluate import Transition
from workbench.alarms.notify import Notifier, secret_text
from workbench.alarms.rules import RuleError
from workbench.alarms.targets import WebhookRefused, check_target
from workbench.config import Config
from workbench.lake.tables import ensure_tables
from workbench.tenancy import Principal

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)


class Receiver:
    """A real HTTP server on loopback that fails the first ``failures`` requests."""

    def __init__(self, failures: int = 0, port: int = 0) -> None:
        self.failures = failures
        self.requests: list[tuple[int, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 503 if outer.failures > 0 else 204
                outer.failures -= 1
                outer.requests.append((status, dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[dict]:
        return [json.loads(body) for status, _, body in self.requests if status == 204]


@pytest.fixture
def receiver():
    r = Receiver(failures=2)
    yield r
    r.server.shutdown()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _raise(device: str, minute: int, tenant: str = "t-1") -> Transition:
    return Transition(
        "raised",
        tenant,
        device,
        "smoke",
        T0 + dt.timedelta(minutes=minute),
        severity="critical",
        kind="flag",
        reading="smoke",
        building_id="b-1",
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://169.254.169.254/latest",
        "http://10.0.0.7/x",
        "http://[::1]/x",
        "http://localhost/x",
    ],
)
def test_loopback_link_local_and_private_targets_are_refused_by_default(url):
    with pytest.raises(WebhookRefused):
        check_target(url, "")


def test_a_webhook_is_signed_retried_and_delivered_once_per_alarm(tmp_path, receiver):
    config = Config.from_env({"WORKBENCH_HOME": str(tmp_path / "home")})
    ensure_tables(config)
    ops = Principal("ops", "operator", "t-1")
    doc = f'[[webhook]]\nurl = "{receiver.url}"\nseverities = ["critical"]\n'
    with pytest.raises(RuleError, match=r"webhook #1, field 'url': .*127.0.0.1 is loopback"):
        rulebook.set_rules(config, "t-1", doc, source="t-1.toml", principal=ops)
    config = dataclasses.replace(config, webhook_allow="127.0.0.1")
    rulebook.set_rules(config, "t-1", doc, source="t-1.toml", principal=ops)
    store.record(config, [_raise("s1", 1), _raise("s2", 2), _raise("s9", 1, "t-2")], now=T0)

    clock = Clock()
    notifier = Notifier(config, clock=clock)
    assert notifier.run_once() == 0  # the receiver is down: 503, 503
    assert len(receiver.requests) == 2 and len(notifier.pending) == 2
    assert notifier.run_once() == 0  # backing off: nothing is due
    assert len(receiver.requests) == 2
    clock.now += 1.0
    assert notifier.run_once() == 2
    clock.now += 3600
    assert notifier.run_once() == 0  # nothing new
    # a restarted notifier (its state file) does not deliver again
    assert Notifier(config, clock=clock).run_once() == 0

    delivered = receiver.accepted()
    ids = sorted(a["alarm_id"] for a in store.alarms(config, principal=ops).iter_rows(named=True))
    assert sorted(d["alarm_id"] for d in delivered) == ids  # once each, t-2's never
    assert {d["device_id"] for d in delivered} == {"s1", "s2"}
    key = base64.b64decode(secret_text(config, "t-1"))
    for _status, headers, body in receiver.requests:
        assert headers["X-Workbench-Dedup-Key"] == json.loads(body)["alarm_id"]
        mac = hmac.new(
            key, headers["X-Workbench-Timestamp"].encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        assert headers["X-Workbench-Signature"] == f"sha256={mac}"
    # an acknowledgement is not an event this webhook asked for
    store.acknowledge(config, ids[0], principal=ops)
    assert notifier.run_once() == 0


def test_the_alarms_table_is_queryable_in_hiveql_within_the_tenant(tmp_path):
    from workbench.query.engine import QuerySession

    config = Config.from_env({"WORKBENCH_HOME": str(tmp_path / "home")})
    ensure_tables(config)
    store.record(config, [_raise("s1", 1), _raise("s2", 2), _raise("s9", 1, "t-2")], now=T0)
    with QuerySession(config, Principal("ann", "analyst", "t-1")) as s:
        got = s.execute("SELECT device_id FROM alarms WHERE 1=1 OR tenant_id = 't-2'")
        assert sorted(got.rows) == [("s1",), ("s2",)]
    with QuerySession(config, Principal.system()) as s:
        assert s.execute("SELECT count(*) FROM alarms").rows == [(3,)]


def test_the_notifier_reads_only_changed_rows_and_forgets_what_is_past(tmp_path):
    """Cleared and delivered alarms leave the state once they are behind the horizon,
    a pass reads only rows updated since then, and an alarm touched again later is
    announced for the new event only."""
    receiver = Receiver()
    config = Config.from_env(
        {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_WEBHOOK_ALLOW": "127.0.0.1"}
    )
    ensure_tables(config)
    ops = Principal("ops", "operator", "t-1")
    doc = f'[[webhook]]\nurl = "{receiver.url}"\nevents = ["raised", "cleared", "acknowledged"]\n'
    rulebook.set_rules(config, "t-1", doc, source="t-1.toml", principal=ops)
    devices = [f"s{i}" for i in range(20)]
    store.record(config, [_raise(d, 1) for d in devices], now=T0)
    ends = [
        dataclasses.replace(_raise(d, 3), action="ended", severity="", kind="", reading=None)
        for d in devices
    ]
    store.record(config, ends, now=T0 + dt.timedelta(minutes=3))
    notifier = Notifier(config, clock=Clock())
    try:
        assert notifier.run_once() == 40  # raised and cleared, each of 20
        assert notifier.rows_read == 20 and len(notifier.delivered) == 40

        later = T0 + dt.timedelta(hours=1)
        store.record(config, [_raise("n1", 60)], now=later)
        assert notifier.run_once() == 1  # read back to the last horizon: 21 rows
        # the horizon moved to 10 minutes before `later`: the 40 deliveries are forgotten
        assert list(notifier.delivered) == [
            f"{store.alarm_id('t-1', 'n1', 'smoke', later)}@0:{receiver.url}"
        ]
        store.record(config, [_raise("n2", 61)], now=later + dt.timedelta(minutes=1))
        assert notifier.run_once() == 1
        assert notifier.rows_read == 2  # n1 and n2, not the 20 cleared ones again
        assert notifier.run_once() == 0 and notifier.rows_read == 0  # the table did not move

        # acknowledged (now, hours after T0): only that event goes out, not the old ones
        old = store.alarm_id("t-1", "s3", "smoke", T0 + dt.timedelta(minutes=1))
        store.acknowledge(config, old, principal=ops)
        assert notifier.run_once() == 1
        assert Notifier(config, clock=Clock()).run_once() == 0  # nor again after a restart
    finally:
        receiver.server.shutdown()
    keys = [h["X-Workbench-Dedup-Key"] for status, h, _ in receiver.requests if status == 204]
    assert len(keys) == len(set(keys)) == 43
    assert keys[-1] == f"{old}:acknowledged"
