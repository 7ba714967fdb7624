"""Alarm rules: a small TOML document per tenant, validated before anything uses it.

A document is a list of ``[[rule]]`` tables (and contact points and silences,
:mod:`~workbench.alarms.contactpoints`). Each rule watches one condition of a
device's readings, in event time:

* a flag reading is set: ``reading = "smoke"`` (or ``"intrusion"``);
* a number is above or below a threshold for a duration:
  ``reading = "temperature"``, ``above = 27``, ``for = "10m"``;
* the device has been silent: ``silent_for = "15m"``;
* a building's rejected events (refusals attributed to its devices) are more than
  ``above`` per ``per`` for ``for``: ``kind = "rejected_rate"``, ``above = 20``,
  ``per = "1m"``, ``for = "5m"``.

Optional keys narrow a rule: ``device_types``, ``buildings``, ``rooms``; ``enabled =
false`` keeps it without evaluating it; ``max_raises_per_hour`` (default 6, 0: no
limit) caps how often one device may raise it. Every error names the file, the rule and the
field (:class:`RuleError`), and a document with any error is refused whole.

>>> rules = parse_rules('''
... [[rule]]
... name = "server-room-hot"
... reading = "temperature"
... above = 27
... for = "10m"
... severity = "major"
... rooms = ["3.12"]
... ''', source="acme.toml")
>>> rules[0].kind, rules[0].threshold, rules[0].for_s
('above', 27.0, 600.0)
>>> parse_rules('[[rule]]\\nname = "x"\\nreading = "co2"\\nseverity = "major"', source="a.toml")
Traceback (most recent call last):
...
workbench.alarms.rules.RuleError: a.toml: rule 'x' (#1), field 'reading': unknown reading 'co2' ...
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

from workbench.alarms.contactpoints import (
    CHANNELS,
    EVENTS,
    ContactPoint,
    Silence,
    check_names,
    parse_contact,
    parse_silence,
    string_set,
)
from workbench.exceptions import WorkbenchError

__all__ = [
    "DEFAULT_MAX_RAISES_PER_HOUR",
    "DEFAULT_RULES",
    "EVENTS",
    "FLAG_READINGS",
    "NUMBER_READINGS",
    "SEVERITIES",
    "Document",
    "Kind",
    "Rule",
    "RuleError",
    "Severity",
    "default_rules",
    "parse_document",
    "parse_duration",
    "parse_rules",
]

Severity = Literal["critical", "major", "minor", "warning"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
Kind = Literal["flag", "above", "below", "silent", "rejected_rate"]

FLAG_READINGS = ("smoke", "intrusion")
NUMBER_READINGS = ("temperature", "humidity", "light")
DEVICE_TYPES = ("environment", "smoke", "intrusion")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_KEYS = frozenset(
    {
        "name",
        "severity",
        "reading",
        "above",
        "below",
        "is",
        "for",
        "silent_for",
        "device_types",
        "buildings",
        "rooms",
        "enabled",
        "description",
        "max_raises_per_hour",
        "kind",
        "per",
    }
)
# Longest duration a rule may name: a processor taking a partition over re-reads this
# much event time (plus a margin) to rebuild what its conditions were.
MAX_DURATION_S = 24 * 3600.0
# A device whose condition flaps (a broken detector) would otherwise raise, and notify,
# once per flap: this many raises per device and rule per hour of event time, then the
# rest are counted, not raised.
DEFAULT_MAX_RAISES_PER_HOUR = 6


class RuleError(WorkbenchError):
    """A rule document that cannot be used; ``source``, ``rule`` and ``field`` say where."""

    exit_code = 2

    def __init__(self, source: str, rule: str | None, field: str | None, problem: str) -> None:
        where = source
        if rule is not None:
            where += f": {rule}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(
            f"{where}: {problem}", hint="nothing was changed; fix the document and load it again"
        )
        self.source = source
        self.rule = rule
        self.field = field
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class Rule:
    """One validated rule (see the module docstring for the document's keys)."""

    name: str
    severity: Severity
    kind: Kind
    reading: str | None = None  # None for silence rules
    threshold: float | None = None  # above/below rules
    for_s: float = 0.0  # flag/above/below: how long the condition must hold
    silent_for_s: float = 0.0  # silence rules
    per_s: float = 0.0  # rejected-rate rules: the window the count is per
    device_types: frozenset[str] = frozenset()  # empty: every type
    buildings: frozenset[str] = frozenset()  # empty: every building
    rooms: frozenset[str] = frozenset()  # empty: every room
    enabled: bool = True
    description: str = ""
    max_raises_per_hour: int = DEFAULT_MAX_RAISES_PER_HOUR  # 0: no limit

    @property
    def horizon_s(self) -> float:
        """How much event time the rule looks back over."""
        return max(self.for_s + self.per_s, self.silent_for_s)

    def to_json(self) -> dict[str, Any]:
        """The rule as a JSON-ready dict (durations in seconds, sets as sorted lists)."""
        doc = dataclasses.asdict(self)
        for key in ("device_types", "buildings", "rooms"):
            doc[key] = sorted(doc[key])
        return doc

    def to_toml(self) -> str:
        """The rule as a ``[[rule]]`` table that :func:`parse_rules` reads back."""
        lines = ["[[rule]]", f"name = {_q(self.name)}"]
        if self.description:
            lines.append(f"description = {_q(self.description)}")
        if self.kind == "silent":
            lines.append(f'silent_for = "{_dur(self.silent_for_s)}"')
        elif self.kind == "rejected_rate":
            lines.append('kind = "rejected_rate"')
            lines.append(f"above = {self.threshold!r}")
            lines.append(f'per = "{_dur(self.per_s)}"')
            if self.for_s:
                lines.append(f'for = "{_dur(self.for_s)}"')
        else:
            lines.append(f"reading = {_q(self.reading or '')}")
            if self.kind in ("above", "below"):
                lines.append(f"{self.kind} = {self.threshold!r}")
            if self.for_s:
                lines.append(f'for = "{_dur(self.for_s)}"')
        lines.append(f"severity = {_q(self.severity)}")
        for key, values in (
            ("device_types", self.device_types),
            ("buildings", self.buildings),
            ("rooms", self.rooms),
        ):
            if values:
                lines.append(f"{key} = [{', '.join(_q(v) for v in sorted(values))}]")
        if self.max_raises_per_hour != DEFAULT_MAX_RAISES_PER_HOUR:
            lines.append(f"max_raises_per_hour = {self.max_raises_per_hour}")
        if not self.enabled:
            lines.append("enabled = false")
        return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dur(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_duration(value: object) -> float:
    """Seconds in ``"90s"``, ``"10m"``, ``"1.5h"`` or a plain number of seconds.

    >>> parse_duration("10m"), parse_duration(30), parse_duration("1.5h")
    (600.0, 30.0, 5400.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '10m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration like '90s', '10m' or '2h', got {value!r}")
    if seconds < 0 or seconds > MAX_DURATION_S:
        raise ValueError(f"expected a duration between 0 and 24h, got {value!r}")
    return seconds


def _rule(table: Mapping[str, Any], index: int, source: str) -> Rule:
    label = f"rule #{index}"
    name = table.get("name")
    if isinstance(name, str) and _NAME.match(name):
        label = f"rule {name!r} (#{index})"

    def fail(field: str | None, problem: str) -> RuleError:
        return RuleError(source, label, field, problem)

    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key (known: {', '.join(sorted(_KEYS))})")
    if name is None:
        raise fail("name", "missing")
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("name", f"expected lower-case letters, digits, '-' or '_', got {name!r}")
    severity = table.get("severity")
    if severity is None:
        raise fail("severity", "missing")
    if severity not in SEVERITIES:
        raise fail("severity", f"expected one of {', '.join(SEVERITIES)}, got {severity!r}")
    extra: dict[str, Any] = {}
    for key, allowed in (("device_types", DEVICE_TYPES), ("buildings", None), ("rooms", None)):
        if key in table:
            try:
                extra[key] = string_set(table[key], allowed)
            except ValueError as exc:
                raise fail(key, str(exc)) from None
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise fail("enabled", f"expected true or false, got {enabled!r}")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise fail("description", f"expected a string, got {description!r}")
    limit = table.get("max_raises_per_hour", DEFAULT_MAX_RAISES_PER_HOUR)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 3600:
        raise fail(
            "max_raises_per_hour",
            f"expected a whole number from 0 (no limit) to 3600, got {limit!r}",
        )
    extra["max_raises_per_hour"] = limit
    common = dict(name=name, severity=severity, enabled=enabled, description=description, **extra)

    kind_key = table.get("kind")
    if kind_key is not None and kind_key != "rejected_rate":
        raise fail("kind", f"the only kind to name is 'rejected_rate', got {kind_key!r}")
    if kind_key == "rejected_rate":
        return _rejected_rate(table, common, fail)

    if "per" in table:
        raise fail("per", "only a rejected_rate rule counts per a window")
    if "silent_for" in table:
        for key in ("reading", "above", "below", "is", "for"):
            if key in table:
                raise fail(key, "a silence rule (silent_for) watches no reading")
        silent = _duration(table, "silent_for", 0.0, fail)
        if silent <= 0:
            raise fail("silent_for", "expected a duration above 0")
        return Rule(kind="silent", silent_for_s=silent, **common)

    reading = table.get("reading")
    if reading is None:
        raise fail("reading", "missing (or give silent_for for a silence rule)")
    if reading not in FLAG_READINGS + NUMBER_READINGS:
        raise fail(
            "reading",
            f"unknown reading {reading!r} (known: {', '.join(FLAG_READINGS + NUMBER_READINGS)})",
        )
    for_s = _duration(table, "for", 0.0, fail)
    if reading in FLAG_READINGS:
        for key in ("above", "below"):
            if key in table:
                raise fail(key, f"{reading} is true or false; it has no threshold")
        if table.get("is", True) is not True:
            raise fail("is", f"only `is = true` is watched, got {table['is']!r}")
        return Rule(kind="flag", reading=reading, for_s=for_s, **common)
    if "is" in table:
        raise fail("is", f"{reading} is a number: give above or below")
    bounds = [k for k in ("above", "below") if k in table]
    if len(bounds) != 1:
        raise fail("above", f"a {reading} rule takes exactly one of above or below")
    kind: Literal["above", "below"] = "above" if bounds[0] == "above" else "below"
    threshold = table[kind]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise fail(kind, f"expected a number, got {threshold!r}")
    return Rule(kind=kind, reading=reading, threshold=float(threshold), for_s=for_s, **common)


def _duration(
    table: Mapping[str, Any], key: str, default: float, fail: Callable[[str, str], RuleError]
) -> float:
    if key not in table:
        return default
    try:
        return parse_duration(table[key])
    except ValueError as exc:
        raise fail(key, str(exc)) from None


def _rejected_rate(
    table: Mapping[str, Any], common: dict[str, Any], fail: Callable[[str, str], RuleError]
) -> Rule:
    """A building's rejected-event rate rule (``kind = "rejected_rate"``)."""
    for key in ("reading", "below", "is", "silent_for", "device_types", "rooms"):
        if key in table:
            raise fail(key, "a rejected_rate rule counts a building's refusals: it takes no " + key)
    threshold = table.get("above")
    if threshold is None:
        raise fail("above", "missing: how many rejected events per 'per' are too many")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold < 0:
        raise fail("above", f"expected a number of events, 0 or more, got {threshold!r}")
    per = _duration(table, "per", 60.0, fail)
    if not 10 <= per <= 3600:
        raise fail("per", f"expected a window from 10s to 1h, got {table.get('per')!r}")
    for_s = _duration(table, "for", 0.0, fail)
    if for_s % per:
        raise fail(
            "for", f"expected a whole number of 'per' windows ({_dur(per)}), got {table['for']!r}"
        )
    return Rule(kind="rejected_rate", threshold=float(threshold), per_s=per, for_s=for_s, **common)


@dataclasses.dataclass(frozen=True)
class Document:
    """A tenant's whole document: its rules, its contact points and its silences."""

    rules: tuple[Rule, ...]
    contacts: tuple[ContactPoint, ...] = ()
    silences: tuple[Silence, ...] = ()

    @property
    def webhooks(self) -> tuple[ContactPoint, ...]:
        """The ``[[webhook]]`` contact points."""
        return tuple(c for c in self.contacts if c.channel == "webhook")


_TABLES = ("rule", *CHANNELS, "silence")


def parse_document(text: str, *, source: str) -> Document:
    """The rules, contact points and silences of a TOML document; :class:`RuleError`
    naming ``source``, the rule (or contact point, or silence) and the field at the first
    problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(source, None, None, f"not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - set(_TABLES))
    if unknown:
        expected = " or ".join(f"[[{t}]]" for t in _TABLES)
        raise RuleError(source, None, unknown[0], f"unknown top-level key (expected {expected})")
    for key in _TABLES:
        tables = doc.get(key, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise RuleError(source, None, key, f"expected [[{key}]] tables")
    rules = tuple(_rule(t, i, source) for i, t in enumerate(doc.get("rule", []), start=1))
    seen: set[str] = set()
    for i, rule in enumerate(rules, start=1):
        if rule.name in seen:
            raise RuleError(source, f"rule {rule.name!r} (#{i})", "name", "used twice")
        seen.add(rule.name)

    def fail(label: str, field: str | None, problem: str) -> RuleError:
        return RuleError(source, label, field, problem)

    contacts = tuple(
        parse_contact(channel, t, i, fail, severities=SEVERITIES, duration=parse_duration)
        for channel in CHANNELS
        for i, t in enumerate(doc.get(channel, []), start=1)
    )
    check_names(contacts, fail)
    silences = tuple(
        parse_silence(t, i, fail, severities=SEVERITIES)
        for i, t in enumerate(doc.get("silence", []), start=1)
    )
    ids = [s.id for s in silences if s.id]
    if len(ids) != len(set(ids)):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise RuleError(source, f"silence {twice!r}", "id", "used twice")
    return Document(rules, contacts, silences)


def parse_rules(text: str, *, source: str) -> tuple[Rule, ...]:
    """The rules of a TOML document (:func:`parse_document`)."""
    return parse_document(text, source=source).rules


DEFAULT_RULES = """\
# The rules every tenant starts with (`workbench alarms rules show --defaults`).
[[rule]]
name = "smoke"
reading = "smoke"
severity = "critical"

[[rule]]
name = "intrusion"
reading = "intrusion"
severity = "major"

[[rule]]
name = "too-hot"
reading = "temperature"
above = 30.0
for = "10m"
severity = "major"

[[rule]]
name = "too-cold"
reading = "temperature"
below = 12.0
for = "10m"
severity = "minor"

[[rule]]
name = "too-humid"
reading = "humidity"
above = 75.0
for = "15m"
severity = "minor"

[[rule]]
name = "too-dry"
reading = "humidity"
below = 15.0
for = "15m"
severity = "warning"

[[rule]]
name = "silent"
silent_for = "15m"
severity = "warning"

# Over 20 refusals a minute for 5 minutes: broken firmware or clocks, not one typo.
[[rule]]
name = "rejecting"
kind = "rejected_rate"
above = 20
per = "1m"
for = "5m"
severity = "minor"
"""


def default_rules() -> tuple[Rule, ...]:
    """The shipped rule set (:data:`DEFAULT_RULES`).

    >>> [(r.name, r.severity) for r in default_rules()][:2]
    [('smoke', 'critical'), ('intrusion', 'major')]
    """
    return parse_rules(DEFAULT_RULES, source="default rules")
