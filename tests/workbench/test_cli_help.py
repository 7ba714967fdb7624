"""``--help`` shows a command's own options; the environment is on ``workbench help env``."""

from __future__ import annotations

from pathlib import Path

from tests.cli_inprocess import workbench
from tests.conftest import isolated_env


def test_help_shows_the_commands_own_options_and_the_environment_only_on_help_env(
    tmp_path: Path,
):
    env = isolated_env(tmp_path / "home", WORKBENCH_HIVE_PORT="10123")
    query = workbench(env, "query", "--help")
    assert query.returncode == 0
    assert "--as USER" in query.stdout and "--csv" in query.stdout
    assert "WORKBENCH_HOME" not in query.stdout and len(query.stdout.splitlines()) < 25
    top = workbench(env, "--help")
    assert "WORKBENCH_LAKE" not in top.stdout and "workbench help env" in top.stdout
    settings = workbench(env, "help", "env")
    assert settings.returncode == 0
    assert "WORKBENCH_HIVE_PORT          10123  [10000]" in settings.stdout
    nested = workbench(env, "help", "devices", "provision")
    assert nested.returncode == 0 and "--floor N" in nested.stdout
    unknown = workbench(env, "help", "nope")
    assert unknown.returncode == 1
    assert "no help on 'nope'; ask for one of: env, up" in unknown.stderr
