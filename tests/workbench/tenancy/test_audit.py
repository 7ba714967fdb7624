"""The access log keeps every entry while this process keeps its table open: beside another
process's appends, and after the table was deleted under it."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import time

import polars as pl

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


def test_a_servers_entries_of_a_moment_share_one_commit_in_order(tmp_path, monkeypatch) -> None:
    """HiveServer2 writes the entries queued together in one commit (a commit per
    statement slowed the next one), each timed when it was queued, and writes what is
    queued when it closes."""
    from deltalake import DeltaTable

    from workbench.query.hiveserver2 import sessions

    config = Config.from_env(isolated_env(tmp_path / "home"))
    record_access(config, ADMIN, action="query", target="before", outcome="ok")
    version = DeltaTable(access_log_uri(config)).version()
    # gathered until the server closes, whatever the machine's speed
    monkeypatch.setattr(sessions, "_AUDIT_GATHER_S", 600.0)
    backend = sessions.Backend(config)
    for n in range(5):
        backend.audit(ANN, "query", f"statement {n}", "ok", "flight: rows=1")
    queued_by = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    assert DeltaTable(access_log_uri(config)).version() == version  # not written yet
    backend.close()
    assert DeltaTable(access_log_uri(config)).version() == version + 1
    log = access_log(config, principal=ADMIN).filter(pl.col("target") != "before")
    assert sorted(log["target"].to_list()) == [f"statement {n}" for n in range(5)]
    assert set(log["tenant_id"].to_list()) == {"t-0001"}
    assert log["ts"].max() <= queued_by  # timed when queued, not when written
