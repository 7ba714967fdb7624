"""A building's rejected-event rate in event time: windows, duration, end (pure logic)."""

from __future__ import annotations

import datetime as dt

import polars as pl

from workbench.alarms.rejections import BUILDING, rate_transitions
from workbench.alarms.rules import parse_rules

T0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)


def _rule(above: int = 3, per: str = "1m", for_: str = "2m"):
    (rule,) = parse_rules(
        f'[[rule]]\nname = "rejecting"\nkind = "rejected_rate"\nabove = {above}\n'
        f'per = "{per}"\nfor = "{for_}"\nseverity = "minor"\n',
        source="t",
    )
    return rule


def _refusals(per_minute: dict[int, int], building: str = "b-1") -> pl.DataFrame:
    """``n`` refusals in minute ``m``, one a second from its start."""
    times = [
        T0 + dt.timedelta(minutes=m, seconds=s) for m, n in per_minute.items() for s in range(n)
    ]
    return pl.DataFrame(
        {"building_id": building, "received_at": times},
        schema={"building_id": pl.String, "received_at": pl.Datetime("us", "UTC")},
    )


def _brief(transitions):
    return [(t.action, t.device_id, (t.at - T0).total_seconds()) for t in transitions]


def test_raised_when_every_window_of_the_duration_is_over_and_ended_by_a_closed_window_under():
    rule = _rule()  # more than 3 a minute, for 2 minutes: minutes 0, 1 and 2 over
    rows = _refusals({0: 5, 1: 4, 2: 6, 3: 1})
    # minute 3 is still open: it may exceed yet
    open_ = rate_transitions(rows, rule, tenant="t-1", closed_before=T0 + dt.timedelta(minutes=3))
    assert _brief(open_) == [("raised", "b-1", 123.0)]  # the 4th refusal of minute 2
    (raised,) = open_
    assert (raised.device_type, raised.building_id, raised.kind, raised.value) == (
        BUILDING,
        "b-1",
        "rejected_rate",
        6.0,
    )
    closed = rate_transitions(rows, rule, tenant="t-1", closed_before=T0 + dt.timedelta(minutes=9))
    assert _brief(closed) == [("raised", "b-1", 123.0), ("ended", "b-1", 240.0)]


def test_a_window_under_the_threshold_restarts_the_duration():
    rule = _rule()
    rows = _refusals({0: 5, 1: 5, 2: 3, 3: 5, 4: 5})  # 2 minutes over, one under, 2 over
    assert (
        rate_transitions(rows, rule, tenant="t-1", closed_before=T0 + dt.timedelta(minutes=5)) == []
    )
    # an empty window is under too
    rows = _refusals({0: 5, 1: 5, 3: 5, 4: 5})
    assert (
        rate_transitions(rows, rule, tenant="t-1", closed_before=T0 + dt.timedelta(minutes=5)) == []
    )


def test_buildings_are_counted_apart():
    rule = _rule(for_="0m")
    rows = pl.concat([_refusals({0: 4}, "b-1"), _refusals({0: 3}, "b-2")])
    found = rate_transitions(rows, rule, tenant="t-1", closed_before=T0)
    assert _brief(found) == [("raised", "b-1", 3.0)]


def test_the_same_refusals_in_any_order_give_the_same_transitions():
    rule = _rule()
    rows = _refusals({0: 5, 1: 4, 2: 6, 3: 1, 5: 9})
    shuffled = rows.sample(fraction=1.0, shuffle=True, seed=7)
    at = T0 + dt.timedelta(minutes=10)
    assert _brief(rate_transitions(shuffled, rule, tenant="t", closed_before=at)) == _brief(
        rate_transitions(rows, rule, tenant="t", closed_before=at)
    )
