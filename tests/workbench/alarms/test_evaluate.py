"""The evaluator and the episode planner: event-time alarm logic, without I/O."""

from __future__ import annotations

import datetime as dt

import polars as pl

from workbench.alarms.evaluate import Evaluator, Transition
from workbench.alarms.rules import default_rules, parse_rules
from workbench.alarms.store import alarm_id, plan

T0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)
SCHEMA = {
    "tenant_id": pl.String,
    "building_id": pl.String,
    "device_id": pl.String,
    "device_type": pl.String,
    "floor": pl.Int32,
    "room": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "received_at": pl.Datetime("us", "UTC"),
    "temperature": pl.Float64,
    "humidity": pl.Float64,
    "light": pl.Float64,
    "smoke": pl.Boolean,
    "intrusion": pl.Boolean,
    "source_partition": pl.Int32,
    "source_offset": pl.Int64,
}


class Log:
    """Rows of one partition, offsets counting up."""

    def __init__(self) -> None:
        self.offset = 0

    def rows(self, *events: dict) -> pl.DataFrame:
        out = []
        for e in events:
            row = {
                "tenant_id": "t-1",
                "building_id": "b-1",
                "device_type": "environment",
                "floor": 1,
                "room": "1.01",
                "source_partition": 0,
                "source_offset": self.offset,
                **e,
            }
            row["ts"] = T0 + dt.timedelta(minutes=e["m"])
            row.setdefault("received_at", row["ts"])
            row.pop("m")
            self.offset += 1
            out.append(row)
        return pl.DataFrame(out, schema=SCHEMA)


def brief(transitions: list[Transition]) -> list[tuple]:
    return [(t.action, t.device_id, t.rule, (t.at - T0).total_seconds() / 60) for t in transitions]


def defaults(_tenant: str):
    return default_rules()


def test_three_smoke_readings_of_one_detector_are_one_alarm():
    ev, log = Evaluator(defaults), Log()
    smoke = [{"device_id": "s1", "device_type": "smoke", "m": m, "smoke": True} for m in (1, 2, 3)]
    assert brief(ev.feed(log.rows(*smoke))) == [("raised", "s1", "smoke", 1)]
    done = {"device_id": "s1", "device_type": "smoke", "m": 4, "smoke": False}
    assert brief(ev.feed(log.rows(done))) == [("ended", "s1", "smoke", 4)]


def test_a_threshold_must_hold_for_its_duration_and_ends_at_the_first_reading_within():
    ev, log = Evaluator(defaults), Log()  # too-hot: above 30 for 10 minutes
    hot = [{"device_id": "e1", "m": m, "temperature": 31.0} for m in range(0, 10)]
    assert ev.feed(log.rows(*hot)) == []  # 9 minutes only
    hot = [{"device_id": "e1", "m": m, "temperature": 32.0} for m in (10, 11)]
    assert brief(ev.feed(log.rows(*hot))) == [("raised", "e1", "too-hot", 10)]
    back = {"device_id": "e1", "m": 12, "temperature": 25.0}
    assert brief(ev.feed(log.rows(back))) == [("ended", "e1", "too-hot", 12)]
    # a dip below resets the clock: 5 + 5 minutes are not 10
    rows = [{"device_id": "e1", "m": 20 + m, "temperature": 35.0} for m in range(6)]
    rows += [{"device_id": "e1", "m": 26, "temperature": 20.0}]
    rows += [{"device_id": "e1", "m": 27 + m, "temperature": 35.0} for m in range(6)]
    assert ev.feed(log.rows(*rows)) == []


def test_batch_boundaries_do_not_change_the_transitions():
    rows = [
        {"device_id": "e1", "m": m, "temperature": 31.0 if 3 <= m < 20 else 20.0} for m in range(30)
    ]
    rows += [
        {"device_id": "s1", "device_type": "smoke", "m": m, "smoke": m % 7 == 0} for m in range(30)
    ]
    rows.sort(key=lambda r: r["m"])  # on time: the log holds them in about event-time order
    whole = Evaluator(defaults).feed(Log().rows(*rows))
    ev, log, pieces = Evaluator(defaults), Log(), []
    for i in range(0, len(rows), 4):
        pieces += ev.feed(log.rows(*rows[i : i + 4]))
    assert sorted(brief(pieces)) == sorted(brief(whole))
    assert ("raised", "e1", "too-hot", 13) in brief(whole)
    assert ("ended", "e1", "too-hot", 20) in brief(whole)


def test_silence_is_a_gap_or_a_watermark_past_the_last_reading():
    ev, log = Evaluator(defaults), Log()  # silent: 15 minutes
    rows = [{"device_id": "quiet", "m": 0, "temperature": 20.0}]
    rows += [{"device_id": "busy", "m": m, "temperature": 20.0} for m in range(0, 16)]
    assert brief(ev.feed(log.rows(*rows))) == [("raised", "quiet", "silent", 15)]
    back = {"device_id": "quiet", "m": 17, "temperature": 20.0}
    assert brief(ev.feed(log.rows(back))) == [("ended", "quiet", "silent", 17)]
    # a gap seen within one batch raises and ends
    gap = [{"device_id": "busy", "m": 40, "temperature": 20.0}]
    assert brief(ev.feed(log.rows(*gap))) == [
        ("raised", "busy", "silent", 30),
        ("ended", "busy", "silent", 40),
        ("raised", "quiet", "silent", 32),  # the watermark moved to 40
    ]


def test_a_device_whose_clock_runs_fast_does_not_make_others_silent():
    ev, log = Evaluator(defaults), Log()
    rows = [{"device_id": "a", "m": 0, "temperature": 20.0}]
    # ts one hour ahead, received now: the watermark moves to the receive time only
    rows += [
        {
            "device_id": "fast",
            "m": 60,
            "received_at": T0 + dt.timedelta(minutes=1),
            "temperature": 20.0,
        }
    ]
    assert ev.feed(log.rows(*rows)) == []


def test_rules_are_per_tenant_and_scoped():
    mine = parse_rules(
        '[[rule]]\nname = "rack"\nreading = "temperature"\nabove = 27\nseverity = "major"\n'
        'rooms = ["3.12"]',
        source="t-1.toml",
    )
    ev, log = Evaluator(lambda t: mine if t == "t-1" else ()), Log()
    rows = [
        {"device_id": "r", "room": "3.12", "m": 0, "temperature": 28.0},
        {"device_id": "o", "room": "3.13", "m": 0, "temperature": 28.0},
        {"device_id": "x", "room": "3.12", "m": 0, "temperature": 28.0, "tenant_id": "t-2"},
    ]
    assert brief(ev.feed(log.rows(*rows))) == [("raised", "r", "rack", 0)]


def test_a_new_owner_seeded_with_open_alarms_ends_them():
    ev, log = Evaluator(defaults), Log()
    ev.seed([("t-1", "s1", "smoke", T0, 0.0)])
    back = {"device_id": "s1", "device_type": "smoke", "m": 5, "smoke": False}
    assert brief(ev.feed(log.rows(back))) == [("ended", "s1", "smoke", 5)]


def _flapping(start: int, minutes: int) -> list[dict]:
    """A broken detector: smoke, no smoke, smoke … a reading a minute."""
    return [
        {"device_id": "s1", "device_type": "smoke", "m": m, "smoke": m % 2 == 0}
        for m in range(start, start + minutes)
    ]


def test_a_flapping_device_raises_a_rule_at_most_n_times_an_hour_and_the_rest_are_counted():
    ev, log = Evaluator(defaults), Log()  # smoke: max_raises_per_hour = 6 (the default)
    out = ev.feed(log.rows(*_flapping(0, 70)))
    raised = [t for t in out if t.action == "raised"]
    # 6 raises in minutes 0..10; none told until the first leaves the hour (minute 60)
    assert [m for (_, _, _, m) in brief(raised)] == [0, 2, 4, 6, 8, 10, 60, 62, 64, 66, 68]
    # an end is told only for a raise that was told
    assert [m for (a, _, _, m) in brief(out) if a == "ended"] == [
        1,
        3,
        5,
        7,
        9,
        11,
        61,
        63,
        65,
        67,
        69,
    ]
    assert ev.suppressed == 24  # minutes 12, 14, … 58
    # the raise that reaches the limit says until when the rest are only counted
    assert raised[5].limit is not None and "until 2026-12-06T09:00:00Z" in raised[5].limit
    # and so does every later raise that fills the sliding hour again
    assert [m for (_, _, _, m), t in zip(brief(raised), raised, strict=True) if t.limit] == [
        10,
        60,
        62,
        64,
        66,
        68,
    ]
    # another device or rule has its own budget
    other = [{"device_id": "s2", "device_type": "smoke", "m": 70, "smoke": True}]
    assert brief(ev.feed(log.rows(*other))) == [("raised", "s2", "smoke", 70)]


def test_the_flood_limit_is_the_same_for_a_new_owner_that_replays():
    rows = _flapping(0, 40)
    first = Evaluator(defaults)
    whole = first.feed(Log().rows(*rows))
    # a new owner re-reads from minute 5, knowing the raises recorded before it
    since = T0 + dt.timedelta(minutes=5)
    ev = Evaluator(defaults)
    ev.seed_raises(
        ("t-1", t.device_id, t.rule, t.at) for t in whole if t.action == "raised" and t.at < since
    )
    ev.seed([("t-1", "s1", "smoke", T0 + dt.timedelta(minutes=4), 0.0)])  # open at minute 5
    log = Log()
    log.offset = 5
    again = ev.feed(log.rows(*[r for r in rows if r["m"] >= 5]))
    assert brief(again) == [b for b in brief(whole) if b[3] >= 5]
    assert [m for (a, _, _, m) in brief(again) if a == "raised"] == [6, 8, 10]
    assert ev.suppressed == first.suppressed == 14  # minutes 12, 14, … 38


def test_no_flood_limit_when_the_rule_says_0():
    (rule,) = parse_rules(
        '[[rule]]\nname = "smoke"\nreading = "smoke"\nseverity = "critical"\n'
        "max_raises_per_hour = 0\n",
        source="t",
    )
    ev = Evaluator(lambda _: [rule])
    raised = [t for t in ev.feed(Log().rows(*_flapping(0, 40))) if t.action == "raised"]
    assert len(raised) == 20 and ev.suppressed == 0


def _t(action, device, minute, rule="smoke"):
    return Transition(
        action,
        "t-1",
        device,
        rule,
        T0 + dt.timedelta(minutes=minute),
        severity="critical",
        kind="flag",
        reading="smoke",
        building_id="b-1",
    )


def _stored(planned: pl.DataFrame, before: pl.DataFrame | None = None) -> pl.DataFrame:
    """What the table holds after merging ``planned`` (new rows inserted, ends applied)."""
    keep = [
        "alarm_id",
        "tenant_id",
        "device_id",
        "rule",
        "raised_at",
        "ended_at",
        "cleared_at",
        "cleared_by",
    ]
    rows = planned.select(keep)
    if before is None:
        return rows
    updated = before.join(rows.select("alarm_id", e="ended_at"), on="alarm_id", how="left")
    updated = updated.with_columns(
        ended_at=pl.coalesce("ended_at", "e"),
        cleared_at=pl.coalesce("cleared_at", "e"),
        cleared_by=pl.when(pl.col("cleared_at").is_null() & pl.col("e").is_not_null())
        .then(pl.lit("rule"))
        .otherwise(pl.col("cleared_by")),
    ).drop("e")
    new = planned.filter(pl.col("_new")).select(keep)
    return pl.concat([updated, new])


def test_planning_is_idempotent_per_episode():
    now = T0 + dt.timedelta(hours=1)
    first = [_t("raised", "s1", 1), _t("ended", "s1", 4), _t("raised", "s1", 6)]
    nothing = pl.DataFrame(
        schema={
            "alarm_id": pl.String,
            "tenant_id": pl.String,
            "device_id": pl.String,
            "rule": pl.String,
            "raised_at": pl.Datetime("us", "UTC"),
            "ended_at": pl.Datetime("us", "UTC"),
            "cleared_at": pl.Datetime("us", "UTC"),
            "cleared_by": pl.String,
        }
    )
    planned = plan(nothing, first, now=now)
    assert planned["alarm_id"].to_list() == [
        alarm_id("t-1", "s1", "smoke", T0 + dt.timedelta(minutes=1)),
        alarm_id("t-1", "s1", "smoke", T0 + dt.timedelta(minutes=6)),
    ]
    table = _stored(planned)
    # the same transitions again, or a replay that starts mid-episode: nothing to do
    assert plan(table, first, now=now).height == 0
    assert plan(table, [_t("raised", "s1", 2), _t("ended", "s1", 4)], now=now).height == 0
    assert plan(table, [_t("raised", "s1", 8)], now=now).height == 0  # one is open
    # an end before the open episode was raised is not its end
    assert plan(table, [_t("ended", "s1", 5)], now=now).height == 0
    ended = plan(table, [_t("ended", "s1", 9)], now=now)
    assert ended.height == 1 and not ended["_new"][0]
    assert ended["ended_at"][0] == T0 + dt.timedelta(minutes=9)
    table = _stored(ended, table)
    assert plan(table, [_t("ended", "s1", 9)], now=now).height == 0
    assert table.filter(pl.col("ended_at").is_null()).height == 0
