"""The event on the ``telemetry`` topic: the contract between gateway, processor and simulator.

The gateway (or, for benchmarks, the simulator sending straight to Kafka)
produces one Kafka record per accepted device event:

* key: the device id, UTF-8 (so one device's events stay in order on one partition);
* value: one JSON object, UTF-8, with exactly these keys::

    {"device_id": "dev-000001", "seq": 1042,
     "ts": "2026-11-27T05:30:00.123Z",            # event time, RFC 3339, UTC
     "received_at": "2026-11-27T05:30:00.301Z",   # gateway clock, RFC 3339, UTC
     "tenant_id": "t-acme", "building_id": "b-0025", "floor": 3, "room": "3.12",
     "device_type": "environment",                # environment | smoke | intrusion
     "protocol": "http",                          # the door: http | mqtt | fbk1 | ...
     "readings": {"temperature": 21.5, "humidity": 40.2, "light": 310.0}}

``readings`` holds the device's readings as sent (after protocol translation):
known names are :data:`KNOWN_READINGS`; any other name is kept and lands in the
``extra`` column of ``telemetry`` as JSON. ``floor`` and ``room`` may be null.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEVICE_TYPES",
    "KNOWN_READINGS",
    "encode_event",
    "format_ts",
]

KNOWN_READINGS: Mapping[str, type] = {
    "temperature": float,  # °C
    "humidity": float,  # %RH
    "light": float,  # lux
    "smoke": bool,
    "intrusion": bool,
}

DEVICE_TYPES = ("environment", "smoke", "intrusion")


def format_ts(value: dt.datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and a ``Z``.

    >>> format_ts(dt.datetime(2026, 11, 27, 5, 30, 0, 123456, tzinfo=dt.UTC))
    '2026-11-27T05:30:00.123Z'
    """
    if value.tzinfo is None:
        raise ValueError("naive datetime: event times must carry a timezone")
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The Kafka record value for ``event`` (compact JSON, UTF-8)."""
    return json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
