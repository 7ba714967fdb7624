"""The hub's pure rules: OS account names, which files count as exposed, token shapes."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import isolated_env
from workbench.config import Config
from workbench.exceptions import InvalidInput, InvalidState
from workbench.hub.accounts import os_user_name
from workbench.hub.api import verify_hub_token
from workbench.hub.kernel import hive_url
from workbench.hub.runtime import exposed_paths


def test_workbench_users_get_prefixed_os_accounts_and_odd_names_none():
    assert os_user_name("root") == "wb-root"  # never the OS's own root
    assert os_user_name("Ann") == "wb-ann"
    for bad in ("a" * 40, "ann.smith", "t:1", "ann smith"):
        with pytest.raises(InvalidInput):
            os_user_name(bad)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every account can reach (pytest's own tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="wb-hub-test-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_a_home_others_can_read_is_exposed_and_a_private_one_is_not(shared):
    home = shared / "home"
    (home / "lake" / "registry" / "users").mkdir(parents=True)
    (home / "secrets").mkdir()
    for path in shared.rglob("*"):
        path.chmod(0o755)
    config = Config.from_env(isolated_env(home))
    assert home in exposed_paths(config)
    assert home / "lake" / "registry" / "users" in exposed_paths(config)
    home.chmod(0o700)
    (home / "lake").chmod(0o700)
    assert exposed_paths(config) == []
    # a lake elsewhere, readable by others, is exposed even when the home is private
    lake = dataclasses.replace(config, lake=str(shared / "elsewhere"))
    (shared / "elsewhere").mkdir(mode=0o755)
    (shared / "elsewhere").chmod(0o755)
    assert exposed_paths(lake) == [shared / "elsewhere"]


def test_only_token_shaped_passwords_are_taken_to_the_hub(tmp_path):
    config = Config.from_env(isolated_env(tmp_path / "home"))
    # not a token's shape: decided without asking any hub
    assert not verify_hub_token(config, "ann", "ann-password-1")
    # token-shaped, but no hub answers on this config's port: refused, not an error
    assert not verify_hub_token(config, "ann", "0123456789abcdef0123456789abcdef")


def test_the_kernel_needs_the_hubs_identity():
    with pytest.raises(InvalidState):
        hive_url({})
    url = hive_url({"JUPYTERHUB_USER": "a b", "JUPYTERHUB_API_TOKEN": "t/k"})
    assert url == "hive://a%20b:t%2Fk@127.0.0.1:10000/default?auth=CUSTOM"


def test_templates_are_root_owned_read_only_and_a_users_link_is_moved_aside(tmp_path):
    from workbench.hub.spawner import TEMPLATES_DIR, _copy_templates, templates_source

    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    (home / TEMPLATES_DIR).symlink_to(elsewhere)  # a user's trap: root must not follow it
    _copy_templates(home)
    assert list(elsewhere.iterdir()) == []
    assert [p.name for p in home.glob(f"{TEMPLATES_DIR}.moved-*")] != []
    target = home / TEMPLATES_DIR
    assert not target.is_symlink()
    assert (target.stat().st_uid, target.stat().st_mode & 0o777) == (0, 0o555)
    expected = sorted(p.name for p in templates_source().glob("*.ipynb"))
    assert sorted(p.name for p in target.iterdir()) == expected
    assert {p.stat().st_mode & 0o777 for p in target.iterdir()} == {0o444}
    _copy_templates(home)  # again at the next start: replaced, not moved aside
    assert len(list(home.glob(f"{TEMPLATES_DIR}.moved-*"))) == 1
