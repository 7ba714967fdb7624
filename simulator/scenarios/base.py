"""What a scenario is, and how installed scenarios are found by name.

A scenario is a transform over one tick of events (a polars frame, see
:meth:`simulator.fleet.Fleet.ticks`): it may change readings, event times,
the sending order, add rows (resends) or mark rows the gateway should refuse
(``status``). Scenarios compose: ``heatwave,late-and-duplicate`` applies both,
in that order. Every choice a scenario makes (which building, which devices)
comes from the fleet's seed, so runs are reproducible.

Scenarios are plug-ins of the ``workbench.scenarios`` entry-point group
(:mod:`workbench.plugins`): the entry point names a :class:`Scenario` subclass (or any
callable making one with default settings) whose ``name`` is the entry point's name.
The built-ins in :mod:`simulator.scenarios.builtin` are declared that way too.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import polars as pl

from simulator.fleet import TickContext
from workbench import plugins
from workbench.exceptions import SimulatorError

__all__ = ["GROUP", "Scenario", "load_scenario", "parse_scenarios", "scenario_names"]


class Scenario(abc.ABC):
    """A named transform of each tick's events."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --help
    dashboard: ClassVar[str]  # what it should look like on a dashboard

    @abc.abstractmethod
    def apply(self, frame: pl.DataFrame, ctx: TickContext) -> pl.DataFrame:
        """The tick ``frame`` after this scenario."""

    def __repr__(self) -> str:
        return f"<scenario {self.name}>"


GROUP = "workbench.scenarios"


def scenario_names() -> tuple[str, ...]:
    """The installed scenarios' names, sorted (nothing is imported)."""
    return plugins.names(GROUP)


def load_scenario(name: str) -> Scenario:
    """A fresh instance of the installed scenario ``name``, with its default settings."""
    if name not in scenario_names():
        raise SimulatorError(
            f"unknown scenario {name!r}", hint=f"choose from {', '.join(scenario_names())}"
        )
    factory = plugins.load(GROUP, name)
    made = factory() if callable(factory) else None
    if not isinstance(made, Scenario) or made.name != name:
        raise plugins.PluginError(
            f"scenario plug-in {name!r} ({factory!r}) does not make a scenario named {name!r}",
            hint="its entry point must name a Scenario subclass whose `name` is the "
            "entry point's name",
        )
    return made


def parse_scenarios(spec: str) -> list[Scenario]:
    """``"heatwave,fire"`` → scenario instances, in order (``normal`` adds nothing).

    >>> [s.name for s in parse_scenarios("heatwave, fire")]
    ['heatwave', 'fire']
    """
    names = [raw.strip() for raw in spec.split(",") if raw.strip()]
    return [load_scenario(name) for name in names if name != "normal"]
