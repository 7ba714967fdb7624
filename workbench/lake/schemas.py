"""The Arrow schemas of the lake tables (DESIGN.md §7): the contract every writer and reader shares.

Times are ``timestamp[us, UTC]``; ``event_date`` (the UTC date of ``ts``) is the
partition column of ``telemetry``. ``building_metrics_1m`` keeps, next to the
contract's averages, the sums and counts they come from, so that windows can be
merged and five of them averaged over readings (not an average of averages).

>>> TELEMETRY.field("ts").type
TimestampType(timestamp[us, tz=UTC])
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "BUILDING_METRICS_1M",
    "BUILDING_STATE",
    "TELEMETRY",
    "TELEMETRY_REJECTED",
    "UTC_US",
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
