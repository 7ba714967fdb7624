"""``workbench tenants | buildings | devices``: the registry verbs (docs/gateway.md).

The CLI acts as the platform administrator (``system:<OS user>``) unless
``--as USER`` names a workbench user, whose scope then applies to every read and
write; the acting user is recorded in every commit.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import polars as pl

from workbench.cli import Verb, print_table, say, verb_group, whole_number
from workbench.config import Config
from workbench.events import DEVICE_TYPES
from workbench.exceptions import ImportRejected, InvalidInput
from workbench.registry.keys import sas_token
from workbench.registry.records import (
    DEVICE_STATUSES,
    FLOOR_RANGE,
    NAME_MAX,
    ROOM_MAX,
    parse_floor,
    protocols,
)
from workbench.registry.store import DEVICE_LISTING, Registry
from workbench.tenancy.cli import add_principal_option, resolve_principal

__all__ = ["register"]

_MAX_ERRORS_SHOWN = 50


def _floor(text: str) -> int | None:
    """``--floor``: the registry's own rule, so the CLI and the forms say the same."""
    try:
        return parse_floor(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _registry(config: Config, args: argparse.Namespace) -> Registry:
    return Registry(config, principal=resolve_principal(config, args))


def _print_frame(frame: pl.DataFrame, as_json: bool, columns: list[str]) -> None:
    if as_json:
        rows = frame.select(columns).to_dicts()
        print(json.dumps(rows, indent=2, default=str))
        return
    if frame.height == 0:
        say("(none)")
        return
    print_table(list(frame.select(columns).iter_rows()), header=columns)


def _print_record(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record, indent=2, default=str))
    else:
        for k, v in record.items():
            print(f"{k:<12} {'-' if v is None else v}")


# --- tenants and buildings ---------------------------------------------------------------


def _tenants_add(config: Config, args: argparse.Namespace) -> int:
    _registry(config, args).add_tenant(args.tenant_id, name=args.name)
    say(f"tenant {args.tenant_id} added")
    return 0


def _tenants_list(config: Config, args: argparse.Namespace) -> int:
    columns = ["tenant_id", "name", "created_at", "created_by"]
    _print_frame(_registry(config, args).tenants(), args.json, columns)
    return 0


def _buildings_add(config: Config, args: argparse.Namespace) -> int:
    tenant = _registry(config, args).add_building(
        args.building_id, tenant=args.tenant, name=args.name
    )
    say(f"building {args.building_id} added to tenant {tenant}")
    return 0


def _buildings_rename(config: Config, args: argparse.Namespace) -> int:
    _registry(config, args).rename_building(args.building_id, args.name)
    say(f"building {args.building_id} renamed")
    return 0


def _buildings_list(config: Config, args: argparse.Namespace) -> int:
    columns = ["building_id", "tenant_id", "name", "created_at", "created_by"]
    _print_frame(_registry(config, args).buildings(tenant=args.tenant), args.json, columns)
    return 0


# --- devices -----------------------------------------------------------------------------


def _provision(config: Config, args: argparse.Namespace) -> int:
    new = _registry(config, args).provision(
        args.device_id,
        building=args.building,
        device_type=args.type,
        floor=args.floor,
        room=args.room,
        protocol=args.protocol,
    )
    if args.json:
        print(json.dumps(new.to_json(), indent=2))
    else:
        d = new.device
        say(
            f"device {d.device_id} provisioned in {d.building_id} ({d.tenant_id}), "
            f"key version {d.key_version}; the key is shown only now:"
        )
        print(new.key)
    return 0


def _status_verb(method: str) -> Any:
    def handler(config: Config, args: argparse.Namespace) -> int:
        device = getattr(_registry(config, args), method)(args.device_id)
        if args.json:
            print(json.dumps(device.to_json(), indent=2))
        else:
            say(f"device {device.device_id} is {device.status}")
        return 0

    return handler


def _rotate(config: Config, args: argparse.Namespace) -> int:
    new = _registry(config, args).rotate_key(args.device_id)
    if args.json:
        print(json.dumps(new.to_json(), indent=2))
    else:
        say(
            f"device {args.device_id}: new key version {new.device.key_version}; "
            "every running gateway worker refuses the old key now. The key is shown only now:"
        )
        print(new.key)
    return 0


def _show(config: Config, args: argparse.Namespace) -> int:
    _print_record(_registry(config, args).device(args.device_id).to_json(), args.json)
    return 0


def _list(config: Config, args: argparse.Namespace) -> int:
    page = _registry(config, args).device_page(
        tenant=args.tenant,
        building=args.building,
        status=args.status,
        after=args.after,
        limit=args.limit,
    )
    _print_frame(page.devices, args.json, list(DEVICE_LISTING))
    # the page's place on stderr: stdout stays the rows (a table, or JSON for scripts)
    shown = page.devices.height
    if page.next_after is not None:
        say(
            f"{shown} of {page.total:,} matching devices shown; next page: "
            f"--after {page.next_after}"
        )
    elif args.after is not None or shown < page.total:
        say(f"{shown} shown, the last page of {page.total:,} matching devices")
    return 0


def _import(config: Config, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(
                total=total, desc=stage, unit="rows", file=sys.stderr, disable=args.quiet
            )
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    try:
        result = _registry(config, args).import_csv(args.file, progress=progress)
    except ImportRejected as exc:
        for bar in bars.values():
            bar.close()
        for line, message in exc.errors[:_MAX_ERRORS_SHOWN]:
            say(f"{args.file}:{line}: {message}")
        if len(exc.errors) > _MAX_ERRORS_SHOWN:
            say(f"... and {len(exc.errors) - _MAX_ERRORS_SHOWN} more")
        raise
    if args.json:
        print(json.dumps(result))
    else:
        say(
            f"imported {result['rows']} rows in one commit: {result['inserted']} new, "
            f"{result['updated']} updated"
        )
    return 0


def _token(config: Config, args: argparse.Namespace) -> int:
    # the gateway refuses tokens living longer than the cap: never print one it would refuse
    cap = config.sas_max_ttl
    if not 1 <= args.ttl <= cap:
        raise InvalidInput(
            f"--ttl {args.ttl}: a token lives 1 to {cap} seconds",
            hint=f"pass --ttl between 1 and {cap} (WORKBENCH_SAS_MAX_TTL, the gateway's cap)",
        )
    print(sas_token(args.device_id, args.key, ttl_s=args.ttl))
    return 0


def register(verb: Verb) -> None:
    """Add the ``tenants``, ``buildings`` and ``devices`` groups."""
    # tenants
    sub = tenants = verb_group(verb, "tenants", "tenants: add and list")
    p = sub.add_parser("add", help="add a tenant")
    p.add_argument("tenant_id", metavar="TENANT_ID")
    p.add_argument("--name", help=f"display name, at most {NAME_MAX} characters (default: the id)")
    p.set_defaults(handler=_tenants_add)
    p = sub.add_parser("list", help="list tenants")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_tenants_list)

    # buildings
    sub = buildings = verb_group(verb, "buildings", "buildings: add and list")
    p = sub.add_parser("add", help="add a building to a tenant")
    p.add_argument("building_id", metavar="BUILDING_ID")
    p.add_argument(
        "--tenant",
        metavar="TENANT_ID",
        help="the building's tenant (default: the --as operator's own; the admin names one)",
    )
    p.add_argument("--name", help=f"display name, at most {NAME_MAX} characters (default: the id)")
    p.set_defaults(handler=_buildings_add)
    p = sub.add_parser("rename", help="give a building a new display name")
    p.add_argument("building_id", metavar="BUILDING_ID")
    p.add_argument("--name", required=True, help=f"the new name, at most {NAME_MAX} characters")
    p.set_defaults(handler=_buildings_rename)
    p = sub.add_parser("list", help="list buildings")
    p.add_argument("--tenant", metavar="TENANT_ID", help="only this tenant's")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_buildings_list)

    # devices
    sub = devices = verb_group(
        verb, "devices", "devices: provision, de-provision, keys, bulk import, tokens"
    )
    p = sub.add_parser("provision", help="add a device and print its key (shown once)")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("--building", required=True, metavar="BUILDING_ID")
    p.add_argument("--type", required=True, choices=DEVICE_TYPES)
    low, high = FLOOR_RANGE
    p.add_argument("--floor", type=_floor, metavar="N", help=f"a whole number from {low} to {high}")
    p.add_argument("--room", help=f"at most {ROOM_MAX} characters")
    p.add_argument("--protocol", default="http", choices=protocols(), help="default: http")
    p.add_argument("--json", action="store_true", help="print {device_id, key, ...} as JSON")
    p.set_defaults(handler=_provision)
    for name, method, text in (
        ("deprovision", "deprovision", "de-provision a device for good (its key stops working)"),
        ("disable", "disable", "stop accepting a device's events until enabled"),
        ("enable", "enable", "accept a disabled device's events again"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("device_id", metavar="DEVICE_ID")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(handler=_status_verb(method))
    p = sub.add_parser("rotate-key", help="issue a new key (printed once); the old one stops")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("--json", action="store_true", help="print {device_id, key, ...} as JSON")
    p.set_defaults(handler=_rotate)
    p = sub.add_parser("show", help="one device's registry record")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_show)
    p = sub.add_parser("list", help="list devices, by id, a page at a time")
    p.add_argument("--tenant", metavar="TENANT_ID")
    p.add_argument("--building", metavar="BUILDING_ID")
    p.add_argument("--status", choices=DEVICE_STATUSES)
    p.add_argument(
        "--limit",
        type=whole_number(0, "0 = all"),
        default=100,
        metavar="N",
        help="devices per page (100; 0: all)",
    )
    p.add_argument(
        "--after",
        metavar="DEVICE_ID",
        help="start after this device id (the next page: the id stderr names)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_list)
    p = sub.add_parser(
        "import",
        help="add or update devices from CSV (device_id,building_id,device_type"
        "[,floor,room,protocol]) in one commit; nothing is applied when a row is bad",
    )
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_import)
    p = sub.add_parser("token", help="print a SAS token for a device key")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("--key", required=True, help="the device's base64 key")
    p.add_argument(
        "--ttl",
        type=int,
        default=3600,
        help="seconds until expiry (default 3600; at most WORKBENCH_SAS_MAX_TTL, one year)",
    )
    p.set_defaults(handler=_token)

    for group in (tenants, buildings, devices):
        for name, parser in group.choices.items():
            if name != "token":  # token needs no registry access
                add_principal_option(parser)
