"""The lake: table names and schemas, the reading API, maintenance.

The tables and their columns are described in docs/ingest.md.

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

# the reading API (workbench.lake.read)
__all__ = ["building_metrics", "building_state", "freshness", "telemetry"]
# the tables' names and specs, and where a table lives (workbench.lake.tables)
__all__ += [
    "BUILDING_METRICS_1M",
    "BUILDING_STATE",
    "TABLES",
    "TELEMETRY",
    "TELEMETRY_REJECTED",
    "table_uri",
]
