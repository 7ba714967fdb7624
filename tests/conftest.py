"""Shared fixtures: isolated WORKBENCH_HOMEs on free ports, the real embedded broker and
a real replicated Kafka cluster.

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
from typing import Any

import pytest

from proving.kafka_cluster import KafkaCluster
from proving.objstore import Azurite, MotoS3
from proving.scratch import PORT_VARS, free_port
from workbench.config import Config
from workbench.kafka import ensure_topic, kafka_security
from workbench.stack import supervisor

# Fixture modules shared across test folders; a plug-in, because importing a fixture into
# a test module and naming it as a test's argument reads as a redefinition (ruff F811).
pytest_plugins = ["tests.workbench.query.hiveserver2.fixtures"]

# Which embedded broker the tests run on, the session's and every stack a test starts:
# Apache Kafka, the product's default; WORKBENCH_TEST_BROKER=tansu runs them on the light
# mode. A smoke set runs on Tansu whatever this says (test_stack_cli's wb_env,
# test_topic_recreated, the lag tests' tansu_broker_config, kcat): the mode stays covered.
TEST_BROKER = os.environ.get("WORKBENCH_TEST_BROKER", "kafka")


def isolated_env(home: Path, **overrides: str) -> dict[str, str]:
    """os.environ without workbench settings, plus a private home and free ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKBENCH_", "KAFKA_"))}
    env["WORKBENCH_HOME"] = str(home)
    for var in PORT_VARS:
        env[var] = str(free_port())
    env["WORKBENCH_BROKER"] = TEST_BROKER
    # under the suite's load on two cores a Kafka broker once took more than the default
    # 60 s to start (its JVM 21 s before the first log line); a test that is about
    # something else must not fail on that (a test of the timeout sets its own)
    env["WORKBENCH_STARTUP_TIMEOUT"] = "240"
    env.update(overrides)
    return env


def add_users(config: Config, users: dict[str, tuple]) -> None:
    """Add ``{user: (role, tenant, password, buildings)}`` to the user store, as admin."""
    from workbench.tenancy import Principal, UserStore

    store = UserStore(config)
    for user, (role, tenant, password, buildings) in users.items():
        store.add(
            user,
            role=role,
            tenant=tenant,
            password=password,
            buildings=buildings,
            by=Principal.system(),
        )


def run_module_help(module: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE --help`` in an isolated environment."""
    return subprocess.run(
        [sys.executable, "-m", module, "--help"],
        env=isolated_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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


def _session_broker(factory: pytest.TempPathFactory, broker: str) -> Iterator[Config]:
    home = factory.mktemp(f"{broker}-home")
    config = Config.from_env(isolated_env(home, WORKBENCH_BROKER=broker))
    supervisor.up(config, only=["broker"])
    yield config
    supervisor.down(config)


@pytest.fixture(scope="session")
def broker_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """One real embedded broker for the session (see TEST_BROKER), started through the
    supervisor."""
    yield from _session_broker(tmp_path_factory, TEST_BROKER)


@pytest.fixture(scope="session")
def tansu_broker_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """A Tansu broker for the session, for the tests that keep its light mode covered
    (started only when one of them runs)."""
    yield from _session_broker(tmp_path_factory, "tansu")


def fresh_topic(broker: Config, tmp_path: Path) -> Config:
    """``broker`` with a fresh topic and a fresh lake for this test. Its home is the test's
    own, so an authenticating broker is reached as an external cluster with the session
    home's credentials (the test's home has none)."""
    sec = kafka_security(broker)
    if sec.mechanism:
        broker = dataclasses.replace(
            broker,
            kafka_bootstrap_servers=broker.bootstrap_servers,
            kafka_security_protocol=sec.protocol,
            kafka_sasl_mechanism=sec.mechanism,
            kafka_sasl_username=sec.username,
            kafka_sasl_password=sec.password,
        )
    config = dataclasses.replace(
        broker,
        topic=f"telemetry-{uuid.uuid4().hex[:8]}",
        # more partitions than the default 2: rebalances between members move more of them
        topic_partitions=8,
        lake=str(tmp_path / "lake"),
        home=tmp_path / "home",
    )
    ensure_topic(config)
    return config


@pytest.fixture
def kafka_config(broker_config: Config, tmp_path: Path) -> Config:
    """The session broker with a fresh topic and a fresh lake for this test."""
    return fresh_topic(broker_config, tmp_path)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A real Apache Kafka cluster for the session: three KRaft nodes on loopback, new
    topics (and the internal ones) with replication factor 3 and min.insync.replicas 2.
    Point a stack at it with ``KAFKA_BOOTSTRAP_SERVERS=cluster.bootstrap_servers``; a test
    that kills a node starts it again (``start_node``) before it ends."""
    with KafkaCluster(tmp_path_factory.mktemp("kafka-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A real S3 endpoint for the session: moto's server on a free loopback port, with one
    bucket. Tests put their lake under a prefix of their own (:func:`store_lake`)."""
    with MotoS3(tmp_path_factory.mktemp("moto-s3"), bucket="wb-test-lake") as server:
        yield server


@pytest.fixture(scope="session")
def moto_s3_checking_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """An S3 endpoint that checks credentials and knows none: every key pair is wrong."""
    with MotoS3(
        tmp_path_factory.mktemp("moto-s3-keys"), bucket="wb-test-lake", check_keys=True
    ) as server:
        yield server


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A real Azure Blob endpoint for the session: Azurite on a free loopback port (npm
    installs it the first time), with one container."""
    with Azurite(tmp_path_factory.mktemp("azurite"), container="wb-test-lake") as server:
        yield server


# The object stores a lake can live on in the tests; parametrize a test over them with
# ``@OBJECT_STORES`` and take ``object_store`` (the server, its variables in os.environ).
OBJECT_STORES = pytest.mark.parametrize("object_store", ["s3", "azure"], indirect=True)


@pytest.fixture
def object_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The parametrized store's server, its credentials and endpoint in os.environ for
    the test: deltalake in this process, and every process the test starts, read them
    from there as from a cloud account's variables."""
    name = getattr(request, "param", "s3")
    fixtures = {"s3": "moto_s3", "azure": "azurite", "s3-checking-keys": "moto_s3_checking_keys"}
    server = request.getfixturevalue(fixtures[name])
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    return server


def store_lake(server: MotoS3 | Azurite) -> str:
    """A fresh lake root on ``server``: a prefix nobody else writes under."""
    return server.lake(f"lake-{uuid.uuid4().hex[:12]}")


# `make test` runs the suite on two pytest-xdist workers (``-n 2``): the
# integration tests mostly wait on processes and sockets, so two of them share the two
# cores well. Tests of one group run on one worker, one after another:
# * "stack": whole stacks under load whose checks are about losing nothing through kills,
#   restarts and outages, and the benches that run a stack: one at a time, so that two of
#   them never compete for the cores;
# * "spark", "hub", "cluster": the tests of one session-wide Spark, JupyterHub or Kafka
#   cluster, which would otherwise start once on each worker.
# Everything else goes to whichever worker is free.
_GROUPS = {
    "stack": (
        "tests/proving/test_drills.py",
        "tests/proving/test_soak.py",
        "tests/proving/bench/test_ingest.py",
        "tests/proving/bench/test_storecost.py",
        "tests/ingest_service/processor/test_exactly_once.py",
        "tests/ingest_service/processor/test_alarms_exactly_once.py",
        "tests/ingest_service/processor/test_object_store_faults.py",
        "tests/workbench/stack/test_rolling.py",
        "tests/workbench/stack/test_full_stack.py",
        "tests/workbench/stack/test_kafka_broker.py",
        "tests/workbench/stack/test_object_store_lake.py",
    ),
    "cluster": ("tests/proving/test_kafka_cluster.py",),
    "spark": (
        "tests/workbench/query/hiveserver2/test_server.py",
        "tests/workbench/query/hiveserver2/test_beeline.py",
        "tests/workbench/query/test_spark_connect.py",
        "tests/workbench/query/test_spark_revive.py",
        "tests/workbench/query/test_engines_agree.py",
    ),
    "hub": ("tests/workbench/hub/",),
}


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's, absent without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's scope scheduler, with :data:`_GROUPS` as the scopes (every other test is a
    scope of its own). Not xdist's ``loadgroup``: with pytest 9.2 the group it appends to
    a node id no longer reaches the scheduler, so every test ran wherever."""
    from xdist.scheduler import LoadScopeScheduling

    class Grouped(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((g for g, found in _GROUPS.items() if path.startswith(found)), nodeid)

    return Grouped(config, log)


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
