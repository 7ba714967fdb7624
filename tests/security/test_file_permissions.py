"""The workbench's local files are its owner's alone.

The home holds the lake (password hashes in ``registry/users``, the access log),
the secrets, the logs and the demo logins: a group or world bit on any of them lets
other local users read what the tenancy model keeps apart.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from proving.demo import demo_logins_path, seed_demo, welcome_lines
from tests.conftest import isolated_env, run_cli
from workbench.config import Config
from workbench.stack.cli import _print_welcome

pytestmark = pytest.mark.integration


def _open_to_others(root: Path) -> list[str]:
    """Every path under ``root`` (``root`` included) with a group or other permission bit."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        if mode & 0o077:
            found.append(f"{oct(mode & 0o777)} {path.relative_to(root.parent)}")
    return found


def test_home_lake_registry_secrets_and_logs_are_owner_only(tmp_path):
    env = isolated_env(tmp_path / "home")
    # the children inherit what a login shell typically has: the workbench must not rely on it
    previous = os.umask(0o022)
    try:
        _make_everything(env)
    finally:
        os.umask(previous)
    home = tmp_path / "home"
    assert (home / "lake" / "registry" / "users").is_dir()
    assert (home / "lake" / "telemetry").is_dir()
    assert (home / "logs").is_dir()
    assert (home / "secrets").is_dir()
    assert _open_to_others(home) == []


def _make_everything(env: dict[str, str]) -> None:
    """A home, registry, secrets, lake tables, logs and access log through the CLI."""
    steps = [
        ("tenants", "add", "t-1"),
        ("buildings", "add", "b-1", "--tenant", "t-1"),
        ("devices", "provision", "dev-1", "--building", "b-1", "--type", "environment"),
        ("users", "add", "olga", "--role", "operator", "--tenant", "t-1"),
        ("lake", "promote", "co2", "--type", "double"),  # creates the lake tables
        ("up", "broker"),  # a stack component: its logs, pid and state files
        ("down",),
    ]
    for step in steps:
        result = run_cli(env, *step)
        assert result.returncode == 0, f"{step}: {result.stderr}"
    # a failed login: the access log and the login throttle's state
    refused = run_cli(
        {**env, "WORKBENCH_PASSWORD": "wrong-pass"}, "tenants", "list", "--as", "olga"
    )
    assert refused.returncode == 1


def test_workbench_up_shows_where_the_demo_passwords_are_not_the_passwords(tmp_path, capsys):
    config = Config.from_env(isolated_env(tmp_path / "home"))
    for created in (True, False):  # the first `up` and every later one
        logins, was_created = seed_demo(config, devices=20)
        assert was_created is created
        _print_welcome(config, welcome_lines(config, logins, created))
        out = capsys.readouterr().out
        passwords = [login.password for login in logins]
        assert all(len(p) >= 8 for p in passwords)
        assert [p for p in passwords if p in out] == []
        assert str(demo_logins_path(config)) in out
    assert demo_logins_path(config).stat().st_mode & 0o777 == 0o600
    assert all(p in demo_logins_path(config).read_text() for p in passwords)
