"""Workbench users in ``lake/registry/users``, and authentication.

Passwords are stored only as scrypt hashes. Every change is a Delta commit whose
metadata names the actor; :func:`authenticate` turns a user name and password into
a :class:`~workbench.tenancy.principal.Principal`, logging each failure to the
access log, and spends the same scrypt work on unknown users as on known ones
so response times do not reveal which user names exist; repeated failures are
throttled by :mod:`workbench.tenancy.throttle`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
from typing import Any

import polars as pl
import pyarrow as pa

from workbench.config import Config
from workbench.exceptions import (
    AlreadyExists,
    AuthenticationFailed,
    InvalidInput,
    InvalidState,
    NotFound,
)
from workbench.tenancy.audit import record_access
from workbench.tenancy.passwords import DUMMY_HASH, hash_password, verify_password
from workbench.tenancy.principal import ROLES, Principal, Role
from workbench.tenancy.throttle import LoginThrottle, LoginThrottled

__all__ = ["USERS", "User", "UserStore", "authenticate"]

logger = logging.getLogger(__name__)

_TS = pa.timestamp("us", tz="UTC")
USERS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string()),  # null for admins
        pa.field("role", pa.string(), nullable=False),
        pa.field("buildings", pa.list_(pa.string())),  # viewers: the buildings they see
        pa.field("password_hash", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # active | disabled
        pa.field("created_at", _TS, nullable=False),
        pa.field("created_by", pa.string(), nullable=False),
        pa.field("updated_at", _TS, nullable=False),
        pa.field("updated_by", pa.string(), nullable=False),
    ]
)


@dataclasses.dataclass(frozen=True)
class User:
    """One row of ``registry/users`` without its password hash."""

    user_id: str
    tenant_id: str | None
    role: Role
    buildings: tuple[str, ...]
    status: str
    updated_at: dt.datetime
    updated_by: str

    def principal(self) -> Principal:
        """The principal this user acts as."""
        return Principal(self.user_id, self.role, self.tenant_id, frozenset(self.buildings))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = dataclasses.asdict(self)
        out["buildings"] = list(self.buildings)
        out["updated_at"] = self.updated_at.isoformat()
        return out


class UserStore:
    """The users of one lake. Writers are admins; see :meth:`Principal.require`."""

    def __init__(self, config: Config) -> None:
        from workbench.registry.store import Registry

        self.config = config
        # the users table is read before anyone is logged in (authentication), and
        # every write below checks its own `by` principal first
        self._registry = Registry(config, principal=Principal.system("auth"))

    @property
    def uri(self) -> str:
        """``lake/registry/users``."""
        return self._registry.table_uri("users")

    def frame(self) -> pl.DataFrame:
        """Every user, password hashes included (admin tooling only)."""
        return self._registry.frame("users", USERS)

    def _row(self, user_id: str) -> dict[str, Any]:
        rows = self.frame().filter(pl.col("user_id") == user_id)
        if rows.height == 0:
            raise NotFound(f"user {user_id!r} does not exist", hint="see 'workbench users list'")
        return rows.row(0, named=True)

    def get(self, user_id: str) -> User:
        """One user, or raise NotFound."""
        return _user(self._row(user_id))

    def list(self, *, tenant: str | None = None) -> list[User]:
        """Users, optionally of one tenant."""
        frame = self.frame()
        if tenant is not None:
            frame = frame.filter(pl.col("tenant_id") == tenant)
        return [_user(r) for r in frame.iter_rows(named=True)]

    def add(
        self,
        user_id: str,
        *,
        role: Role | str,
        tenant: str | None,
        password: str,
        buildings: tuple[str, ...] = (),
        by: Principal,
    ) -> User:
        """Add a user; the tenant and buildings must exist and belong together."""
        from workbench.registry.records import valid_id

        by.require("manage_users")
        valid_id(user_id, "user name")
        role = _role(role)
        if role == "admin":
            tenant = None
        elif not tenant:
            raise InvalidInput(f"a {role} belongs to a tenant", hint="pass --tenant TENANT_ID")
        else:
            self._check_scope(tenant, buildings)
        _check_password(password)
        row = {
            "user_id": [user_id],
            "tenant_id": [tenant],
            "role": [role],
            "buildings": [sorted(set(buildings))],
            "password_hash": [hash_password(password)],
            "status": ["active"],
            **_audit(by.user),
        }
        inserted = self._registry.merge(
            "users",
            pa.table(row, schema=USERS),
            "t.user_id = s.user_id",
            actor=by.user,
            operation="add_user",
            insert=True,
        )
        if not inserted:
            raise AlreadyExists(f"user {user_id!r} already exists", hint="choose another name")
        return self.get(user_id)

    def set_password(self, user_id: str, password: str, *, by: Principal) -> None:
        """Change a password (admins for anyone, every user for themselves)."""
        if by.user != user_id:
            by.require("manage_users")
        _check_password(password)
        self._update(user_id, {"password_hash": hash_password(password)}, by, "passwd")

    def disable(self, user_id: str, *, by: Principal) -> User:
        """Disable a user: they can no longer log in."""
        by.require("manage_users")
        return self._update(user_id, {"status": "disabled"}, by, "disable_user")

    def enable(self, user_id: str, *, by: Principal) -> User:
        """Re-enable a disabled user."""
        by.require("manage_users")
        return self._update(user_id, {"status": "active"}, by, "enable_user")

    def grant(self, user_id: str, buildings: tuple[str, ...], *, by: Principal) -> User:
        """Give a viewer access to more buildings (of their own tenant)."""
        by.require("manage_users")
        user = self.get(user_id)
        if user.role != "viewer":
            raise InvalidState(
                f"{user_id} is a {user.role}: building grants apply to viewers",
                hint="operators and analysts see their whole tenant",
            )
        assert user.tenant_id is not None
        self._check_scope(user.tenant_id, buildings)
        merged = sorted(set(user.buildings) | set(buildings))
        return self._update(user_id, {"buildings": merged}, by, "grant")

    def revoke(self, user_id: str, buildings: tuple[str, ...], *, by: Principal) -> User:
        """Take buildings away from a viewer."""
        by.require("manage_users")
        user = self.get(user_id)
        kept = sorted(set(user.buildings) - set(buildings))
        return self._update(user_id, {"buildings": kept}, by, "revoke")

    def _check_scope(self, tenant: str, buildings: tuple[str, ...]) -> None:
        if self._registry.tenants().filter(pl.col("tenant_id") == tenant).height == 0:
            raise NotFound(
                f"tenant {tenant!r} does not exist", hint=f"add it: workbench tenants add {tenant}"
            )
        if not buildings:
            return
        owned = set(self._registry.buildings(tenant=tenant)["building_id"].to_list())
        foreign = sorted(set(buildings) - owned)
        if foreign:
            raise NotFound(
                f"building(s) {', '.join(foreign)} are not buildings of tenant {tenant!r}",
                hint="see 'workbench buildings list'",
            )

    def _update(self, user_id: str, values: dict[str, Any], by: Principal, op: str) -> User:
        row = self._row(user_id)
        row.update(values)
        row.update({"updated_at": _now(), "updated_by": by.user})
        source = pa.Table.from_pylist([row], schema=USERS)
        self._registry.merge(
            "users",
            source,
            "t.user_id = s.user_id",
            actor=by.user,
            operation=op,
            update={c: f"s.{c}" for c in [*values, "updated_at", "updated_by"]},
        )
        return self.get(user_id)


def authenticate(
    config: Config, user: str, password: str, *, door: str = "api", source: str | None = None
) -> Principal:
    """The principal for ``user`` when ``password`` is right and the user active.

    ``source`` is the client's address (or ``local:<os user>`` for the CLI): failed
    logins are throttled per user name and per source (see
    :mod:`workbench.tenancy.throttle`), and while either is backed off every attempt is
    refused with :class:`~workbench.tenancy.throttle.LoginThrottled`, the right password
    included. Raises :class:`AuthenticationFailed`; every failure is written to the
    access log. Unknown users cost one scrypt check like known ones, and are throttled
    like them.
    """
    throttle = LoginThrottle.for_config(config)
    try:
        admission = throttle.admit(user, source)
    except LoginThrottled:
        _denied(config, user, door, "throttled")
        raise
    settled = False
    try:
        rows = UserStore(config).frame().filter(pl.col("user_id") == user)
        row = rows.row(0, named=True) if rows.height else None
        ok = verify_password(password, row["password_hash"] if row else DUMMY_HASH)
        if row is None or not ok:
            settled = True  # a failed guess: it stays counted
            for label, seconds, failures in admission.locked():
                logger.warning(
                    "%s backed off for %.0f s after %d failed logins", label, seconds, failures
                )
            _denied(config, user, door, "unknown user or wrong password")
            raise AuthenticationFailed(
                "invalid user name or password", hint="check both, or ask an admin to reset it"
            )
        if row["status"] != "active":
            _denied(config, user, door, "user disabled")
            raise AuthenticationFailed(
                f"user {user!r} is disabled", hint="ask an admin to enable it"
            )
        throttle.succeeded(admission)
        settled = True
        return _user(row).principal()
    finally:
        if not settled:  # disabled, or the check itself failed: no guess to count
            with contextlib.suppress(AuthenticationFailed):  # logged; keep the first error
                throttle.refund(admission)


def _denied(config: Config, user: str, door: str, detail: str) -> None:
    record_access(
        config, user, action=f"login:{door}", target=user, outcome="denied", detail=detail
    )


def _user(row: dict[str, Any]) -> User:
    return User(
        user_id=row["user_id"],
        tenant_id=row["tenant_id"],
        role=_role(row["role"]),
        buildings=tuple(row["buildings"] or ()),
        status=row["status"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


def _role(value: str) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise InvalidInput(f"invalid role {value!r}", hint=f"choose one of {', '.join(ROLES)}")


PASSWORD_MAX = 1024  # a pass phrase fits; megabytes would only make hashing slow


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise InvalidInput("password too short", hint="use at least 8 characters")
    if len(password) > PASSWORD_MAX:
        raise InvalidInput(
            f"password is {len(password):,} characters long, at most {PASSWORD_MAX} are allowed",
            hint=f"use 8 to {PASSWORD_MAX} characters",
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _audit(actor: str) -> dict[str, list[Any]]:
    now = _now()
    return {"created_at": [now], "created_by": [actor], "updated_at": [now], "updated_by": [actor]}
