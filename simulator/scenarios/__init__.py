"""Named, composable scenarios (``--scenario heatwave,fire``); see :mod:`.builtin`."""

from __future__ import annotations

from simulator.scenarios.base import GROUP, Scenario, load_scenario, parse_scenarios, scenario_names

__all__ = ["GROUP", "Scenario", "load_scenario", "parse_scenarios", "scenario_names"]
