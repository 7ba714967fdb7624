"""What a sending target is: where the simulator's events go, and the counters it keeps.

Targets are plug-ins of the ``workbench.sim_targets`` entry-point group
(:mod:`workbench.plugins`): the entry point names a callable, usually the
:class:`Target` subclass itself, that :func:`simulator.run.make_target` calls as
``factory(fleet, config, options)`` with the run's :class:`~simulator.run.RunOptions`.
The built-ins, ``gateway`` and ``kafka``, are declared in this project's
``pyproject.toml`` the same way.
"""

from __future__ import annotations

import abc
import dataclasses
from collections import Counter

import polars as pl

from simulator.fleet import Fleet
from workbench import plugins

__all__ = ["GROUP", "Stats", "Target", "target_names"]

GROUP = "workbench.sim_targets"


@dataclasses.dataclass
class Stats:
    """Running counters of a target (events, not requests)."""

    sent: int = 0  # events handed to the target (retries not counted)
    accepted: int = 0  # acknowledged by the target
    # of those, retries the target answered "a copy is stored already" (the legacy door's
    # 409 replay after a lost OK): acknowledged, but no second record was written
    replayed: int = 0
    rejected: Counter[str] = dataclasses.field(default_factory=Counter)  # by reason
    retries: int = 0  # events sent again after 429/503/timeouts (same seq)
    failed: int = 0  # gave up after retries
    skipped: int = 0  # never sent (the gateway would refuse them; Kafka target only)

    def copy(self) -> Stats:
        """A snapshot."""
        return dataclasses.replace(self, rejected=Counter(self.rejected))


class Target(abc.ABC):
    """Sends tick chunks somewhere; returns the outcome of each event for the truth log."""

    name: str

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.stats = Stats()

    def prepare(self) -> None:  # noqa: B027  (optional hook)
        """Before the first event (e.g. provision the fleet)."""

    @abc.abstractmethod
    def send(self, chunk: pl.DataFrame) -> pl.Series:
        """Send the events of ``chunk`` (in order); one outcome string per row."""

    def flush(self) -> None:  # noqa: B027  (optional hook)
        """Wait until everything sent so far is acknowledged."""

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release connections; called once, after the last flush."""


def target_names() -> tuple[str, ...]:
    """The installed targets' names, sorted (nothing is imported)."""
    return plugins.names(GROUP)
