"""Users: passwords, authentication failures, the access log, admin-only management."""

from __future__ import annotations

import hashlib

import pytest

from tests.workbench.tenancy.conftest import ADMIN, PASSWORD
from workbench.config import Config
from workbench.exceptions import (
    AccessDenied,
    AlreadyExists,
    AuthenticationFailed,
    InvalidInput,
    NotFound,
)
from workbench.tenancy import Principal, UserStore, access_log, authenticate


def test_login_yields_the_users_principal(tenancy):
    vic = authenticate(tenancy.config, "vic", PASSWORD)
    assert vic == Principal("vic", "viewer", "t-a", frozenset({"b-a1"}))
    assert authenticate(tenancy.config, "ada", PASSWORD).is_admin


@pytest.mark.parametrize("user", ["anna", "nobody-by-this-name"])
def test_wrong_password_and_unknown_user_look_the_same_and_are_logged(tenancy, user):
    with pytest.raises(AuthenticationFailed) as info:
        authenticate(tenancy.config, user, "not-the-password", door="test")
    assert str(info.value).startswith("invalid user name or password")
    log = access_log(tenancy.config, principal=ADMIN)
    mine = log.filter((log["user"] == user) & (log["action"] == "login:test"))
    assert mine["outcome"].to_list()[-1] == "denied"


def test_unknown_users_cost_the_same_scrypt_work_as_wrong_passwords(tenancy, monkeypatch):
    """No timing assertion: the same expensive work is done on both paths, which is what
    keeps their response times alike (the figures are in the tenancy benchmark note)."""
    calls: list[tuple[int, int, int]] = []
    real = hashlib.scrypt

    def counting(password, *, salt, n, r, p, dklen=64, maxmem=0):
        calls.append((n, r, p))
        return real(password, salt=salt, n=n, r=r, p=p, dklen=dklen)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    for user in ("anna", "no-such-user"):
        with pytest.raises(AuthenticationFailed):
            authenticate(tenancy.config, user, "wrong-password")
    assert len(calls) == 2 and calls[0] == calls[1]


def test_disabled_user_cannot_log_in_until_enabled(tenancy):
    users = UserStore(tenancy.config)
    users.add("temp", role="analyst", tenant="t-a", password=PASSWORD, by=ADMIN)
    users.disable("temp", by=ADMIN)
    with pytest.raises(AuthenticationFailed, match="disabled"):
        authenticate(tenancy.config, "temp", PASSWORD)
    users.enable("temp", by=ADMIN)
    assert authenticate(tenancy.config, "temp", PASSWORD).user == "temp"


def test_passwords_are_stored_only_as_scrypt_hashes(tenancy):
    stored = UserStore(tenancy.config).frame()
    assert all(h.startswith("scrypt$") for h in stored["password_hash"])
    assert not any(PASSWORD in h for h in stored["password_hash"])


def test_only_admins_manage_users(tenancy):
    users = UserStore(tenancy.config)
    olga = authenticate(tenancy.config, "olga", PASSWORD)
    with pytest.raises(AccessDenied, match="not authorized"):
        users.add("sneaky", role="admin", tenant=None, password=PASSWORD, by=olga)
    with pytest.raises(AccessDenied):
        users.grant("vic", ("b-b1",), by=olga)
    # everyone may change their own password
    users.set_password("olga", "a-new-password", by=olga)
    assert authenticate(tenancy.config, "olga", "a-new-password").user == "olga"
    users.set_password("olga", PASSWORD, by=ADMIN)


def test_user_validation(tenancy):
    users = UserStore(tenancy.config)
    with pytest.raises(AlreadyExists):
        users.add("anna", role="analyst", tenant="t-a", password=PASSWORD, by=ADMIN)
    with pytest.raises(InvalidInput, match="too short"):
        users.add("shorty", role="analyst", tenant="t-a", password="abc", by=ADMIN)
    with pytest.raises(InvalidInput, match="belongs to a tenant"):
        users.add("floating", role="viewer", tenant=None, password=PASSWORD, by=ADMIN)
    with pytest.raises(NotFound, match="not buildings of tenant 't-a'"):
        users.add(
            "v2", role="viewer", tenant="t-a", password=PASSWORD, buildings=("b-b1",), by=ADMIN
        )
    with pytest.raises(InvalidInput, match="invalid role"):
        users.add("r", role="superuser", tenant="t-a", password=PASSWORD, by=ADMIN)


def test_grant_and_revoke_change_what_a_viewer_sees(tenancy):
    users = UserStore(tenancy.config)
    users.add("vera", role="viewer", tenant="t-a", password=PASSWORD, buildings=("b-a1",), by=ADMIN)
    assert tenancy.registry("vic").buildings()["building_id"].to_list() == ["b-a1"]
    users.grant("vera", ("b-a2",), by=ADMIN)
    assert authenticate(tenancy.config, "vera", PASSWORD).buildings == {"b-a1", "b-a2"}
    users.revoke("vera", ("b-a1",), by=ADMIN)
    assert authenticate(tenancy.config, "vera", PASSWORD).buildings == {"b-a2"}


def test_a_store_without_users_answers_not_found_and_an_empty_list(tmp_path):
    store = UserStore(Config.from_env({"WORKBENCH_HOME": str(tmp_path)}))
    with pytest.raises(NotFound, match="user 'nobody' does not exist"):
        store.get("nobody")
    assert store.list() == []
