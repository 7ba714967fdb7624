"""``workbench users …`` and the ``--as USER`` option every data verb takes."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from workbench.cli import Verb, print_table, say, verb_group
from workbench.config import Config
from workbench.exceptions import InvalidInput
from workbench.tenancy.passwords import new_password
from workbench.tenancy.principal import ROLES, Principal
from workbench.tenancy.users import User, UserStore, authenticate

__all__ = ["add_principal_option", "register", "resolve_principal"]


def add_principal_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--as USER`` (password from WORKBENCH_PASSWORD or a prompt)."""
    parser.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        help="act as this workbench user (password from WORKBENCH_PASSWORD or a prompt); "
        "default: the platform administrator",
    )


def resolve_principal(config: Config, args: argparse.Namespace) -> Principal:
    """The principal a CLI call acts as: ``--as USER`` after a login, else the platform admin.

    The CLI runs on the server, next to the lake and its secrets, so without ``--as`` it
    is the platform administrator; ``--as`` narrows it to a user's scope (see
    docs/architecture.md, "Tenancy").
    """
    user = getattr(args, "as_user", None)
    if not user:
        return Principal.system(f"system:{getpass.getuser()}")
    # a credential, not a setting: read here, never shown in --help or passed to children
    password = os.environ.get("WORKBENCH_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise InvalidInput(
                f"no password for --as {user}",
                hint="set WORKBENCH_PASSWORD or run in a terminal to be prompted",
            )
        password = getpass.getpass(f"password for {user}: ")
    return authenticate(config, user, password, door="cli", source=_local_source())


def _local_source() -> str:
    """The CLI's "client address" for login throttling: the OS user it runs as (every
    call is a new process, so only the shared throttle state links its attempts)."""
    try:
        return f"local:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"local:uid-{os.getuid()}"


def _read_new_password(args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated?) from --password-stdin, a prompt, or a generated one."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InvalidInput("empty password on standard input", hint="pipe one line")
        return password, False
    if sys.stdin.isatty():
        first = getpass.getpass("new password: ")
        if first != getpass.getpass("again: "):
            raise InvalidInput("the passwords differ", hint="type the same password twice")
        return first, False
    return new_password(), True


def _buildings(text: str | None) -> tuple[str, ...]:
    return tuple(b.strip() for b in (text or "").split(",") if b.strip())


def _print_users(users: list[User], as_json: bool) -> None:
    if as_json:
        print(json.dumps([u.to_json() for u in users], indent=2))
        return
    rows = [
        (u.user_id, u.role, u.tenant_id or "*", u.status, ",".join(u.buildings) or "-")
        for u in users
    ]
    print_table(rows, header=("USER", "ROLE", "TENANT", "STATUS", "BUILDINGS"))


def _cmd_add(config: Config, args: argparse.Namespace) -> int:
    by = resolve_principal(config, args)
    password, generated = _read_new_password(args)
    user = UserStore(config).add(
        args.user,
        role=args.role,
        tenant=args.tenant,
        password=password,
        buildings=_buildings(args.buildings),
        by=by,
    )
    if args.json:
        doc = user.to_json() | ({"password": password} if generated else {})
        print(json.dumps(doc, indent=2))
    else:
        say(f"user {user.user_id} added ({user.role} of {user.tenant_id or 'all tenants'})")
        if generated:
            print(f"password for {user.user_id} (shown once): {password}")
    return 0


def _cmd_passwd(config: Config, args: argparse.Namespace) -> int:
    by = resolve_principal(config, args)
    password, generated = _read_new_password(args)
    UserStore(config).set_password(args.user, password, by=by)
    say(f"password of {args.user} changed")
    if generated:
        print(f"new password for {args.user} (shown once): {password}")
    return 0


def _cmd_state(config: Config, args: argparse.Namespace) -> int:
    store = UserStore(config)
    by = resolve_principal(config, args)
    user = store.disable(args.user, by=by) if args.disable else store.enable(args.user, by=by)
    say(f"user {user.user_id} is {'disabled' if user.status == 'disabled' else 'active'}")
    return 0


def _cmd_grant(config: Config, args: argparse.Namespace) -> int:
    store = UserStore(config)
    by = resolve_principal(config, args)
    buildings = _buildings(args.buildings)
    if not buildings:
        raise InvalidInput("no buildings given", hint="pass --buildings B1,B2")
    if args.revoke:
        user = store.revoke(args.user, buildings, by=by)
    else:
        user = store.grant(args.user, buildings, by=by)
    say(f"{user.user_id} now sees: {', '.join(user.buildings) or 'no building'}")
    return 0


def _cmd_list(config: Config, args: argparse.Namespace) -> int:
    by = resolve_principal(config, args)
    by.require("manage_users")
    _print_users(UserStore(config).list(tenant=args.tenant), args.json)
    return 0


def register(verb: Verb) -> None:
    """Add ``workbench users …``."""
    sub = verb_group(
        verb, "users", "workbench users: add, passwd, disable, enable, grant, revoke, list"
    )

    def cmd(name: str, handler: object, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        add_principal_option(p)
        return p

    p = cmd("add", _cmd_add, "add a user (password from --password-stdin, a prompt, or generated)")
    p.add_argument("user", metavar="USER")
    p.add_argument("--tenant", metavar="TENANT_ID", help="the user's tenant (not for admins)")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--buildings", metavar="B1,B2", help="viewers: the buildings they see")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = cmd("passwd", _cmd_passwd, "change a password")
    p.add_argument("user", metavar="USER")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    for name, disable in (("disable", True), ("enable", False)):
        p = cmd(name, _cmd_state, f"{name} a user")
        p.add_argument("user", metavar="USER")
        p.set_defaults(disable=disable)

    for name, revoke in (("grant", False), ("revoke", True)):
        p = cmd(name, _cmd_grant, f"{name} a viewer's access to buildings")
        p.add_argument("user", metavar="USER")
        p.add_argument("--buildings", required=True, metavar="B1,B2")
        p.set_defaults(revoke=revoke)

    p = cmd("list", _cmd_list, "list users")
    p.add_argument("--tenant", metavar="TENANT_ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
