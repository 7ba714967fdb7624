"""Identity tokens and the kernel-side principal: unforgeable, expiring, fail closed."""

from __future__ import annotations

import stat

import pytest

from workbench.dashboards.identity import (
    IDENTITY_ENV,
    load_dashboard_secret,
    secret_path,
    session_principal,
    sign_identity,
    verify_identity,
)
from workbench.exceptions import AccessDenied


def test_tokens_are_bound_to_user_expiry_and_secret():
    token = sign_identity(b"a" * 32, "rita", expiry=1000)
    assert verify_identity(b"a" * 32, token, now=999) == "rita"
    assert verify_identity(b"a" * 32, token, now=1000) is None  # expired
    assert verify_identity(b"b" * 32, token, now=1) is None  # another secret
    assert verify_identity(b"a" * 32, token.replace("|1000|", "|9999|"), now=1) is None
    assert verify_identity(b"a" * 32, "root|9999|", now=1) is None
    assert verify_identity(b"a" * 32, "garbage", now=1) is None


def test_session_principal_in_voila(lake):
    config = lake.config
    secret = load_dashboard_secret(config)
    assert stat.S_IMODE(secret_path(config).stat().st_mode) == 0o600
    good = {IDENTITY_ENV: sign_identity(secret, "rita", expiry=2**40)}
    rita = session_principal(config, environ=good, as_user="root")  # as_user is ignored
    assert (rita.user, rita.role, rita.buildings) == ("rita", "viewer", frozenset({"b-0001"}))
    for env in (
        {"VOILA_BASE_URL": "/"},  # served by Voila without a login
        {IDENTITY_ENV: sign_identity(b"x" * 32, "root", expiry=2**40)},  # forged
        {IDENTITY_ENV: sign_identity(secret, "root", expiry=10)},  # expired
        {IDENTITY_ENV: sign_identity(secret, "nobody", expiry=2**40)},  # unknown user
    ):
        with pytest.raises(AccessDenied):
            session_principal(config, environ=env)


def test_outside_voila_the_notebook_runs_as_the_named_user_or_the_admin(lake):
    assert session_principal(lake.config, environ={}).is_admin
    assert session_principal(lake.config, environ={}, as_user="ops").role == "operator"
