"""How one notification leaves: a signed webhook POST, a mail over SMTP, or a log line.

:class:`Channels` takes one queued notification (a dict the notifier keeps in its state
file) and returns None once it was handed over, or the reason it was not, which the
notifier records and retries. Every channel carries the notification's dedup key, so a
receiver that sees it twice (delivery is at least once) drops the second:
``X-Workbench-Dedup-Key`` on webhooks and mails, a ``Message-ID`` made from it on mails,
``dedup_key`` in log lines.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

from workbench.alarms.targets import WebhookRefused, check_target
from workbench.config import Config
from workbench.secretfiles import load_secret, secret_path

__all__ = ["Channels", "compose_email", "message_id", "sign", "webhook_secret"]

logger = logging.getLogger(__name__)


def webhook_secret(config: Config, tenant: str) -> bytes:
    """``tenant``'s webhook signing key (made on first use, kept under the home's secrets)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in tenant)
    return load_secret(
        secret_path(config, f"webhook-{safe}"),
        what=f"webhook secret of {tenant}",
        lost_hint="receivers need the new one: `workbench alarms webhook-secret`",
    )


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Workbench-Signature`` of ``body`` sent at ``timestamp``.

    >>> import hashlib, hmac
    >>> mac = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    >>> sign(b"k", "1700000000", b"{}") == "sha256=" + mac
    True
    """
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def message_id(dedup_key: str, sender: str) -> str:
    """The ``Message-ID`` of a notification's mail: the same for every attempt, so a
    mailbox or a filter can drop a repeated delivery.

    >>> message_id("al-12ab:cleared", "workbench@ops.example.com")
    '<al-12ab.cleared@ops.example.com>'
    """
    domain = sender.rpartition("@")[2] or "localhost"
    return f"<{dedup_key.replace(':', '.')}@{domain}>"


_SUBJECT = {
    "raised": "raised",
    "cleared": "cleared",
    "acknowledged": "acknowledged",
    "repeated": "still active, unacknowledged",
    "escalated": "escalated: still unacknowledged",
}


def compose_email(body: dict[str, Any], *, sender: str, to: list[str]) -> EmailMessage:
    """The mail announcing ``body`` (a notification, as a webhook's JSON carries it)."""
    msg = EmailMessage()
    where = f"{body['device_id']} in {body['building_id']}"
    if body.get("room"):
        where += f" room {body['room']}"
    event = _SUBJECT.get(body["event"], body["event"])
    if body.get("repeat"):
        event += f" (reminder {body['repeat']})"
    msg["Subject"] = f"[{str(body['severity']).upper()}] {body['rule']} {event}: {where}"
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Message-ID"] = message_id(body["dedup_key"], sender)
    if body["event"] != "raised":  # threads every later mail under the alarm's first one
        first = message_id(body["alarm_id"], sender)
        msg["In-Reply-To"], msg["References"] = first, first
    msg["X-Workbench-Dedup-Key"] = body["dedup_key"]
    msg["X-Workbench-Event"] = body["event"]
    msg["X-Workbench-Severity"] = str(body["severity"])
    lines = [f"{key}: {'-' if value is None else value}" for key, value in body.items()]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _smtp_error(exc: Exception) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        return f"SMTP {exc.smtp_code} {text}".strip()
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return f"SMTP refused every recipient: {', '.join(sorted(exc.recipients))}"
    return f"{type(exc).__name__}: {exc}"


class Channels:
    """Sends queued notifications; one HTTP client for the notifier's life."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._http: Any = None

    def send(self, item: dict[str, Any], *, now: float) -> str | None:
        """Hand ``item`` over on its channel: None when done, else why not."""
        channel = item.get("channel", "webhook")  # state files from before emails
        if channel == "email":
            return self._email(item)
        if channel == "log":
            return self._log(item, now=now)
        return self._webhook(item, now=now)

    def _webhook(self, item: dict[str, Any], *, now: float) -> str | None:
        import httpx

        try:
            check_target(item["url"], self.config.webhook_allow)
        except WebhookRefused as exc:
            return str(exc)
        body = json.dumps(item["body"], separators=(",", ":"), sort_keys=True).encode()
        stamp = str(int(now))
        key = webhook_secret(self.config, item["tenant_id"])
        headers = {
            "Content-Type": "application/json",
            "X-Workbench-Dedup-Key": item["key"],
            "X-Workbench-Timestamp": stamp,
            "X-Workbench-Signature": sign(key, stamp, body),
        }
        try:
            if self._http is None:
                # one client for the notifier's life: a new one per request builds a TLS
                # context (0.4 s of CPU here) and a new connection every time
                self._http = httpx.Client(
                    timeout=self.config.webhook_timeout, follow_redirects=False
                )
            answer = self._http.post(item["url"], content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= answer.status_code < 300:
            return None
        return f"HTTP {answer.status_code}"

    def _email(self, item: dict[str, Any]) -> str | None:
        config = self.config
        if not config.smtp_host:
            return "no SMTP server: set WORKBENCH_SMTP_HOST (and _PORT, _FROM) for the notifier"
        msg = compose_email(item["body"], sender=config.smtp_from, to=item["to"])
        try:
            with smtplib.SMTP(
                config.smtp_host, config.smtp_port, timeout=config.webhook_timeout
            ) as smtp:
                if config.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if config.smtp_user:
                    smtp.login(config.smtp_user, config.smtp_password)
                refused = smtp.send_message(msg, from_addr=config.smtp_from, to_addrs=item["to"])
        except (smtplib.SMTPException, OSError) as exc:
            return _smtp_error(exc)
        if refused:
            # the others got it: the retry sends to all again, and their Message-ID
            # lets them drop the copy
            return f"SMTP refused {', '.join(sorted(refused))}"
        return None

    def _log(self, item: dict[str, Any], *, now: float) -> str | None:
        line = json.dumps(
            {"at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(), **item["body"]},
            sort_keys=True,
        )
        path = self.config.log_dir / "notifications.jsonl"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as exc:
            return f"cannot append to {path}: {exc}"
        logger.info("alarm notification %s", line)
        return None
