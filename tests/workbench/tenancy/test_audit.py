"""The access log keeps every entry while this process keeps its table open: beside another
process's appends, and after the table was deleted under it."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.conftest import isolated_env
from workbench.config import Config
from workbench.tenancy.audit import access_log, access_log_uri, record_access
from workbench.tenancy.principal import Principal

ADMIN = Principal("root", "admin", None)
ANN = Principal("ann", "analyst", "t-0001")


def _targets(config: Config) -> list[str]:
    return access_log(config, principal=ADMIN)["target"].to_list()


def test_entries_of_another_process_in_between_are_kept(tmp_path):
    env = isolated_env(tmp_path / "home")
    config = Config.from_env(env)
    record_access(config, ANN, action="query", target="first", outcome="ok")
    other = (
        "from workbench.config import Config\n"
        "from workbench.tenancy.audit import record_access\n"
        "import os\n"
        "record_access(Config.from_env(dict(os.environ)), 'bob', action='login', "
        "target='second', outcome='denied')\n"
    )
    subprocess.run([sys.executable, "-c", other], env=env, check=True, timeout=120)
    record_access(config, ANN, action="query", target="third", outcome="ok")
    assert _targets(config) == ["first", "second", "third"]


def test_an_access_log_deleted_under_the_process_is_written_afresh(tmp_path):
    config = Config.from_env(isolated_env(tmp_path / "home"))
    record_access(config, ANN, action="query", target="before", outcome="ok")
    record_access(config, ANN, action="query", target="kept open", outcome="ok")
    shutil.rmtree(access_log_uri(config))
    record_access(config, ANN, action="query", target="after", outcome="ok")
    assert _targets(config) == ["after"]
