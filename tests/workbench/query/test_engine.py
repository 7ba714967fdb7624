"""The query engine in-process: scoped views, DuckDB's own lock-down, Hive typing."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest

from proving.sample import write_sample_lake
from tests.conftest import isolated_env
from workbench.config import Config
from workbench.exceptions import AccessDenied, QueryRefused
from workbench.lake.tables import table_uri
from workbench.query.engine import QuerySession
from workbench.tenancy.principal import Principal


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    cfg = Config.from_env(isolated_env(tmp_path_factory.mktemp("engine") / "home"))
    write_sample_lake(
        cfg,
        events=6000,
        devices=60,
        buildings=3,
        days=1.0,
        start=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    )
    return cfg


def test_viewer_may_not_open_a_session(config):
    with pytest.raises(AccessDenied):
        QuerySession(config, Principal("rita", "viewer", "t-0001", frozenset({"b-0001"})))


def test_scope_is_in_the_views(config):
    frame = pl.read_delta(table_uri(config, "telemetry"))
    with QuerySession(config, Principal("bob", "analyst", "t-0002")) as s:
        got = s.execute("SELECT count(*) AS n FROM telemetry WHERE 1=1 OR tenant_id <> 't-0002'")
        assert got.rows == [(frame.filter(pl.col("tenant_id") == "t-0002").height,)]
        assert "telemetry_rejected" not in s.tables()
    with QuerySession(config, Principal.system()) as s:
        assert s.execute("SELECT count(*) FROM telemetry").rows == [(frame.height,)]
        assert "telemetry_rejected" in s.tables()


def test_duckdb_itself_refuses_files_and_settings_after_lockdown(config):
    with QuerySession(config, Principal("ann", "analyst", "t-0001")) as s:
        con = s._con  # behind the HiveQL checks: the second wall
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_csv('/etc/passwd')")
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.Error):
            con.execute("SET python_enable_replacements = true")


def test_refusal_reported_to_audit(config):
    seen = []
    with QuerySession(
        config, Principal("ann", "analyst", "t-0001"), audit=lambda *a: seen.append(a)
    ) as s:
        s.execute("SHOW TABLES")
        with pytest.raises(QueryRefused):
            s.execute("COPY telemetry TO '/tmp/x.csv'")
    assert [(a[1], a[2]) for a in seen] == [
        ("SHOW TABLES", "ok"),
        ("COPY telemetry TO '/tmp/x.csv'", "denied"),
    ]


def test_new_commits_are_seen_by_an_open_session(config, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(config, lake=str(tmp_path / "lake"))
    with QuerySession(cfg, Principal.system()) as s:
        assert s.execute("SELECT count(*) FROM telemetry").rows == [(0,)]
        write_sample_lake(cfg, events=100, devices=10, days=0.1)
        assert s.execute("SELECT count(*) FROM telemetry").rows == [(100,)]


def test_hive_types_of_results(config):
    with QuerySession(config, Principal.system()) as s:
        r = s.execute(
            "SELECT seq, floor, temperature, smoke, ts, event_date, device_id, "
            "sum(seq) OVER () AS total, collect_list(seq) OVER () AS l FROM telemetry LIMIT 1"
        )
    assert [c.hive_type for c in r.columns] == [
        "BIGINT",
        "INT",
        "DOUBLE",
        "BOOLEAN",
        "TIMESTAMP",
        "DATE",
        "STRING",
        "BIGINT",
        "ARRAY<BIGINT>",
    ]
