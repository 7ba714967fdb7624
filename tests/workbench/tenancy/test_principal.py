"""Principal scope rules: pure logic, checked against a table of rows."""

from __future__ import annotations

import polars as pl
import pytest

from workbench.exceptions import AccessDenied
from workbench.tenancy import Principal
from workbench.tenancy.passwords import hash_password, verify_password

ROWS = pl.DataFrame(
    {
        "tenant_id": ["t-a", "t-a", "t-b", "t-b", None],
        "building_id": ["b-a1", "b-a2", "b-b1", "b-a1", "b-x"],  # t-b reuses the id b-a1
        "value": [1, 2, 3, 4, 5],
    }
)

ADMIN = Principal.system("root")
OPERATOR_A = Principal("olga", "operator", "t-a")
ANALYST_A = Principal("anna", "analyst", "t-a")
VIEWER_A1 = Principal("vic", "viewer", "t-a", frozenset({"b-a1"}))
VIEWER_NONE = Principal("nobody", "viewer", "t-a")


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        (ADMIN, [1, 2, 3, 4, 5]),
        (OPERATOR_A, [1, 2]),
        (ANALYST_A, [1, 2]),
        (VIEWER_A1, [1]),  # not row 4: same building id, other tenant
        (VIEWER_NONE, []),
    ],
    ids=["admin", "operator", "analyst", "viewer", "viewer-without-buildings"],
)
def test_scope_filter_and_sql_agree(principal, expected):
    via_polars = ROWS.filter(principal.scope_filter())["value"].to_list()
    via_sql = (
        pl.SQLContext(rows=ROWS)
        .execute(
            f"SELECT value FROM rows WHERE {principal.scope_sql()} ORDER BY value", eager=True
        )["value"]
        .to_list()
    )
    assert via_polars == expected
    assert via_sql == expected


def test_scope_sql_quotes_hostile_values():
    evil = Principal("eve", "viewer", "t-a' OR '1'='1", frozenset({"b') OR TRUE --"}))
    out = pl.SQLContext(rows=ROWS).execute(
        f"SELECT value FROM rows WHERE {evil.scope_sql()}", eager=True
    )
    assert out.height == 0


@pytest.mark.parametrize(
    ("principal", "action", "tenant", "allowed"),
    [
        (ADMIN, "provision", "t-b", True),
        (OPERATOR_A, "provision", "t-a", True),
        (OPERATOR_A, "provision", "t-b", False),
        (ANALYST_A, "provision", "t-a", False),
        (VIEWER_A1, "provision", "t-a", False),
        (ANALYST_A, "query", "t-a", True),
        (ANALYST_A, "query", "t-b", False),
        (VIEWER_A1, "query", None, False),
        (OPERATOR_A, "manage_users", None, False),
        (ADMIN, "manage_users", None, True),
    ],
)
def test_require(principal, action, tenant, allowed):
    if allowed:
        principal.require(action, tenant_id=tenant)
    else:
        with pytest.raises(AccessDenied, match="not authorized"):
            principal.require(action, tenant_id=tenant)


def test_non_admins_belong_to_a_tenant():
    with pytest.raises(ValueError, match="belongs to a tenant"):
        Principal("x", "analyst", None)


def test_password_hashes_are_salted_and_verify():
    first, second = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert first != second
    assert "s3cret" not in first
    assert verify_password("s3cret-pass", first)
    assert not verify_password("s3cret-pasS", first)
    assert not verify_password("s3cret-pass", "md5$abc")
