"""What a scenario is, and the registry that names them.

A scenario is a transform over one tick of events (a polars frame, see
:meth:`simulator.fleet.Fleet.ticks`): it may change readings, event times,
the sending order, add rows (resends) or mark rows the gateway should refuse
(``status``). Scenarios compose: ``heatwave,late-and-duplicate`` applies both,
in that order. Every choice a scenario makes (which building, which devices)
comes from the fleet's seed, so runs are reproducible.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import polars as pl

from simulator.fleet import TickContext
from workbench.exceptions import SimulatorError

__all__ = ["SCENARIOS", "Scenario", "parse_scenarios", "scenario"]


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


SCENARIOS: dict[str, Callable[[], Scenario]] = {}


def scenario(cls: type[Scenario]) -> type[Scenario]:
    """Class decorator: register a scenario under its ``name``."""
    SCENARIOS[cls.name] = cls
    return cls


def parse_scenarios(spec: str) -> list[Scenario]:
    """``"heatwave,fire"`` → scenario instances, in order (``normal`` adds nothing).

    >>> [s.name for s in parse_scenarios("heatwave, fire")]
    ['heatwave', 'fire']
    """
    import simulator.scenarios.builtin  # noqa: F401  (registers the built-ins)

    out: list[Scenario] = []
    for raw in spec.split(","):
        name = raw.strip()
        if not name:
            continue
        factory = SCENARIOS.get(name)
        if factory is None:
            raise SimulatorError(
                f"unknown scenario {name!r}", hint=f"choose from {', '.join(sorted(SCENARIOS))}"
            )
        if name != "normal":
            out.append(factory())
    return out
