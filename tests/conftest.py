"""Shared fixtures: isolated WORKBENCH_HOMEs on free ports and the real embedded broker.

Tests never talk to the default ports, so they run beside a `make demo` stack.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.config import Config
from workbench.kafka import ensure_topic
from workbench.ops.scratch import PORT_VARS, free_port
from workbench.stack import supervisor


def isolated_env(home: Path, **overrides: str) -> dict[str, str]:
    """os.environ without workbench settings, plus a private home and free ports."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WORKBENCH_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env["WORKBENCH_HOME"] = str(home)
    for var in PORT_VARS:
        env[var] = str(free_port())
    env.update(overrides)
    return env


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real `workbench` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def wb_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An isolated environment for CLI tests; whatever it started is stopped afterwards."""
    env = isolated_env(tmp_path / "home")
    yield env
    run_cli(env, "down")


@pytest.fixture(scope="session")
def broker_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """One real embedded broker (Tansu) for the session, started through the supervisor."""
    home = tmp_path_factory.mktemp("broker-home")
    config = Config.from_env(isolated_env(home))
    supervisor.up(config, only=["broker"])
    yield config
    supervisor.down(config)


@pytest.fixture
def kafka_config(broker_config: Config, tmp_path: Path) -> Config:
    """The session broker with a fresh topic and a fresh lake for this test."""
    config = dataclasses.replace(
        broker_config,
        topic=f"telemetry-{uuid.uuid4().hex[:8]}",
        # more partitions than the default 2: rebalances between members move more of them
        topic_partitions=8,
        lake=str(tmp_path / "lake"),
        home=tmp_path / "home",
    )
    ensure_topic(config)
    return config


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without the interpreter teardown in which pyarrow's dataset threads can abort
    the process (see workbench._process); pytest has written its report by now."""
    from workbench._process import hard_exit

    status = getattr(config, "_workbench_exitstatus", None)
    if status is not None:
        hard_exit(int(status))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._workbench_exitstatus = exitstatus  # type: ignore[attr-defined]
