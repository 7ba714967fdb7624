"""Pytest plug-in (registered in tests/conftest.py): the HiveServer2 fixtures that the
server's own tests and the security probes share.

* ``lake``: the sample lake and users of :func:`make_lake`, written once per test module;
  a module that needs other settings defines its own ``lake``.
* ``spark_engine``: the one Spark application (``local[2]``) of the test session, started
  when a test first needs it; servers and sessions of every test share it, as the
  endpoint's sessions do.
* ``spark_connect_engine``: a real Spark Connect server (``spark-submit`` of
  :func:`server_argv`, ``local[2]``, with a token) of the test session, started when a
  test first needs it, and the engine the door uses over it.
* ``server``: a HiveServer2 of its own per test over that lake, with the config fields
  :func:`limits` replaces; a module whose tests may share one server defines a
  module-scoped ``server``.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.workbench.query.hiveserver2.lake import HiveLake, make_lake, running_server
from workbench.query.hiveserver2 import HiveServer2
from workbench.query.spark import SparkEngine


@pytest.fixture(scope="session")
def spark_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkEngine]:
    from tests.conftest import isolated_env
    from workbench.config import Config

    home = tmp_path_factory.mktemp("spark") / "home"
    engine = SparkEngine(Config.from_env(isolated_env(home, WORKBENCH_SPARK_MASTER="local[2]")))
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def spark_connect_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkEngine]:
    from tests.conftest import free_port, isolated_env
    from workbench.config import Config
    from workbench.query.spark_connect import SparkConnectEngine, server_argv

    home = tmp_path_factory.mktemp("spark-connect")
    port = free_port()
    token = secrets.token_hex(16)
    env = {**os.environ, "SPARK_CONNECT_AUTHENTICATE_TOKEN": token, "SPARK_LOCAL_IP": "127.0.0.1"}
    with (home / "server.log").open("wb") as log:
        server = subprocess.Popen(
            server_argv(port=port, master="local[2]"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home,
            start_new_session=True,  # its JVM and the launcher end together below
        )
    try:
        deadline = time.monotonic() + 300
        while server.poll() is None and time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            log_text = (home / "server.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"the Spark Connect server did not listen on {port}:\n{log_text}")
        # `localhost`: a token over a plain (not TLS) channel is sent to loopback only
        master = f"sc://localhost:{port}/;token={token}"
        config = Config.from_env(isolated_env(home / "home", WORKBENCH_SPARK_MASTER=master))
        yield SparkConnectEngine(config)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> HiveLake:
    return make_lake(tmp_path_factory.mktemp("hive") / "home")


@pytest.fixture
def server(lake: HiveLake, request: pytest.FixtureRequest) -> Iterator[HiveServer2]:
    """A server of its own per test, with the settings :func:`limits` overrides."""
    overrides = getattr(request, "param", {})
    with running_server(dataclasses.replace(lake.config, **overrides)) as srv:
        yield srv


def limits(**overrides: Any) -> pytest.MarkDecorator:
    """Run the test against a server with these config fields replaced."""
    label = ",".join(f"{k.removeprefix('hive_')}={v}" for k, v in overrides.items())
    return pytest.mark.parametrize("server", [overrides], indirect=True, ids=[label])
