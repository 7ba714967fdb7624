"""The hub for the session: a real JupyterHub (and the HiveServer2 door) over a two-tenant
sample lake, started once through the supervisor; each test adds users of its own.

The hub runs as root and spawns servers as OS accounts it creates; the accounts the
tests made are removed at the end of the session.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator

import psutil
import pytest

from tests.conftest import add_users
from tests.workbench.query.hiveserver2.lake import HiveLake, make_lake
from workbench.config import Config
from workbench.hub.accounts import os_user_name, remove_account
from workbench.stack import supervisor


@dataclasses.dataclass
class Hub:
    """The running hub and the lake behind it."""

    config: Config
    lake: HiveLake
    broker: Config  # the session's broker (its password file is what kernels must not read)
    users: list[str] = dataclasses.field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.config.hub_port}"


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory, broker_config: Config) -> Iterator[Hub]:
    lake = make_lake(tmp_path_factory.mktemp("hub") / "home")
    running = Hub(lake.config, lake, broker_config)
    supervisor.up(lake.config, only=["hiveserver2", "hub"])
    try:
        yield running
    finally:
        supervisor.down(lake.config)  # stops the users' servers first (before_down)
        for user in running.users:
            # a server the hub failed to stop (a failed test) is this session's own: end
            # its processes by pid so that the account can go
            name = os_user_name(user)
            left = [p for p in psutil.process_iter(["username"]) if p.info["username"] == name]
            for proc in left:
                proc.kill()
            psutil.wait_procs(left, timeout=10)
            remove_account(user)


@pytest.fixture
def hub_user(hub: Hub) -> Callable[..., tuple[str, str]]:
    """Add a workbench user of this test: ``(name, password)``; role and tenant as asked."""

    def make(role: str = "analyst", tenant: str | None = "t-0001") -> tuple[str, str]:
        name = f"{role[:3]}-{uuid.uuid4().hex[:8]}"
        password = f"{name}-password"
        add_users(hub.config, {name: (role, tenant, password, ())})
        hub.users.append(name)
        return name, password

    return make
