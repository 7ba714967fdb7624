"""A small two-tenant lake with real users, and a real HiveServer2 on a free port over it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from proving.sample import SampleLake, write_sample_lake
from tests.conftest import add_users, free_port, isolated_env
from workbench.config import Config
from workbench.query.hiveserver2 import HiveServer2
from workbench.query.spark import SparkEngine

START = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)

USERS = {
    # user: (role, tenant, password, buildings)
    "ann": ("analyst", "t-0001", "ann-password-1", ()),
    "bob": ("analyst", "t-0002", "bob-password-1", ()),
    "ops": ("operator", "t-0001", "ops-password-1", ()),
    "rita": ("viewer", "t-0001", "rita-password-1", ("b-0001",)),
    "root": ("admin", None, "root-password-1", ()),
}


@dataclasses.dataclass(frozen=True)
class HiveLake:
    """The config (lake under its home) and what was written."""

    config: Config
    sample: SampleLake


def make_lake(home: Path, **overrides: str) -> HiveLake:
    """20,000 events of 200 devices in 4 buildings of 2 tenants over 2 days, plus USERS."""
    config = Config.from_env(isolated_env(home, **overrides))
    sample = write_sample_lake(
        config, events=20_000, devices=200, buildings=4, days=2.0, start=START
    )
    add_users(config, USERS)
    return HiveLake(config, sample)


@contextmanager
def running_server(config: Config, spark: SparkEngine | None = None) -> Iterator[HiveServer2]:
    """A HiveServer2 on a free port (on the Spark engine ``spark`` when given); stopped
    on exit."""
    server = HiveServer2(config, host="127.0.0.1", port=free_port(), flight_port=0, spark=spark)
    server.start()
    try:
        yield server
    finally:
        server.stop()
