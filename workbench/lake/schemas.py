"""The Arrow schemas of the lake tables: the contract every writer and reader shares
(the columns are described in docs/ingest.md, "The telemetry columns").

Times are ``timestamp[us, UTC]``; ``event_date`` (the UTC date of ``ts``) is the
partition column of ``telemetry``. ``building_metrics_1m`` keeps, next to the
contract's averages, the sums and counts they come from, so that windows can be
merged and five of them averaged over readings (not an average of averages).

>>> TELEMETRY.field("ts").type
TimestampType(timestamp[us, tz=UTC])

``telemetry`` may have more columns than :data:`TELEMETRY`: readings promoted from
``extra`` by ``workbench lake promote`` (:mod:`workbench.lake.promote`). Writers take
them from the table (:func:`promoted_readings`) and write :func:`telemetry_schema`.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

__all__ = [
    "ALARMS",
    "ALARM_RULES",
    "BUILDING_METRICS_1M",
    "BUILDING_STATE",
    "TELEMETRY",
    "TELEMETRY_REJECTED",
    "UTC_US",
    "promoted_readings",
    "telemetry_schema",
]

UTC_US = pa.timestamp("us", tz="UTC")

TELEMETRY = pa.schema(
    [
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("device_type", pa.string()),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("building_id", pa.string(), nullable=False),
        pa.field("floor", pa.int32()),
        pa.field("room", pa.string()),
        pa.field("ts", UTC_US, nullable=False),
        pa.field("received_at", UTC_US),
        pa.field("ingested_at", UTC_US, nullable=False),
        pa.field("temperature", pa.float64()),
        pa.field("humidity", pa.float64()),
        pa.field("light", pa.float64()),
        pa.field("smoke", pa.bool_()),
        pa.field("intrusion", pa.bool_()),
        pa.field("extra", pa.string()),  # JSON object of readings with unknown names
        pa.field("protocol", pa.string()),
        pa.field("source_partition", pa.int32(), nullable=False),
        pa.field("source_offset", pa.int64(), nullable=False),
        # True when the event arrived after its window's grace period: stored, not aggregated.
        pa.field("late", pa.bool_(), nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
    ]
)

TELEMETRY_REJECTED = pa.schema(
    [
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.binary()),
        pa.field("key", pa.string()),
        pa.field("device_id", pa.string()),
        pa.field("seq", pa.int64()),
        pa.field("source_topic", pa.string(), nullable=False),
        pa.field("source_partition", pa.int32(), nullable=False),
        pa.field("source_offset", pa.int64(), nullable=False),
        pa.field("rejected_at", UTC_US, nullable=False),
        pa.field("rejected_date", pa.date32(), nullable=False),
        # who the refusal counts against (the registry's, stamped by the gateway), and
        # its event time, the gateway's receipt; null when no known device sent it
        pa.field("tenant_id", pa.string()),
        pa.field("building_id", pa.string()),
        pa.field("received_at", UTC_US),
    ]
)

BUILDING_METRICS_1M = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("building_id", pa.string(), nullable=False),
        pa.field("window_start", UTC_US, nullable=False),
        pa.field("readings", pa.int64(), nullable=False),
        pa.field("devices", pa.int64(), nullable=False),
        pa.field("temperature_avg", pa.float64()),
        pa.field("temperature_min", pa.float64()),
        pa.field("temperature_max", pa.float64()),
        pa.field("humidity_avg", pa.float64()),
        pa.field("light_avg", pa.float64()),
        pa.field("smoke_alarms", pa.int64(), nullable=False),
        pa.field("intrusion_alarms", pa.int64(), nullable=False),
        pa.field("updated_at", UTC_US, nullable=False),
        pa.field("temperature_sum", pa.float64(), nullable=False),
        pa.field("temperature_count", pa.int64(), nullable=False),
        pa.field("humidity_sum", pa.float64(), nullable=False),
        pa.field("humidity_count", pa.int64(), nullable=False),
        pa.field("light_sum", pa.float64(), nullable=False),
        pa.field("light_count", pa.int64(), nullable=False),
        pa.field("last_event_ts", UTC_US, nullable=False),
    ]
)

BUILDING_STATE = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("building_id", pa.string(), nullable=False),
        pa.field("as_of", UTC_US, nullable=False),
        pa.field("window_start", UTC_US, nullable=False),  # first of the five minutes
        pa.field("temperature_avg_5m", pa.float64()),
        pa.field("humidity_avg_5m", pa.float64()),
        pa.field("light_avg_5m", pa.float64()),
        pa.field("readings_5m", pa.int64(), nullable=False),
        pa.field("devices_5m", pa.int64(), nullable=False),
        pa.field("active_smoke_alarms", pa.int64(), nullable=False),
        pa.field("active_intrusion_alarms", pa.int64(), nullable=False),
        pa.field("last_event_ts", UTC_US, nullable=False),
        # the building_metrics_1m version this row was computed from: a slower writer
        # never overwrites a fresher row
        pa.field("metrics_version", pa.int64(), nullable=False),
    ]
)

# One row per alarm: a device's episode of one rule's condition (workbench.alarms; the
# columns are described in docs/alarms.md).
ALARMS = pa.schema(
    [
        pa.field("alarm_id", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("building_id", pa.string(), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("device_type", pa.string()),
        pa.field("floor", pa.int32()),
        pa.field("room", pa.string()),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # flag, above, below, silent
        pa.field("reading", pa.string()),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("raised_at", UTC_US, nullable=False),  # event time
        pa.field("raised_value", pa.float64()),
        pa.field("ended_at", UTC_US),  # event time the condition stopped holding
        pa.field("cleared_at", UTC_US),
        pa.field("cleared_by", pa.string()),  # "rule" or a user
        pa.field("acknowledged_at", UTC_US),
        pa.field("acknowledged_by", pa.string()),
        pa.field("comments", pa.string(), nullable=False),  # JSON list of {at, by, text}
        pa.field("history", pa.string(), nullable=False),  # JSON list of transitions
        pa.field("updated_at", UTC_US, nullable=False),
        pa.field("source_partition", pa.int32(), nullable=False),
        pa.field("source_offset", pa.int64(), nullable=False),
    ]
)

# One row per tenant that changed the default rules: its TOML document (workbench.alarms).
ALARM_RULES = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("document", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("updated_by", pa.string(), nullable=False),
        pa.field("updated_at", UTC_US, nullable=False),
    ]
)


_TELEMETRY_NAMES = frozenset(TELEMETRY.names)


def promoted_readings(table_schema: pa.Schema) -> dict[str, pa.DataType]:
    """The reading columns a ``telemetry`` table has beyond :data:`TELEMETRY`, in table order
    (the columns ``workbench lake promote`` added).

    >>> promoted_readings(TELEMETRY.append(pa.field("co2", pa.float64())))
    {'co2': DataType(double)}
    """
    return {f.name: f.type for f in table_schema if f.name not in _TELEMETRY_NAMES}


def telemetry_schema(readings: Mapping[str, pa.DataType]) -> pa.Schema:
    """What a writer of ``telemetry`` writes: :data:`TELEMETRY` plus a nullable column per
    promoted reading.

    >>> telemetry_schema({"co2": pa.float64()}).names[-2:]
    ['event_date', 'co2']
    """
    return pa.schema([*TELEMETRY, *(pa.field(n, t) for n, t in readings.items())])
