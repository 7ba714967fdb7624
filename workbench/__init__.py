"""Smart-building IoT analytics workbench: the library every part of the product uses.

The front door is deliberately narrow; notebooks need little more than the
config and, as the product grows, the reading API.
"""

from workbench.config import Config, load_config
from workbench.exceptions import WorkbenchError
from workbench.lake.read import building_metrics, building_state, telemetry

__all__ = [
    "Config",
    "WorkbenchError",
    "building_metrics",
    "building_state",
    "load_config",
    "telemetry",
]
