"""The processor's rejected-rate rules: each building's refusals, counted from the lake.

A building's devices are spread over partitions, so over processors: no one processor
sees all of a building's refusals in its batches. Every processor commits its refusals
to ``telemetry_rejected`` (attributed: ``tenant_id``, ``building_id``, ``received_at``)
before its alarm stage runs, so the stage counts from the table — every partition's
committed refusals — with :func:`workbench.alarms.rejections.rate_transitions`, and
records what that finds like any alarm (idempotent per episode, so two processors
finding the same raise record it once).

It reads the table only when it has to: for the buildings a batch brought attributed
refusals for — at most once per :data:`EVERY` of event time per building, the others
kept for a later batch, since a device failing at the seed rate brings refusals in
every batch — and for those with a rate alarm this processor knows open, once per
minute of event time. Reading later changes when a transition is recorded, not its
event time: that is worked out from the refusals themselves.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

import polars as pl

from workbench.alarms.evaluate import RulesFor, Transition
from workbench.alarms.rejections import rate_transitions
from workbench.config import Config
from workbench.lake.tables import ALARMS, TELEMETRY_REJECTED, latest_table

__all__ = ["EVERY", "RejectedRates"]

logger = logging.getLogger(__name__)

_UTC_US = pl.Datetime("us", "UTC")
_KIND = "rejected_rate"
EVERY = dt.timedelta(seconds=10)
"""Event time between two counts of one building's refusals from the lake."""


class RejectedRates:
    """The rejected-rate rules of the tenants whose refusals a processor stores."""

    def __init__(self, config: Config, rules_for: RulesFor) -> None:
        self.config = config
        self.rules_for = rules_for
        self.grace = dt.timedelta(seconds=config.late_grace)
        self.clock: dt.datetime | None = None  # the latest event time seen (watermark)
        self.open: set[tuple[str, str]] = set()  # (tenant, building) with an open rate alarm
        self._looked: int | None = None  # the last closed window the open ones were checked at
        self.pending: set[tuple[str, str]] = set()  # buildings with refusals not counted yet
        self._counted: dict[tuple[str, str], dt.datetime] = {}  # when each was, event time

    def seed_open(self) -> None:
        """Learn which buildings have a rate alarm open (a new owner, any partition: a
        building's alarm belongs to none)."""
        table = latest_table(self.config, ALARMS)
        if table is None:
            return
        rows = (
            pl.scan_delta(table)
            .filter((pl.col("kind") == _KIND) & pl.col("ended_at").is_null())
            .select("tenant_id", "building_id")
            .unique()
            .collect()
        )
        self.open |= set(rows.iter_rows())

    def advance(self, at: dt.datetime | None) -> None:
        """Event time has reached ``at`` (a watermark, or a refusal's receipt)."""
        if at is not None and (self.clock is None or at > self.clock):
            self.clock = at

    def process(self, refusals: pl.DataFrame) -> list[Transition]:
        """The transitions a batch's attributed ``refusals`` (``tenant_id``,
        ``building_id``, ``received_at``), and the time that passed, cause."""
        refusals = refusals.filter(
            pl.col("tenant_id").is_not_null()
            & pl.col("building_id").is_not_null()
            & pl.col("received_at").is_not_null()
        )
        if len(refusals):
            self.advance(refusals["received_at"].max())  # type: ignore[arg-type]
        self.pending |= set(refusals.select("tenant_id", "building_id").unique().iter_rows())
        clock = self.clock
        buildings = {
            b
            for b in self.pending
            if clock is None or b not in self._counted or clock - self._counted[b] >= EVERY
        }
        self.pending -= buildings
        if clock is not None:
            self._counted.update(dict.fromkeys(buildings, clock))
        if self.open and self.clock is not None:
            closed = int((self.clock - self.grace).timestamp() // 60)
            if closed != self._looked:  # a window may have closed: look at the open ones
                self._looked = closed
                buildings |= self.open
        return self.evaluate(buildings)

    def evaluate(self, buildings: Iterable[tuple[str, str]]) -> list[Transition]:
        """Count the refusals of ``buildings`` (tenant, building) from the lake."""
        wanted: dict[str, set[str]] = {}
        for tenant, building in buildings:
            if any(r.enabled and r.kind == _KIND for r in self.rules_for(tenant)):
                wanted.setdefault(tenant, set()).add(building)
        if not wanted or self.clock is None:
            return []
        table = latest_table(self.config, TELEMETRY_REJECTED)
        if table is None:
            return []
        closed_before = self.clock - self.grace
        out: list[Transition] = []
        for tenant, mine in sorted(wanted.items()):
            rules = [r for r in self.rules_for(tenant) if r.enabled and r.kind == _KIND]
            # the longest run a rule needs, the window the clock is in, and the grace
            span = dt.timedelta(seconds=max(r.for_s + 2 * r.per_s for r in rules)) + self.grace
            since = closed_before - span
            rows = (
                pl.scan_delta(table)
                .filter(
                    (pl.col("rejected_date") >= since.date() - dt.timedelta(days=1))
                    & (pl.col("tenant_id") == tenant)
                    & pl.col("building_id").is_in(sorted(mine))
                    & (pl.col("received_at") >= pl.lit(since, _UTC_US))
                )
                .select("building_id", "received_at")
                .collect()
            )
            for rule in rules:
                scoped = rows.filter(pl.col("building_id").is_in(sorted(rule.buildings)))
                found = rate_transitions(
                    rows if not rule.buildings else scoped,
                    rule,
                    tenant=tenant,
                    closed_before=closed_before,
                )
                out += found
            # what is open now, after the last transition of each building
            for building in mine:
                last = [t for t in out if t.tenant_id == tenant and t.building_id == building]
                if last and last[-1].action == "raised":
                    self.open.add((tenant, building))
                elif last or not len(rows.filter(pl.col("building_id") == building)):
                    self.open.discard((tenant, building))
        return out
