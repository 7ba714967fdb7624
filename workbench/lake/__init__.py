"""The lake: table names and schemas (DESIGN.md §7), the reading API, maintenance.

>>> from workbench.lake import TELEMETRY, TABLES
>>> TABLES[TELEMETRY].partition_by
['event_date']
"""

from workbench.lake.read import building_metrics, building_state, freshness, telemetry
from workbench.lake.tables import (
    BUILDING_METRICS_1M,
    BUILDING_STATE,
    TABLES,
    TELEMETRY,
    TELEMETRY_REJECTED,
    table_uri,
)

__all__ = [
    "BUILDING_METRICS_1M",
    "BUILDING_STATE",
    "TABLES",
    "TELEMETRY",
    "TELEMETRY_REJECTED",
    "building_metrics",
    "building_state",
    "freshness",
    "table_uri",
    "telemetry",
]
