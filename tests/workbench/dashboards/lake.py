"""A small two-tenant lake produced by the real pipeline for the dashboard tests.

The fleet is the simulator's (seeded), provisioned through the registry; its
events go through the processor's own commit path (``Processor.process`` —
decode, dedup, telemetry, building_metrics_1m, building_state), exactly as if
polled from Kafka, with event times ending at the wall clock so the dashboards
see a live building. One device is kept silent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

from ingest_service.processor.decode import RecordBatch
from ingest_service.processor.processor import Processor
from simulator.fleet import Fleet
from simulator.provision import provision_fleet
from simulator.scenarios import parse_scenarios
from tests.conftest import add_users, isolated_env
from workbench.config import Config

USERS = {
    # user: (role, tenant, password, buildings)
    "rita": ("viewer", "t-0001", "rita-password-1", ("b-0001",)),
    "vera": ("viewer", "t-0002", "vera-password-1", ("b-0002",)),
    "ops": ("operator", "t-0001", "ops-password-1", ()),
    "opal": ("operator", "t-0001", "opal-password-1", ()),  # only reloads provisioning
    "ann": ("analyst", "t-0001", "ann-password-1", ()),
    "root": ("admin", None, "root-password-1", ()),
}
SILENT = "dev-000002"  # in b-0001; never sends
DEVICES = 40
MINUTES = 15


@dataclasses.dataclass
class DashLake:
    """A lake with a fleet, users, and a processor that keeps accepting events."""

    config: Config
    env: dict[str, str]
    fleet: Fleet
    processor: Processor
    offset: int = 0
    seq_base: int = 0

    def feed(self, records: list[tuple[bytes, bytes]]) -> None:
        """Hand records to the processor as if polled from partition 0."""
        records = [r for r in records if r[0] != SILENT.encode()]
        for start in range(0, len(records), 2000):
            part = records[start : start + 2000]
            offsets = list(range(self.offset, self.offset + len(part)))
            self.offset += len(part)
            self.processor.process(
                RecordBatch([v for _, v in part], [k for k, _ in part], [0] * len(part), offsets)
            )

    def records(
        self, start: dt.datetime, minutes: float, *, scenario: str = "normal"
    ) -> list[tuple[bytes, bytes]]:
        """The fleet's records for ``minutes`` from ``start`` (one per device a minute), with
        sequence numbers above every earlier call's (a device never repeats a seq)."""
        count = int(len(self.fleet) * minutes)
        out = []
        for key, value in self.fleet.kafka_records(
            start, count, scenarios=parse_scenarios(scenario)
        ):
            event = json.loads(value)
            event["seq"] += self.seq_base
            out.append((key, json.dumps(event).encode()))
        self.seq_base += 1_000_000
        return out


def make_lake(home: Path, *, minutes: int = MINUTES, **overrides: str) -> DashLake:
    """Fleet of 40 devices in 4 buildings of 2 tenants, ``minutes`` of events ending now."""
    env = isolated_env(home, **overrides)
    config = Config.from_env(env)
    fleet = Fleet.generate(DEVICES, seed=3, tenants=2, buildings=4)
    provision_fleet(config, fleet)
    add_users(config, USERS)
    processor = Processor(config)
    processor.assign([0])
    lake = DashLake(config, env, fleet, processor)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)
    lake.feed(lake.records(start, minutes))
    return lake
