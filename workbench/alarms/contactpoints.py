"""Contact points and silences of a tenant's alarm document, validated like its rules.

Three kinds of contact point, each a TOML array of tables:

* ``[[webhook]]``: ``url``; a signed JSON POST (:mod:`~workbench.alarms.notify`);
* ``[[email]]``: ``to = ["ops@example.com"]``; one mail over the workbench's SMTP server;
* ``[[log]]``: one JSON line in the notifier's log and ``logs/notifications.jsonl``.

Each takes ``events`` (default ``["raised"]``), ``severities`` and ``buildings`` (default:
all), and optionally ``name`` (to be escalated to), ``repeat_every`` (sent again while the
alarm is neither acknowledged nor cleared) and ``escalate_after`` with ``escalate_to``
(the named contact points told when the alarm is still unacknowledged after that long).

A ``[[silence]]`` keeps notifications of matching alarms (``buildings``, ``rules``,
``severities``; empty: every alarm) from going out between ``starts`` and ``ends``; the
alarms themselves are still recorded.

>>> from workbench.alarms.rules import parse_document
>>> doc = parse_document('''
... [[email]]
... to = ["ops@example.com"]
... severities = ["critical"]
... repeat_every = "15m"
... ''', source="acme.toml")
>>> doc.contacts[0].channel, doc.contacts[0].to, doc.contacts[0].repeat_every_s
('email', ('ops@example.com',), 900.0)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from workbench.exceptions import WorkbenchError

__all__ = [
    "CHANNELS",
    "EVENTS",
    "ContactPoint",
    "Silence",
    "check_names",
    "parse_contact",
    "parse_instant",
    "parse_silence",
    "string_set",
]

Channel = Literal["webhook", "email", "log"]
CHANNELS: tuple[Channel, ...] = ("webhook", "email", "log")
EVENTS = ("raised", "cleared", "acknowledged")
_COMMON = frozenset(
    {"name", "events", "severities", "buildings", "repeat_every", "escalate_after", "escalate_to"}
)
_OWN = {"webhook": {"url"}, "email": {"to"}, "log": set[str]()}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$|^[^@\s<>,;\"]+@localhost$")
_URL = re.compile(r"^https?://[^/\s:]+(:\d+)?(/\S*)?$")

# the caller's error type, built from (rule-or-contact label, field, problem)
Fail = Callable[[str, str | None, str], WorkbenchError]


@dataclasses.dataclass(frozen=True)
class ContactPoint:
    """One contact point: where (``channel``, ``url`` or ``to``) and which alarms."""

    channel: Channel
    url: str = ""  # webhooks
    to: tuple[str, ...] = ()  # emails
    name: str = ""
    events: frozenset[str] = frozenset({"raised"})
    severities: frozenset[str] = frozenset()
    buildings: frozenset[str] = frozenset()
    repeat_every_s: float = 0.0
    escalate_after_s: float = 0.0
    escalate_to: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        """What the contact point reaches, as logs and ``workbench status`` show it."""
        if self.channel == "webhook":
            return self.url
        if self.channel == "email":
            return "mailto:" + ",".join(self.to)
        return "log"

    def matches(self, severity: str, building: str) -> bool:
        """Whether alarms of this severity and building are this contact point's."""
        return (not self.severities or severity in self.severities) and (
            not self.buildings or building in self.buildings
        )

    def wants(self, event: str, severity: str, building: str) -> bool:
        """Whether this contact point is told of ``event`` on such an alarm."""
        return event in self.events and self.matches(severity, building)


@dataclasses.dataclass(frozen=True)
class Silence:
    """A silence (maintenance window): no notification of matching alarms in
    ``[starts, ends)``."""

    starts: dt.datetime
    ends: dt.datetime
    comment: str
    id: str = ""
    by: str = ""
    buildings: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()

    def silences(self, at: dt.datetime, building: str, rule: str, severity: str) -> bool:
        """Whether a notification of such an alarm is held back at ``at``."""
        return (
            self.starts <= at < self.ends
            and (not self.buildings or building in self.buildings)
            and (not self.rules or rule in self.rules)
            and (not self.severities or severity in self.severities)
        )

    def to_json(self) -> dict[str, Any]:
        """The silence as a JSON-ready dict."""
        doc = dataclasses.asdict(self)
        doc["starts"], doc["ends"] = self.starts.isoformat(), self.ends.isoformat()
        for key in ("buildings", "rules", "severities"):
            doc[key] = sorted(doc[key])
        return doc


def string_set(value: object, allowed: Sequence[str] | None = None) -> frozenset[str]:
    """A document's list of names as a set; ValueError for anything else, or for a name
    outside ``allowed``."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a list of non-empty strings, got {value!r}")
    if allowed is not None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(f"unknown {unknown} (known: {', '.join(allowed)})")
    return frozenset(value)


def parse_contact(
    channel: Channel,
    table: Mapping[str, Any],
    index: int,
    fail: Fail,
    *,
    severities: Sequence[str],
    duration: Callable[[object], float],
) -> ContactPoint:
    """One ``[[webhook]]``, ``[[email]]`` or ``[[log]]`` table; ``fail(label, field,
    problem)`` builds the error naming the document."""
    label = f"{channel} #{index}"
    known = _COMMON | _OWN[channel]
    unknown = sorted(set(table) - known)
    if unknown:
        raise fail(label, unknown[0], f"unknown key (known: {', '.join(sorted(known))})")
    extra: dict[str, Any] = {}
    if channel == "webhook":
        url = table.get("url")
        if not isinstance(url, str) or not _URL.match(url):
            raise fail(label, "url", f"expected an http:// or https:// URL, got {url!r}")
        extra["url"] = url
    elif channel == "email":
        to = table.get("to")
        if to is None:
            raise fail(label, "to", "missing: a list of addresses")
        if not isinstance(to, list) or not to:
            raise fail(label, "to", f"expected a non-empty list of addresses, got {to!r}")
        for address in to:
            if not isinstance(address, str) or not _EMAIL.match(address):
                raise fail(
                    label, "to", f"expected an address like ops@example.com, got {address!r}"
                )
        extra["to"] = tuple(to)
    name = table.get("name", "")
    if name != "" and (not isinstance(name, str) or not _NAME.match(name)):
        raise fail(label, "name", f"expected lower-case letters, digits, '-' or '_', got {name!r}")
    for key, allowed in (("events", EVENTS), ("severities", severities), ("buildings", None)):
        if key in table:
            try:
                extra[key] = string_set(table[key], allowed)
            except ValueError as exc:
                raise fail(label, key, str(exc)) from None
    for key in ("repeat_every", "escalate_after"):
        if key in table:
            try:
                seconds = duration(table[key])
            except ValueError as exc:
                raise fail(label, key, str(exc)) from None
            if seconds <= 0:
                raise fail(label, key, "expected a duration above 0")
            extra[f"{key}_s"] = seconds
    if ("escalate_after" in table) != ("escalate_to" in table):
        field = "escalate_to" if "escalate_after" in table else "escalate_after"
        raise fail(label, field, "missing: escalate_after and escalate_to go together")
    if "escalate_to" in table:
        try:
            extra["escalate_to"] = tuple(sorted(string_set(table["escalate_to"])))
        except ValueError as exc:
            raise fail(label, "escalate_to", str(exc)) from None
        if not extra["escalate_to"]:
            raise fail(label, "escalate_to", "expected the names of one or more contact points")
    return ContactPoint(channel=channel, name=name, **extra)


def check_names(contacts: Sequence[ContactPoint], fail: Fail) -> None:
    """Contact point names are unique, and ``escalate_to`` names existing other ones."""
    labels = _labels(contacts)
    names: dict[str, str] = {}
    for contact, label in zip(contacts, labels, strict=True):
        if contact.name and contact.name in names:
            raise fail(label, "name", f"used twice (also {names[contact.name]})")
        if contact.name:
            names[contact.name] = label
    for contact, label in zip(contacts, labels, strict=True):
        for target in contact.escalate_to:
            if target not in names:
                known = ", ".join(sorted(names)) or "none has a name"
                raise fail(label, "escalate_to", f"no contact point named {target!r} ({known})")
            if target == contact.name:
                raise fail(label, "escalate_to", "a contact point cannot escalate to itself")


def _labels(contacts: Sequence[ContactPoint]) -> list[str]:
    counts: dict[str, int] = {}
    labels = []
    for contact in contacts:
        counts[contact.channel] = counts.get(contact.channel, 0) + 1
        labels.append(f"{contact.channel} #{counts[contact.channel]}")
    return labels


def parse_instant(value: object) -> dt.datetime:
    """A time with its UTC offset (an ISO text or a TOML datetime), in UTC.

    >>> parse_instant("2026-12-24T18:00:00+01:00").isoformat()
    '2026-12-24T17:00:00+00:00'
    """
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"expected an ISO time like 2026-12-24T18:00:00+01:00, got {value!r}"
            ) from None
    if not isinstance(value, dt.datetime):
        raise ValueError(f"expected a time like 2026-12-24T18:00:00+01:00, got {value!r}")
    if value.tzinfo is None:
        raise ValueError(f"expected a time with its UTC offset (…Z or …+01:00), got {value}")
    return value.astimezone(dt.UTC)


def parse_silence(
    table: Mapping[str, Any],
    index: int,
    fail: Fail,
    *,
    severities: Sequence[str],
) -> Silence:
    """One ``[[silence]]`` table."""
    label = f"silence #{index}"
    sid = table.get("id")
    if isinstance(sid, str) and _NAME.match(sid):
        label = f"silence {sid!r} (#{index})"
    known = {"id", "buildings", "rules", "severities", "starts", "ends", "comment", "by"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise fail(label, unknown[0], f"unknown key (known: {', '.join(sorted(known))})")
    if sid is not None and (not isinstance(sid, str) or not _NAME.match(sid)):
        raise fail(label, "id", f"expected lower-case letters, digits, '-' or '_', got {sid!r}")
    times = {}
    for key in ("starts", "ends"):
        if key not in table:
            raise fail(label, key, "missing")
        try:
            times[key] = parse_instant(table[key])
        except ValueError as exc:
            raise fail(label, key, str(exc)) from None
    if times["ends"] <= times["starts"]:
        raise fail(label, "ends", f"{times['ends']} is not after starts ({times['starts']})")
    comment = table.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        raise fail(label, "comment", f"expected a non-empty text saying why, got {comment!r}")
    by = table.get("by", "")
    if not isinstance(by, str):
        raise fail(label, "by", f"expected a string, got {by!r}")
    extra: dict[str, Any] = {}
    for key, allowed in (("buildings", None), ("rules", None), ("severities", severities)):
        if key in table:
            try:
                extra[key] = string_set(table[key], allowed)
            except ValueError as exc:
                raise fail(label, key, str(exc)) from None
    return Silence(
        starts=times["starts"], ends=times["ends"], comment=comment, id=sid or "", by=by, **extra
    )
