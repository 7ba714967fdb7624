"""What the registry verbs say about values out of range, an import's invalid rows, tokens
and an operator's own tenant: one precise line and a usage exit code, never an
internal error."""

from __future__ import annotations

import pytest

from tests.cli_inprocess import workbench
from tests.conftest import add_users, isolated_env
from workbench.config import Config

OPS_PASSWORD = "ops-password-1"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One home for the module: every test below leaves the registry as it found it, but
    for the operator's own building b-2."""
    env = isolated_env(tmp_path_factory.mktemp("cli-limits") / "home")
    for args in (("tenants", "add", "t-1"), ("buildings", "add", "b-1", "--tenant", "t-1")):
        assert workbench(env, *args).returncode == 0
    add_users(Config.from_env(env), {"ops": ("operator", "t-1", OPS_PASSWORD, ())})
    return env


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "internal error" not in lines[0]
    return lines[0]


def test_a_floor_of_twenty_digits_is_a_usage_error_not_an_overflow(env):
    done = workbench(
        env, "devices", "provision", "d-1", "--building", "b-1", "--type", "smoke",
        "--floor", "99999999999999999999",
    )  # fmt: skip
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert "floor 99999999999999999999 is out of range: a floor is from -20 to 300" in line
    assert workbench(env, "devices", "list", "--json").stdout.strip() == "[]"


def test_a_5000_character_building_name_is_refused_in_one_short_line(env):
    done = workbench(env, "buildings", "add", "b-long", "--tenant", "t-1", "--name", "n" * 5000)
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert "building name is 5,000 characters long, at most 100" in line and len(line) < 200
    listed = workbench(env, "buildings", "list").stdout
    assert "b-long" not in listed


def test_an_operator_adds_and_renames_a_building_of_their_own_tenant(env):
    ops = {**env, "WORKBENCH_PASSWORD": OPS_PASSWORD}
    added = workbench(ops, "buildings", "add", "b-2", "--name", "Harbour House", "--as", "ops")
    assert added.returncode == 0, added.stderr
    assert "building b-2 added to tenant t-1" in added.stderr
    renamed = workbench(ops, "buildings", "rename", "b-2", "--name", "Quay House", "--as", "ops")
    assert renamed.returncode == 0, renamed.stderr
    listed = workbench(env, "buildings", "list", "--tenant", "t-1").stdout
    assert "Quay House" in listed and "Harbour House" not in listed
    admin = workbench(env, "buildings", "add", "b-3")  # the admin has no tenant of its own
    assert admin.returncode == 2 and "--tenant" in _one_error_line(admin.stderr)


def test_an_import_lists_all_its_invalid_rows(env, tmp_path):
    csv = tmp_path / "fleet.csv"
    csv.write_text(
        "device_id,building_id,device_type,floor,room\n"
        "d-1,b-1,smoke,99999999999999999999,\n"
        f"d-2,b-1,smoke,1,{'r' * 65}\n"
        "d-3,b-9,smoke,1,\n"
    )
    done = workbench(env, "devices", "import", str(csv), "--quiet")
    assert done.returncode == 6
    assert f"{csv}:2: floor is out of range" in done.stderr
    assert f"{csv}:3: room is longer than 64 characters" in done.stderr
    assert f"{csv}:4: unknown building_id" in done.stderr


def test_a_token_that_would_be_born_expired_is_refused(tmp_path):
    env = isolated_env(tmp_path / "home")  # a token needs no registry
    for ttl in ("-5", "0"):
        done = workbench(env, "devices", "token", "d-1", "--key", "a2V5", "--ttl", ttl)
        assert done.returncode == 2 and done.stdout == ""
        assert f"--ttl {ttl}: a token lives 1 to" in _one_error_line(done.stderr)
