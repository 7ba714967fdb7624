"""Who is asking, and what they may see: the ``Principal`` every data access takes.

Roles:

* ``admin`` — the platform operator: every tenant, every building, every action;
* ``operator`` — provisions and manages devices of one tenant;
* ``analyst`` — reads (queries) one tenant's data;
* ``viewer`` — reads the dashboards of the buildings assigned to them, nothing else.

Filtering happens here, in the library, never only in a UI: readers call
:meth:`Principal.scope_filter` (a polars expression), :meth:`Principal.scope_arrow`
(an Arrow dataset filter) or :meth:`Principal.scope_sql` (a SQL predicate) and
writers call :meth:`Principal.require`.

>>> viewer = Principal("rita", "viewer", "t-acme", frozenset({"b-1"}))
>>> [viewer.can_read(t, b) for t, b in [("t-acme", "b-1"), ("t-acme", "b-2"), ("t-x", "b-1")]]
[True, False, False]
>>> viewer.scope_sql()
"(tenant_id = 't-acme' AND building_id IN ('b-1'))"
>>> Principal.system().scope_sql()
'TRUE'
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import polars as pl
import pyarrow.compute as pc

from workbench.exceptions import AccessDenied

__all__ = ["ROLES", "Action", "Principal", "Role"]

Role = Literal["admin", "operator", "analyst", "viewer"]
ROLES: tuple[Role, ...] = get_args(Role)

Action = Literal["read", "provision", "manage_users", "manage_tenants", "query"]
"""What a principal wants to do; see :meth:`Principal.may`."""

_ALLOWED: dict[Role, frozenset[str]] = {
    "admin": frozenset(get_args(Action)),
    "operator": frozenset({"read", "provision", "query"}),
    "analyst": frozenset({"read", "query"}),
    "viewer": frozenset({"read"}),
}


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated user: name, role, tenant (None only for admins) and, for viewers,
    the buildings they were granted."""

    user: str
    role: Role
    tenant_id: str | None
    buildings: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}")
        if self.role != "admin" and not self.tenant_id:
            raise ValueError(f"a {self.role} belongs to a tenant")

    @classmethod
    def system(cls, user: str = "system") -> Principal:
        """The platform administrator the server-side CLI acts as by default."""
        return cls(user=user, role="admin", tenant_id=None)

    @property
    def is_admin(self) -> bool:
        """True for the platform administrator role."""
        return self.role == "admin"

    def may(self, action: Action) -> bool:
        """Whether the role allows ``action`` at all (scope is checked separately)."""
        return action in _ALLOWED[self.role]

    def can_read(self, tenant_id: str | None, building_id: str | None = None) -> bool:
        """Whether rows of ``tenant_id`` (and ``building_id``) are in scope."""
        if self.is_admin:
            return True
        if tenant_id != self.tenant_id:
            return False
        if self.role == "viewer":
            return building_id is not None and building_id in self.buildings
        return True

    def can_write(self, tenant_id: str | None) -> bool:
        """Whether devices of ``tenant_id`` may be provisioned or changed."""
        return self.is_admin or (self.role == "operator" and tenant_id == self.tenant_id)

    def require(
        self, action: Action, *, tenant_id: str | None = None, building_id: str | None = None
    ) -> None:
        """Raise :class:`AccessDenied` unless the principal may do ``action`` in that scope."""
        allowed = self.may(action)
        if allowed and action == "provision":
            allowed = self.can_write(tenant_id)
        elif allowed and tenant_id is not None and action in ("read", "query"):
            allowed = self.can_read(tenant_id, building_id)
        elif allowed and action in ("manage_users", "manage_tenants"):
            allowed = self.is_admin
        if not allowed:
            where = f" in building {building_id!r}" if building_id else ""
            where += f" of tenant {tenant_id!r}" if tenant_id else ""
            raise AccessDenied(
                f"not authorized: {self.user} ({self.role}) may not {action}{where}",
                hint="ask an admin for access",
            )

    def scope_filter(
        self, *, tenant_col: str = "tenant_id", building_col: str = "building_id"
    ) -> pl.Expr:
        """A polars predicate keeping exactly the rows this principal may read."""
        if self.is_admin:
            return pl.lit(True)
        expr = pl.col(tenant_col) == pl.lit(self.tenant_id)
        if self.role == "viewer":
            expr = expr & pl.col(building_col).is_in(sorted(self.buildings))
        return expr

    def scope_arrow(
        self, *, tenant_col: str = "tenant_id", building_col: str | None = "building_id"
    ) -> pc.Expression | None:
        """The same predicate as an Arrow dataset filter (None for admins: everything).

        ``building_col=None`` is a table without buildings, of which a viewer sees no row.
        """
        if self.is_admin:
            return None
        expr = pc.field(tenant_col) == self.tenant_id
        if self.role == "viewer":
            if building_col is None:
                return pc.scalar(False)
            expr = expr & pc.field(building_col).isin(sorted(self.buildings))
        return expr

    def scope_sql(self, *, tenant_col: str = "tenant_id", building_col: str = "building_id") -> str:
        """The same predicate as SQL, for the query engine (values are quoted literals)."""
        if self.is_admin:
            return "TRUE"
        assert self.tenant_id is not None
        sql = f"{tenant_col} = {_sql_str(self.tenant_id)}"
        if self.role == "viewer":
            listed = ", ".join(_sql_str(b) for b in sorted(self.buildings)) or "NULL"
            sql = f"({sql} AND {building_col} IN ({listed}))"
        return sql
