"""A query session's bounds, in-process: the statement timeout, the result byte cap,
and the settings behind them."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import isolated_env
from workbench.config import Config
from workbench.exceptions import ConfigError, QueryFailed
from workbench.query.engine import QuerySession
from workbench.tenancy.principal import Principal

ANN = Principal("ann", "analyst", "t-0001")

# statements that, unbounded, run for many minutes or until memory runs out
RUNAWAYS = {
    "aggregate over range": "SELECT count(*) FROM range(5000000000000)",
    "streamed filter over range": "SELECT i FROM range(5000000000000) t(i) WHERE hash(i) = 42",
    "generate_series": "SELECT count(*) FROM generate_series(1, 5000000000000)",
    "recursive CTE": "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
    "SELECT count(*) FROM r",
}


@pytest.fixture
def config(tmp_path):
    return Config.from_env(isolated_env(tmp_path / "home"))


@pytest.mark.parametrize("sql", list(RUNAWAYS.values()), ids=list(RUNAWAYS))
def test_runaway_statement_is_stopped_at_the_timeout(config, sql):
    with QuerySession(config, ANN, statement_timeout=1.0) as session:
        with pytest.raises(QueryFailed) as info:
            session.execute(sql)
        assert info.value.message == "the statement ran longer than 1 s and was stopped"
        assert "WORKBENCH_HIVE_STATEMENT_TIMEOUT" in str(info.value.hint)
        # nothing of the timeout reaches the session's next statements
        for n in range(3):
            assert session.execute(f"SELECT {n} AS n").rows == [(n,)]


def test_an_interrupt_before_the_timeout_is_a_cancel(config):
    audit: list[tuple[str, str]] = []
    with QuerySession(
        config, ANN, statement_timeout=600.0, audit=lambda p, q, o, d: audit.append((o, d))
    ) as session:
        threading.Timer(0.5, session.interrupt).start()
        with pytest.raises(QueryFailed) as info:
            session.execute(RUNAWAYS["aggregate over range"])
        assert str(info.value) == "the statement was cancelled"
    assert audit == [("error", "the statement was cancelled")]


def test_timeout_is_audited_as_an_error(config):
    audit: list[tuple[str, str, str]] = []
    with (
        QuerySession(
            config, ANN, statement_timeout=0.5, audit=lambda p, q, o, d: audit.append((q, o, d))
        ) as session,
        pytest.raises(QueryFailed),
    ):
        session.execute(RUNAWAYS["aggregate over range"])
    [(query, outcome, detail)] = audit
    assert (query, outcome) == (RUNAWAYS["aggregate over range"], "error")
    assert detail.startswith("the statement ran longer than 0.5 s and was stopped")


def test_result_over_the_byte_cap_is_refused_with_a_hint(config):
    wide = "SELECT repeat('x', 1000) AS s FROM range({n})"
    with QuerySession(config, ANN, max_bytes=1 << 20) as session:
        assert len(session.execute(wide.format(n=500)).rows) == 500  # ~0.5 MB
        with pytest.raises(QueryFailed) as info:
            session.execute(wide.format(n=5000))  # ~5 MB
    assert info.value.message == "the result is larger than 1048576 bytes"
    assert "WORKBENCH_HIVE_MAX_RESULT_BYTES" in str(info.value.hint)


def test_the_defaults_come_from_the_config(tmp_path):
    config = Config.from_env(
        isolated_env(
            tmp_path / "home",
            WORKBENCH_HIVE_STATEMENT_TIMEOUT="7.5",
            WORKBENCH_HIVE_MAX_RESULT_BYTES="4096",
        )
    )
    with QuerySession(config, ANN) as session:
        assert (session.statement_timeout, session.max_bytes) == (7.5, 4096)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WORKBENCH_HIVE_STATEMENT_TIMEOUT", "0"),
        ("WORKBENCH_HIVE_STATEMENT_TIMEOUT", "five minutes"),
        ("WORKBENCH_HIVE_MAX_RESULT_BYTES", "512MiB"),
        ("WORKBENCH_HIVE_MAX_CONCURRENT_PER_USER", "0"),
        ("WORKBENCH_HIVE_MAX_CONNECTIONS", "-1"),
        ("WORKBENCH_HIVE_MAX_CONNECTIONS_PER_USER", "many"),
    ],
)
def test_bad_limit_settings_are_named(tmp_path, variable, value):
    with pytest.raises(ConfigError) as info:
        Config.from_env(isolated_env(tmp_path / "home", **{variable: value}))
    assert f"invalid {variable}={value!r}" in str(info.value)
