"""``workbench up`` seeds demo data only through ``workbench.demo`` plug-ins, and goes on
without them."""

from __future__ import annotations

import pytest

from tests.conftest import isolated_env
from workbench import plugins
from workbench.config import Config
from workbench.stack import cli


def test_without_a_demo_plugin_up_says_there_is_no_demo_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plugins, "names", lambda group: ())
    config = Config.from_env(isolated_env(tmp_path / "home"))
    lines = cli._seed_demo(config, devices=20)
    assert lines == ["  no demo data: no workbench.demo plug-in is installed"]
    cli._print_welcome(config, lines)
    assert capsys.readouterr().out.rstrip().endswith(lines[0])
    assert not (tmp_path / "home" / "demo-logins.txt").exists()


@pytest.mark.integration
def test_the_installed_demo_plugin_seeds_the_demo_users(tmp_path):
    assert "demo" in plugins.names(cli.DEMO_GROUP)
    config = Config.from_env(isolated_env(tmp_path / "home"))
    lines = cli._seed_demo(config, devices=20)
    assert lines[0].startswith("  demo logins (created; passwords in ")
    assert [line.split()[0] for line in lines[1:]][:2] == ["demo-admin", "operator1"]
