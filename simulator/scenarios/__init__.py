"""Named, composable scenarios (``--scenario heatwave,fire``); see :mod:`.builtin`."""

from __future__ import annotations

from simulator.scenarios.base import SCENARIOS, Scenario, parse_scenarios

__all__ = ["SCENARIOS", "Scenario", "parse_scenarios"]
