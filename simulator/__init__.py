"""The device fleet simulator: a seeded smart-building fleet, its physics, scenarios and senders.

>>> import datetime as dt
>>> from simulator import Fleet
>>> fleet = Fleet.generate(100, seed=1)
>>> records = list(fleet.kafka_records(dt.datetime(2026, 11, 27, tzinfo=dt.UTC), 250))
>>> len(records), records[0][0]
(250, b'dev-000096')
"""

from __future__ import annotations

from simulator.fleet import Device, Fleet
from simulator.run import RunOptions, RunSummary, run
from simulator.scenarios import parse_scenarios

__all__ = ["Device", "Fleet", "RunOptions", "RunSummary", "parse_scenarios", "run"]
