"""``workbench alarms list|show|ack|clear|comment``, ``workbench alarms rules …`` and
``workbench alarms silence …``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from workbench.alarms import rulebook, silences, store
from workbench.alarms.contactpoints import parse_instant
from workbench.alarms.rules import parse_document, parse_duration, parse_rules
from workbench.cli import Verb, print_table, say, subcommands, verb_group
from workbench.config import Config
from workbench.exceptions import InvalidInput
from workbench.tenancy.cli import add_principal_option, resolve_principal
from workbench.tenancy.principal import Principal

__all__ = ["register"]


def _when(value: Any) -> str | None:
    return None if value is None else store.jsonable(value)


def _cmd_list(config: Config, args: argparse.Namespace) -> int:
    principal = resolve_principal(config, args)
    principal.require("read")
    active = None if args.all else True
    frame = store.alarms(config, principal=principal, building_id=args.building, active=active)
    if args.json:
        rows = [
            {k: store.jsonable(v) for k, v in r.items() if k not in ("history", "comments")}
            for r in frame.iter_rows(named=True)
        ]
        print(json.dumps(rows, indent=2))
        return 0
    print_table(
        [
            (
                r["alarm_id"],
                r["severity"],
                r["rule"],
                r["building_id"],
                r["device_id"],
                r["room"],
                _when(r["raised_at"]),
                "cleared" if r["cleared_at"] else "active",
                r["acknowledged_by"],
            )
            for r in frame.iter_rows(named=True)
        ],
        header=(
            "ALARM",
            "SEVERITY",
            "RULE",
            "BUILDING",
            "DEVICE",
            "ROOM",
            "RAISED",
            "STATE",
            "ACKED BY",
        ),
    )
    return 0


def _print_alarm(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: store.jsonable(v) for k, v in row.items()}, indent=2))
        return
    for key in (
        "alarm_id",
        "severity",
        "rule",
        "tenant_id",
        "building_id",
        "device_id",
        "floor",
        "room",
        "raised_at",
        "raised_value",
        "ended_at",
        "cleared_at",
        "cleared_by",
        "acknowledged_at",
        "acknowledged_by",
    ):
        value = store.jsonable(row[key])
        print(f"{key + ':':17} {'-' if value is None else value}")
    for c in row["comments"]:
        print(f"{'comment:':17} {c['at']} {c['by']}: {c['text']}")
    for h in row["history"]:
        detail = f" ({h['detail']})" if h.get("detail") else ""
        print(f"{'history:':17} {h['at']} {h['action']} by {h['by']}{detail}")
        if h.get("limit"):
            print(f"{'':17} {h['limit']}")


def _cmd_show(config: Config, args: argparse.Namespace) -> int:
    principal = resolve_principal(config, args)
    _print_alarm(store.alarm(config, args.alarm, principal=principal), args.json)
    return 0


def _cmd_act(config: Config, args: argparse.Namespace) -> int:
    principal = resolve_principal(config, args)
    if args.action == "ack":
        row = store.acknowledge(config, args.alarm, principal=principal)
        say(f"alarm {args.alarm} acknowledged by {row['acknowledged_by']}")
    elif args.action == "clear":
        row = store.clear(config, args.alarm, principal=principal)
        say(f"alarm {args.alarm} cleared by {row['cleared_by']}")
    else:
        row = store.comment(config, args.alarm, args.text, principal=principal)
        say(f"comment added to alarm {args.alarm}")
    if args.json:
        _print_alarm(row, True)
    return 0


def _tenant(principal: Principal, args: argparse.Namespace) -> str:
    tenant = args.tenant or principal.tenant_id
    if not tenant:
        raise InvalidInput("which tenant?", hint="pass --tenant TENANT_ID")
    return str(tenant)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}", hint="give a readable TOML file") from None


def _cmd_rules_show(config: Config, args: argparse.Namespace) -> int:
    principal = resolve_principal(config, args)
    if args.defaults:
        text, version = store.DEFAULT_RULES, 0
    else:
        text, version = rulebook.rules_document(
            config, _tenant(principal, args), principal=principal
        )
    if args.json:
        rules = parse_rules(text, source="stored rules")
        doc = {"version": version, "rules": [r.to_json() for r in rules], "document": text}
        print(json.dumps(doc, indent=2))
    else:
        say(f"version {version}" + (" (the shipped defaults)" if version == 0 else ""))
        print(text, end="")
    return 0


def _cmd_rules_check(config: Config, args: argparse.Namespace) -> int:
    doc = parse_document(_read(args.file), source=str(args.file))
    say(
        f"{args.file}: {len(doc.rules)} rule(s), {len(doc.contacts)} contact point(s), "
        f"{len(doc.silences)} silence(s), valid"
    )
    return 0


def _cmd_rules_set(config: Config, args: argparse.Namespace) -> int:
    principal = resolve_principal(config, args)
    tenant = _tenant(principal, args)
    rules = rulebook.set_rules(
        config, tenant, _read(args.file), source=str(args.file), principal=principal
    )
    say(f"tenant {tenant}: {len(rules)} rule(s) loaded from {args.file}")
    return 0


def _cmd_rules_reset(config: Config, args: argparse.Namespace) -> int:
    principal = resolve_principal(config, args)
    tenant = _tenant(principal, args)
    rulebook.reset_rules(config, tenant, principal=principal)
    say(f"tenant {tenant}: back to the shipped default rules")
    return 0


def _cmd_notify(config: Config, args: argparse.Namespace) -> int:
    from workbench.alarms.notify import Notifier
    from workbench.logs import configure_logging

    configure_logging(config.log_level)
    notifier = Notifier(config)
    if args.once:
        say(f"{notifier.run_once()} notification(s) delivered, {len(notifier.pending)} pending")
        return 0
    say("delivering alarm notifications (Ctrl-C stops)")
    notifier.run(interval=args.interval)
    return 0


def _cmd_secret(config: Config, args: argparse.Namespace) -> int:
    from workbench.alarms.notify import secret_text

    principal = resolve_principal(config, args)
    tenant = _tenant(principal, args)
    rulebook.may_change_rules(principal, tenant)
    print(secret_text(config, tenant))
    return 0


def _instant(flag: str, value: str) -> dt.datetime:
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise InvalidInput(
            f"{flag}: {exc}", hint=f"e.g. {flag} 2026-12-24T18:00:00+01:00"
        ) from None


def _cmd_silence_add(config: Config, args: argparse.Namespace) -> int:
    principal = resolve_principal(config, args)
    tenant = _tenant(principal, args)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    starts = _instant("--starts", args.starts) if args.starts else now
    if (args.ends is None) == (args.for_ is None):
        raise InvalidInput("give one of --ends or --for", hint="e.g. --for 2h")
    if args.ends is not None:
        ends = _instant("--ends", args.ends)
    else:
        try:
            ends = starts + dt.timedelta(seconds=parse_duration(args.for_))
        except ValueError as exc:
            raise InvalidInput(f"--for: {exc}", hint="or give --ends TIME") from None
    silence = silences.add_silence(
        config,
        tenant,
        starts=starts,
        ends=ends,
        comment=args.comment,
        principal=principal,
        buildings=args.building,
        rules=args.rule,
        severities=args.severity,
    )
    say(f"tenant {tenant}: silence {silence.id} from {silence.starts} to {silence.ends}")
    return 0


def _cmd_silence_list(config: Config, args: argparse.Namespace) -> int:
    principal = resolve_principal(config, args)
    tenant = _tenant(principal, args)
    found = silences.list_silences(config, tenant, principal=principal)
    counts = silences.silenced_counts(config, tenant)
    now = dt.datetime.now(dt.UTC)
    rows = []
    for i, s in enumerate(found, start=1):
        label = s.id or f"#{i}"
        state = "active" if s.starts <= now < s.ends else "past" if s.ends <= now else "future"
        rows.append({**s.to_json(), "id": label, "state": state, "held_back": counts.get(label, 0)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print_table(
        [
            (
                r["id"],
                r["state"],
                r["starts"],
                r["ends"],
                ",".join(r["buildings"]) or "*",
                ",".join(r["rules"]) or "*",
                ",".join(r["severities"]) or "*",
                r["held_back"],
                r["by"],
                r["comment"],
            )
            for r in rows
        ],
        header=(
            "SILENCE",
            "STATE",
            "STARTS",
            "ENDS",
            "BUILDINGS",
            "RULES",
            "SEVERITIES",
            "HELD BACK",
            "BY",
            "COMMENT",
        ),
    )
    return 0


def _cmd_silence_remove(config: Config, args: argparse.Namespace) -> int:
    principal = resolve_principal(config, args)
    tenant = _tenant(principal, args)
    silence = silences.remove_silence(config, tenant, args.silence, principal=principal)
    say(f"tenant {tenant}: silence {silence.id or args.silence} removed ({silence.comment})")
    return 0


def _silence_commands(sub: Any, cmd: Any) -> None:
    group = sub.add_parser(
        "silence",
        help="silences (maintenance windows): no notification of matching alarms",
        description="silences (maintenance windows): no notification of matching alarms",
    )
    ssub = subcommands(group, "silence_command")
    p = cmd(ssub, "add", _cmd_silence_add, "silence the tenant's alarm notifications for a while")
    p.add_argument("--tenant", metavar="TENANT_ID", help="default: your tenant")
    p.add_argument("--starts", metavar="TIME", help="ISO time with offset (default: now)")
    p.add_argument("--ends", metavar="TIME", help="ISO time with offset")
    p.add_argument("--for", dest="for_", metavar="DURATION", help="instead of --ends: 90m, 2h")
    p.add_argument("--comment", required=True, help="why (shown to everyone)")
    for flag, what in (("building", "BUILDING_ID"), ("rule", "RULE"), ("severity", "SEVERITY")):
        p.add_argument(
            f"--{flag}",
            action="append",
            default=[],
            metavar=what,
            help=f"only alarms of this {flag} (repeat for more; default: all)",
        )
    p = cmd(ssub, "list", _cmd_silence_list, "the tenant's silences and what each held back")
    p.add_argument("--tenant", metavar="TENANT_ID", help="default: your tenant")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = cmd(ssub, "remove", _cmd_silence_remove, "end a silence: take it out of the document")
    p.add_argument("silence", metavar="SILENCE_ID", help="its id, or #N for the N-th")
    p.add_argument("--tenant", metavar="TENANT_ID", help="default: your tenant")


def register(verb: Verb) -> None:
    """Add ``workbench alarms …``."""
    sub = verb_group(
        verb, "alarms", "alarms raised by the rules: list, show, ack, clear, comment; rules"
    )

    def cmd(parent: Any, name: str, handler: object, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        add_principal_option(p)
        return p

    p = cmd(sub, "list", _cmd_list, "alarms in your scope, newest first (active ones by default)")
    p.add_argument("--building", metavar="BUILDING_ID", help="only this building")
    p.add_argument("--all", action="store_true", help="cleared alarms too")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = cmd(sub, "show", _cmd_show, "one alarm with its comments and history")
    p.add_argument("alarm", metavar="ALARM_ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    for name, help in (
        ("ack", "acknowledge an alarm (recorded with your name)"),
        ("clear", "clear an alarm before its condition ended"),
        ("comment", "add a comment to an alarm"),
    ):
        p = cmd(sub, name, _cmd_act, help)
        p.add_argument("alarm", metavar="ALARM_ID")
        if name == "comment":
            p.add_argument("text", metavar="TEXT")
        p.add_argument("--json", action="store_true", help="print the alarm afterwards, as JSON")
        p.set_defaults(action=name)

    p = cmd(
        sub, "notify", _cmd_notify, "deliver alarm events to the tenants' contact points (a loop)"
    )
    p.add_argument("--once", action="store_true", help="one round of deliveries, then exit")
    # a round that finds the table unchanged costs two Delta log checks (about 2 ms on
    # local disk): a short interval keeps a webhook within the p99 goal of 2 s
    p.add_argument("--interval", type=float, default=0.25, help="seconds between rounds")
    p = cmd(sub, "webhook-secret", _cmd_secret, "the tenant's webhook signing key (base64)")
    p.add_argument("--tenant", metavar="TENANT_ID", help="default: your tenant")

    _silence_commands(sub, cmd)
    rules = sub.add_parser(
        "rules", help="the tenant's alarm rules (TOML)", description="the tenant's alarm rules"
    )
    rsub = subcommands(rules, "rules_command")
    p = cmd(rsub, "show", _cmd_rules_show, "print the tenant's rule document")
    p.add_argument("--tenant", metavar="TENANT_ID", help="default: your tenant")
    p.add_argument("--defaults", action="store_true", help="the shipped default rules")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = cmd(rsub, "check", _cmd_rules_check, "validate a rule document without loading it")
    p.add_argument("file", metavar="FILE", type=Path)
    p = cmd(rsub, "set", _cmd_rules_set, "validate a rule document and make it the tenant's")
    p.add_argument("file", metavar="FILE", type=Path)
    p.add_argument("--tenant", metavar="TENANT_ID", help="default: your tenant")
    p = cmd(rsub, "reset", _cmd_rules_reset, "give the tenant the shipped default rules again")
    p.add_argument("--tenant", metavar="TENANT_ID", help="default: your tenant")
