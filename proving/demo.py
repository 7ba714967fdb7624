"""Demo data for ``workbench up``: the simulated fleet's tenants and buildings, and one
user per role and tenant, so that every door can be tried at once.

``workbench up`` finds :func:`seed` through the ``workbench.demo`` entry-point group
(the product does not import this package). Passwords are random and kept only in
``$WORKBENCH_HOME/demo-logins.txt`` (mode 0600): ``workbench up`` prints where that
file is, never the passwords, whose output is easily redirected to a file others can
read. Seeding is idempotent: an existing user keeps its password, an existing tenant or
building is left alone.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from workbench.config import Config
from workbench.exceptions import AlreadyExists
from workbench.filemodes import private_dir
from workbench.tenancy.passwords import new_password
from workbench.tenancy.principal import Principal, Role
from workbench.tenancy.users import UserStore

__all__ = ["DemoLogin", "demo_logins_path", "seed", "seed_demo", "welcome_lines"]

TENANT_NAMES = {"t-0001": "Contoso Properties", "t-0002": "Northwind Residences"}
_SEEDER = Principal.system("demo-seed")


@dataclasses.dataclass(frozen=True)
class DemoLogin:
    """One demo account."""

    user: str
    role: Role
    tenant_id: str | None
    buildings: tuple[str, ...]
    password: str


def demo_logins_path(config: Config) -> Path:
    """``$WORKBENCH_HOME/demo-logins.txt``, readable by its owner only."""
    return config.home / "demo-logins.txt"


def seed(config: Config, *, devices: int) -> list[str]:
    """The ``workbench.demo`` plug-in: seed what is missing for a fleet of ``devices``;
    the lines ``workbench up`` prints after the addresses."""
    logins, created = seed_demo(config, devices=devices)
    return welcome_lines(config, logins, created)


def welcome_lines(config: Config, logins: list[DemoLogin], created: bool) -> list[str]:
    """Who can log in, and where the passwords are (never the passwords: ``up``'s output is
    easily redirected to a file anyone can read)."""
    state = "created; " if created else ""
    lines = [
        f"  demo logins ({state}passwords in {demo_logins_path(config)}, readable by you only):"
    ]
    for login in logins:
        scope = login.tenant_id or "all tenants"
        if login.buildings:
            scope += " / " + ",".join(login.buildings)
        lines.append(f"    {login.user:<12} {login.role:<9} {scope}")
    return lines


def seed_demo(config: Config, *, devices: int) -> tuple[list[DemoLogin], bool]:
    """Create the demo tenants, buildings and users when missing.

    Returns every demo login and whether any was created by this call.
    """
    from simulator.fleet import Fleet
    from workbench.registry import Registry

    fleet = Fleet.generate(devices)
    registry = Registry(config, principal=_SEEDER)
    tenants = set(registry.tenants()["tenant_id"])
    for tenant in fleet.tenant_ids:
        if tenant not in tenants:
            registry.add_tenant(tenant, name=TENANT_NAMES.get(tenant, tenant))
    buildings = set(registry.buildings()["building_id"])
    for building in fleet.buildings:
        if building.building_id not in buildings:
            registry.add_building(
                building.building_id, tenant=building.tenant_id, name=building.name
            )

    wanted: list[tuple[str, Role, str | None, tuple[str, ...]]] = [
        ("demo-admin", "admin", None, ())
    ]
    for n, tenant in enumerate(fleet.tenant_ids[:2], start=1):
        # a tiny fleet may leave a tenant without a building: its viewer then sees nothing
        owned = [b.building_id for b in fleet.buildings if b.tenant_id == tenant]
        first = tuple(owned[:1])
        wanted += [
            (f"operator{n}", "operator", tenant, ()),
            (f"analyst{n}", "analyst", tenant, ()),
            (f"viewer{n}", "viewer", tenant, first),
        ]
    known = _read_logins(demo_logins_path(config))
    users = UserStore(config)
    existing = {u.user_id for u in users.list()}
    created = False
    logins = []
    for user, role, owner, granted in wanted:
        password = known.get(user, "")
        if user not in existing:
            password = new_password()
            try:
                users.add(
                    user,
                    role=role,
                    tenant=owner,
                    password=password,
                    buildings=granted,
                    by=_SEEDER,
                )
                created = True
            except AlreadyExists:  # a concurrent `up` won the race
                password = known.get(user, "")
        logins.append(DemoLogin(user, role, owner, granted, password))
        if created:  # written as we go: a failure later must not lose a password
            _write_logins(demo_logins_path(config), logins)
    return logins, created


def _write_logins(path: Path, logins: list[DemoLogin]) -> None:
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# user\trole\ttenant\tbuildings\tpassword\n")
        for login in logins:
            out.write(
                f"{login.user}\t{login.role}\t{login.tenant_id or '*'}\t"
                f"{','.join(login.buildings) or '*'}\t{login.password}\n"
            )
    path.chmod(0o600)


def _read_logins(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        if line and not line.startswith("#"):
            parts = line.split("\t")
            if len(parts) == 5:
                out[parts[0]] = parts[4]
    return out
