"""Contact points beyond webhooks, against real receivers: mail at a real local SMTP server
(aiosmtpd), the log, repeats and escalation on an injected clock, and silences — with the
real notifier round and the real Delta ``alarms`` table."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import ssl
import subprocess

import pytest

from proving.ports import free_port
from tests.workbench.alarms.support import workbench
from tests.workbench.alarms.test_notify import T0, Receiver, _raise
from workbench.alarms import rulebook, silences, store
from workbench.alarms.notify import Notifier, notifier_status
from workbench.alarms.rules import RuleError, parse_document
from workbench.config import Config
from workbench.exceptions import AccessDenied, InvalidState, NotFound
from workbench.lake.tables import ensure_tables
from workbench.tenancy import Principal

OPS = Principal("ops", "operator", "t-1")


class Clock:
    """Unix seconds the test moves by hand: repeats and escalations come due without
    the test sleeping."""

    def __init__(self, at: dt.datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def at(self, minutes: float) -> None:
        self.now = (T0 + dt.timedelta(minutes=minutes)).timestamp()


class Mailbox:
    """A real SMTP server (aiosmtpd) on loopback that answers ``554`` while ``refuse``."""

    def __init__(self, port: int | None = None, **smtp: object) -> None:
        from aiosmtpd.controller import Controller

        self.refuse = False
        self.mails: list[tuple[str, list[str], email.message.EmailMessage]] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                if outer.refuse:
                    return "554 5.7.1 delivery refused for this test"
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                outer.mails.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
                return "250 OK"

        self.port = port or free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **smtp)
        self.controller.start()


@pytest.fixture
def mailbox():
    box = Mailbox()
    yield box
    box.controller.stop()


def _config(tmp_path, **extra: str) -> Config:
    config = Config.from_env({"WORKBENCH_HOME": str(tmp_path / "home"), **extra})
    ensure_tables(config)
    return config


def test_contact_points_and_silences_are_validated_with_file_contact_point_and_field():
    def refused(doc: str, match: str) -> None:
        with pytest.raises(RuleError, match=match):
            parse_document(doc, source="acme.toml")

    refused('[[email]]\nto = "ops"\n', r"acme.toml: email #1, field 'to': expected a non-empty")
    refused('[[email]]\nto = ["ops"]\n', r"email #1, field 'to': expected an address like")
    refused('[[email]]\nurl = "x"\nto = ["a@b.io"]\n', r"email #1, field 'url': unknown key")
    refused('[[log]]\nrepeat_every = "soon"\n', r"log #1, field 'repeat_every': expected a dur")
    refused(
        '[[log]]\nescalate_after = "30m"\n', r"log #1, field 'escalate_to': missing: escalate_af"
    )
    refused(
        '[[log]]\nescalate_after = "30m"\nescalate_to = ["lead"]\n',
        r"log #1, field 'escalate_to': no contact point named 'lead'",
    )
    refused(
        '[[log]]\nname = "a"\n[[email]]\nname = "a"\nto = ["a@b.io"]\n',
        r"log #1, field 'name': used twice \(also email #1\)",
    )
    refused(
        '[[silence]]\nstarts = "2026-12-06T10:00:00"\nends = "2026-12-06T11:00:00Z"\ncomment = "x"',
        r"silence #1, field 'starts': expected a time with its UTC offset",
    )
    refused(
        '[[silence]]\nid = "w"\nstarts = 2026-12-06T10:00:00Z\nends = 2026-12-06T09:00:00Z\n'
        'comment = "x"',
        r"silence 'w' \(#1\), field 'ends': .* is not after starts",
    )
    refused(
        "[[silence]]\nstarts = 2026-12-06T10:00:00Z\nends = 2026-12-06T11:00:00Z\n",
        r"silence #1, field 'comment': expected a non-empty text",
    )
    refused(
        "[[silence]]\nstarts = 2026-12-06T10:00:00Z\nends = 2026-12-06T11:00:00Z\n"
        'comment = "x"\nseverities = ["loud"]',
        r"silence #1, field 'severities': unknown \['loud'\]",
    )
    doc = parse_document(
        '[[email]]\nname = "desk"\nto = ["ops@example.com"]\nescalate_after = "30m"\n'
        'escalate_to = ["lead"]\n[[log]]\nname = "lead"\nevents = []\n',
        source="acme.toml",
    )
    assert [(c.channel, c.escalate_to) for c in doc.contacts] == [
        ("email", ("lead",)),
        ("log", ()),
    ]


@pytest.mark.integration
def test_an_email_is_sent_once_per_alarm_and_a_refusing_server_is_retried(tmp_path, mailbox):
    config = _config(
        tmp_path,
        WORKBENCH_SMTP_HOST="127.0.0.1",
        WORKBENCH_SMTP_PORT=str(mailbox.port),
        WORKBENCH_SMTP_FROM="alarms@acme.example",
    )
    doc = '[[email]]\nto = ["ops@acme.example", "desk@acme.example"]\n'
    rulebook.set_rules(config, "t-1", doc, source="t-1.toml", principal=OPS)
    store.record(config, [_raise("s1", 1)], now=T0)
    alarm = store.alarm_id("t-1", "s1", "smoke", T0 + dt.timedelta(minutes=1))

    clock = Clock(T0)
    notifier = Notifier(config, clock=clock)
    assert notifier.run_once() == 1 and notifier.run_once() == 0
    [(sender, to, msg)] = mailbox.mails
    assert (sender, to) == ("alarms@acme.example", ["ops@acme.example", "desk@acme.example"])
    assert msg["Subject"] == "[CRITICAL] smoke raised: s1 in b-1"
    assert msg["Message-ID"] == f"<{alarm}@acme.example>"
    assert msg["X-Workbench-Dedup-Key"] == alarm and msg["X-Workbench-Event"] == "raised"
    assert f"alarm_id: {alarm}" in msg.get_content()
    assert "device_id: s1" in msg.get_content()

    # the server refuses (554): recorded as failing where an operator looks, retried with
    # back-off; meanwhile alarms are still recorded (the notifier is not in their way)
    mailbox.refuse = True
    store.record(config, [_raise("s2", 2)], now=T0 + dt.timedelta(minutes=2))
    assert notifier.run_once() == 0
    [item] = notifier.pending.values()
    assert item["last_error"] == "SMTP 554 5.7.1 delivery refused for this test"
    stops = iter([False, True])
    notifier.run(interval=0, stop=lambda: next(stops))
    line, figures = notifier_status(config)
    assert figures["pending"] == 1 and figures["failing"] == 1
    assert "mailto:ops@acme.example,desk@acme.example: SMTP 554" in line
    assert notifier.run_once() == 0 and item["attempts"] == 1  # not due before 1 s
    clock.now += 1
    assert notifier.run_once() == 0 and item["attempts"] == 2  # due: refused again, 2 s
    mailbox.refuse = False
    clock.now += 2
    assert notifier.run_once() == 1 and not notifier.pending
    assert [m["Subject"] for _, _, m in mailbox.mails][1] == "[CRITICAL] smoke raised: s2 in b-1"
    assert len(store.alarms(config, principal=OPS)) == 2


@pytest.mark.integration
def test_a_dead_smtp_port_and_a_missing_server_are_failures_with_their_reason(tmp_path):
    port = free_port()  # nothing listens there
    config = _config(tmp_path, WORKBENCH_SMTP_HOST="127.0.0.1", WORKBENCH_SMTP_PORT=str(port))
    rulebook.set_rules(config, "t-1", '[[email]]\nto = ["a@b.io"]\n', source="x", principal=OPS)
    store.record(config, [_raise("s1", 1)], now=T0)
    notifier = Notifier(config, clock=Clock(T0))
    assert notifier.run_once() == 0
    assert "ConnectionRefusedError" in next(iter(notifier.pending.values()))["last_error"]
    unset = Notifier(_config(tmp_path), clock=Clock(T0), state_path=tmp_path / "other.json")
    assert unset.run_once() == 0
    assert "set WORKBENCH_SMTP_HOST" in next(iter(unset.pending.values()))["last_error"]


@pytest.mark.integration
def test_repeats_while_unacknowledged_then_escalation_then_quiet_once_acknowledged(tmp_path):
    receiver = Receiver()
    config = _config(tmp_path, WORKBENCH_WEBHOOK_ALLOW="127.0.0.1")
    doc = (
        f'[[webhook]]\nurl = "{receiver.url}"\nrepeat_every = "15m"\n'
        'escalate_after = "30m"\nescalate_to = ["lead"]\n'
        '[[log]]\nname = "lead"\nevents = []\n'  # told of escalations only
    )
    rulebook.set_rules(config, "t-1", doc, source="t-1.toml", principal=OPS)
    store.record(config, [_raise("s1", 1)], now=T0)  # the raise is written at T0
    alarm = store.alarm_id("t-1", "s1", "smoke", T0 + dt.timedelta(minutes=1))
    clock = Clock(T0)
    notifier = Notifier(config, clock=clock)
    try:
        assert notifier.run_once() == 1  # raised
        clock.at(14)
        assert notifier.run_once() == 0
        clock.at(15)
        assert notifier.run_once() == 1  # repeat 1
        clock.at(31)
        assert notifier.run_once() == 2  # repeat 2, and the escalation to the log
        assert notifier.run_once() == 0
        # a restarted notifier goes on where the state says, not from the start
        notifier = Notifier(config, clock=clock)
        assert notifier.run_once() == 0
        store.acknowledge(config, alarm, principal=OPS)
        clock.at(60)
        assert notifier.run_once() == 0 and not notifier.watch  # acknowledged: quiet
    finally:
        receiver.server.shutdown()
    keys = [h["X-Workbench-Dedup-Key"] for _status, h, _body in receiver.requests]
    assert keys == [alarm, f"{alarm}:repeat-1", f"{alarm}:repeat-2"]
    assert [json.loads(b)["event"] for *_, b in receiver.requests] == [
        "raised",
        "repeated",
        "repeated",
    ]
    lines = (config.log_dir / "notifications.jsonl").read_text().splitlines()
    [line] = [json.loads(x) for x in lines]
    assert (line["dedup_key"], line["event"], line["alarm_id"]) == (
        f"{alarm}:escalated",
        "escalated",
        alarm,
    )
    assert line["at"] == (T0 + dt.timedelta(minutes=31)).isoformat()


@pytest.mark.integration
def test_a_silence_holds_notifications_back_and_counts_them_the_alarm_is_kept(
    tmp_path, monkeypatch, capsys
):
    receiver = Receiver()
    env = {"WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_WEBHOOK_ALLOW": "127.0.0.1"}
    config = _config(tmp_path, WORKBENCH_WEBHOOK_ALLOW="127.0.0.1")
    doc = f'[[webhook]]\nurl = "{receiver.url}"\n[[log]]\n'
    rulebook.set_rules(config, "t-1", doc, source="t-1.toml", principal=OPS)

    def wb(*args: str):
        return workbench(monkeypatch, capsys, env, "alarms", "silence", *args)

    bad = wb("add", "--tenant", "t-1", "--for", "2h", "--comment", "x", "--severity", "loud")
    assert bad.returncode == 2
    assert "workbench alarms silence add: silence 'si-" in bad.stderr
    assert "field 'severities': unknown ['loud']" in bad.stderr
    bad = wb("add", "--tenant", "t-1", "--ends", "tomorrow", "--comment", "x")
    assert bad.returncode == 2 and "--ends: expected an ISO time like" in bad.stderr
    added = wb(
        "add",
        "--tenant",
        "t-1",
        "--building",
        "b-1",
        "--starts",
        T0.isoformat(),
        "--ends",
        (T0 + dt.timedelta(hours=2)).isoformat(),
        "--comment",
        "sprinkler test",
    )
    assert added.returncode == 0, added.stderr
    [silence] = silences.list_silences(config, "t-1", principal=OPS)
    assert silence.by.startswith("system:") and silence.buildings == {"b-1"}
    with pytest.raises(AccessDenied, match="may not change the alarm rules"):
        silences.remove_silence(
            config, "t-1", silence.id, principal=Principal("ann", "analyst", "t-1")
        )

    store.record(config, [_raise("s1", 1), _raise("x1", 1, "t-2")], now=T0)
    clock = Clock(T0 + dt.timedelta(minutes=5))
    notifier = Notifier(config, clock=clock)
    try:
        assert notifier.run_once() == 0  # the webhook and the log: both held back
        assert notifier.suppressed_since_start == 2 and not notifier.pending
        assert len(store.alarms(config, principal=OPS)) == 1  # recorded all the same
        shown = json.loads(wb("list", "--tenant", "t-1", "--json").stdout)
        assert [(s["id"], s["held_back"], s["comment"]) for s in shown] == [
            (silence.id, 2, "sprinkler test")
        ]
        stops = iter([False, True])
        notifier.run(interval=0, stop=lambda: next(stops))
        assert "2 held back by silences" in notifier_status(config)[0]

        # removed: the next alarm goes out; the silenced one is not sent afterwards
        assert wb("remove", silence.id, "--tenant", "t-1").returncode == 0
        assert wb("remove", silence.id, "--tenant", "t-1").returncode == 4
        store.record(config, [_raise("s2", 6)], now=T0 + dt.timedelta(minutes=6))
        assert notifier.run_once() == 2
    finally:
        receiver.server.shutdown()
    assert [json.loads(b)["device_id"] for *_, b in receiver.requests] == ["s2"]
    with pytest.raises(NotFound):
        silences.remove_silence(config, "t-1", "#1", principal=OPS)
    # the document kept the rest: the contact points are still there
    text, version = rulebook.rules_document(config, "t-1", principal=OPS)
    assert "[[webhook]]" in text and "[[silence]]" not in text and version == 3
    # an edit made from an older version does not overwrite the newer document
    with pytest.raises(InvalidState, match=r"changed meanwhile \(now version 3, edited from 2\)"):
        rulebook.set_rules(config, "t-1", "", source="x", principal=OPS, expect_version=2)
    assert rulebook.rules_document(config, "t-1", principal=OPS) == (text, 3)


@pytest.mark.integration
def test_starttls_and_login_before_sending_and_a_wrong_password_is_a_failure(tmp_path, monkeypatch):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bool]] = []

    def authenticator(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and data.password == b"right-password"
        logins.append((data.login, session.ssl is not None))
        return AuthResult(success=ok, handled=False)  # False: the server answers 535

    # the server only takes mail over TLS from a logged-in client
    box = Mailbox(
        tls_context=tls, require_starttls=True, auth_required=True, authenticator=authenticator
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how a private CA is trusted
    try:
        settings = {
            "WORKBENCH_SMTP_HOST": "127.0.0.1",
            "WORKBENCH_SMTP_PORT": str(box.port),
            "WORKBENCH_SMTP_STARTTLS": "1",
            "WORKBENCH_SMTP_USER": "notifier",
        }
        config = _config(tmp_path, **settings, WORKBENCH_SMTP_PASSWORD="wrong")
        rulebook.set_rules(config, "t-1", '[[email]]\nto = ["a@b.io"]\n', source="x", principal=OPS)
        store.record(config, [_raise("s1", 1)], now=T0)
        wrong = Notifier(config, clock=Clock(T0))
        assert wrong.run_once() == 0
        assert next(iter(wrong.pending.values()))["last_error"].startswith("SMTP 535")
        right = _config(tmp_path, **settings, WORKBENCH_SMTP_PASSWORD="right-password")
        assert Notifier(right, clock=Clock(T0), state_path=tmp_path / "n.json").run_once() == 1
    finally:
        box.controller.stop()
    # every attempt (smtplib tries PLAIN, then LOGIN, with the wrong password) over TLS
    assert len(logins) >= 2 and set(logins) == {(b"notifier", True)}
    assert [to for _, to, _ in box.mails] == [["a@b.io"]]
