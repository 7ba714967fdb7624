"""A building's rejected-event rate, in event time: pure logic, no I/O.

The refusals counted are the rows of ``telemetry_rejected`` attributed to a building
(``tenant_id`` and ``building_id`` set: the gateway refused a known, authenticated
device, or the processor refused an event the gateway had stamped). Their event time is
``received_at``, when the gateway received them. A ``rejected_rate`` rule (``above``,
``per``, ``for``) counts them per building in tumbling windows of ``per`` (aligned like
the aggregates' minutes, on the epoch):

* a window *exceeds* once its count is above ``above``; it does so at its *crossing*,
  the event time of the refusal that took it over (the ``above + 1``-th);
* the condition begins at the crossing of a window that exceeds after one that did not,
  and is raised at the first crossing of a following window, each of them exceeding,
  at least ``for`` after it began (``for = 0``: at the first crossing);
* a window that closes (ends at or before ``closed_before``: the watermark less the
  late grace, as for the aggregates) without exceeding ends the condition, at the
  window's end. A window with no refusal at all is such a window.

The answer depends only on the refusals and ``closed_before``, so whoever evaluates the
same rows (a processor after a crash, another member of the group) finds the same
transitions, and recording them is idempotent (:mod:`workbench.alarms.store`).

>>> import datetime as dt
>>> import polars as pl
>>> from workbench.alarms.rules import parse_rules
>>> (rule,) = parse_rules('[[rule]]\\nname = "r"\\nkind = "rejected_rate"\\nabove = 2\\n'
...     'per = "1m"\\nfor = "1m"\\nseverity = "minor"', source="doc")
>>> t0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
>>> rows = pl.DataFrame({"building_id": "b", "received_at":
...     [t0 + dt.timedelta(seconds=s) for s in (1, 2, 3, 61, 62, 63)]})
>>> [(t.action, t.building_id, t.at.second, t.value)
...  for t in rate_transitions(rows, rule, tenant="t", closed_before=t0)]
[('raised', 'b', 3, 3.0)]
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from workbench.alarms.evaluate import Transition
from workbench.alarms.rules import Rule

__all__ = ["BUILDING", "rate_transitions"]

BUILDING = "building"
"""The ``device_type`` of a building's alarm, whose ``device_id`` is the building's id."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def rate_transitions(
    refusals: pl.DataFrame, rule: Rule, *, tenant: str, closed_before: dt.datetime
) -> list[Transition]:
    """The transitions of ``rule`` over ``refusals`` (one tenant's: ``building_id``,
    ``received_at``), in event-time order per building."""
    out: list[Transition] = []
    for building, rows in refusals.sort("received_at").group_by("building_id", maintain_order=True):
        times = rows["received_at"].to_list()
        out += _building(str(building[0]), times, rule, tenant, closed_before)
    return out


def _building(
    building: str,
    times: list[dt.datetime],
    rule: Rule,
    tenant: str,
    closed_before: dt.datetime,
) -> list[Transition]:
    per = dt.timedelta(seconds=rule.per_s)
    assert rule.threshold is not None
    need = int(rule.threshold) + 1  # "more than above"
    windows: dict[int, list[dt.datetime]] = {}
    for at in times:
        windows.setdefault((at - _EPOCH) // per, []).append(at)
    out: list[Transition] = []
    since: dt.datetime | None = None  # the condition began (None: it does not hold)
    raised = False
    first, last = min(windows), max(windows)
    for w in range(first, last + 2):
        start = _EPOCH + w * per
        inside = windows.get(w, [])
        if len(inside) >= need:
            crossing = inside[need - 1]
            if since is None:
                since = crossing
            if not raised and (crossing - since).total_seconds() >= rule.for_s:
                raised = True
                out.append(_transition("raised", rule, tenant, building, crossing, len(inside)))
            continue
        end = start + per
        if end > closed_before:
            break  # still open: it may exceed yet
        if raised:
            out.append(_transition("ended", rule, tenant, building, end, len(inside)))
        since, raised = None, False
    return out


def _transition(
    action: str, rule: Rule, tenant: str, building: str, at: dt.datetime, count: int
) -> Transition:
    return Transition(
        action="raised" if action == "raised" else "ended",
        tenant_id=tenant,
        device_id=building,  # one alarm per building and rule at a time
        rule=rule.name,
        at=at,
        severity=rule.severity,
        kind=rule.kind,
        reading="rejected",
        value=float(count),
        building_id=building,
        device_type=BUILDING,
    )
