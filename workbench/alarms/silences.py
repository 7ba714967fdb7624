"""Silences (maintenance windows) kept in the tenant's alarm document, added, listed and
removed in a principal's scope (``workbench alarms silence add|list|remove``).

A silence is a ``[[silence]]`` table of the same document as the rules and contact
points, so it is validated, versioned and read by the notifier like them. Adding one
appends a table to the document; removing one takes its table out, leaving the rest of
the text (and its comments) as it was. Both refuse to overwrite a document changed
between their reading and their writing it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Iterable

from workbench.alarms import rulebook
from workbench.alarms.contactpoints import Silence
from workbench.alarms.rules import parse_document
from workbench.config import Config
from workbench.exceptions import NotFound
from workbench.tenancy.principal import Principal

__all__ = ["add_silence", "list_silences", "remove_silence", "silenced_counts"]

_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"-]+)\s*\]\]?\s*(#.*)?$")


def _q(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def add_silence(
    config: Config,
    tenant: str,
    *,
    starts: dt.datetime,
    ends: dt.datetime,
    comment: str,
    principal: Principal,
    buildings: Iterable[str] = (),
    rules: Iterable[str] = (),
    severities: Iterable[str] = (),
) -> Silence:
    """Add a silence to ``tenant``'s document (its operators and admins); return it.

    A mistake (``ends`` not after ``starts``, an unknown severity, no comment) is a
    :class:`~workbench.alarms.rules.RuleError` naming the field; nothing changes."""
    rulebook.may_change_rules(principal, tenant)
    lines = [
        "[[silence]]",
        f'id = "si-{secrets.token_hex(3)}"',
        f"starts = {_q(starts.isoformat())}",
        f"ends = {_q(ends.isoformat())}",
        f"comment = {_q(comment)}",
        f"by = {_q(principal.user)}",
    ]
    for key, values in (("buildings", buildings), ("rules", rules), ("severities", severities)):
        if list(values):
            lines.append(f"{key} = {_list(values)}")
    block = "\n".join(lines) + "\n"
    (silence,) = parse_document(block, source="workbench alarms silence add").silences
    text, version = rulebook.rules_document(config, tenant, principal=principal)
    rulebook.set_rules(
        config,
        tenant,
        text.rstrip("\n") + "\n\n" + block,
        source=f"{tenant}'s document",
        principal=principal,
        expect_version=version,
    )
    return silence


def list_silences(config: Config, tenant: str, *, principal: Principal) -> list[Silence]:
    """``tenant``'s silences, as its document holds them (past ones too)."""
    text, _ = rulebook.rules_document(config, tenant, principal=principal)
    return list(parse_document(text, source=f"{tenant}'s document").silences)


def remove_silence(config: Config, tenant: str, ref: str, *, principal: Principal) -> Silence:
    """Take the silence ``ref`` (its id, or ``#n`` for the n-th) out of ``tenant``'s
    document; :class:`~workbench.exceptions.NotFound` when it has none such."""
    rulebook.may_change_rules(principal, tenant)
    text, version = rulebook.rules_document(config, tenant, principal=principal)
    silences = parse_document(text, source=f"{tenant}'s document").silences
    labels = [s.id or f"#{i}" for i, s in enumerate(silences, start=1)]
    index = next(
        (
            i
            for i, (s, label) in enumerate(zip(silences, labels, strict=True))
            if ref in (s.id, label)
        ),
        None,
    )
    if index is None:
        raise NotFound(
            f"no silence {ref!r} in the alarm document of tenant {tenant!r}",
            hint=f"its silences: {', '.join(labels) or 'none'} (`workbench alarms silence list`)",
        )
    lines = text.splitlines(keepends=True)
    headers = {i: m.group(1) for i, line in enumerate(lines) if (m := _HEADER.match(line))}
    starts = sorted(headers)
    blocks = [i for i in starts if headers[i] == "silence"]
    first = blocks[index]
    after = next((i for i in starts if i > first), len(lines))
    rest = "".join(lines[:first] + lines[after:])
    rulebook.set_rules(
        config,
        tenant,
        rest,
        source=f"{tenant}'s document",
        principal=principal,
        expect_version=version,
    )
    return silences[index]


def silenced_counts(config: Config, tenant: str) -> dict[str, int]:
    """Notifications each of ``tenant``'s silences held back (by id or ``#n``), from the
    notifier's state."""
    path = config.run_dir / "notifications.json"
    try:
        counts = json.loads(path.read_text()).get("silenced", {})
    except (OSError, ValueError):
        return {}
    prefix = f"{tenant}/"
    return {k[len(prefix) :]: int(v) for k, v in counts.items() if k.startswith(prefix)}
