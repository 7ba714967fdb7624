"""Evaluating alarm rules over a stream of readings, in event time: pure logic, no I/O.

An :class:`Evaluator` is fed the on-time telemetry rows of the partitions it owns, in
the order of the Kafka log (partition, offset), and answers the :class:`Transition`\\ s
they cause: an alarm ``raised`` or ``ended`` (its condition no longer holds), per device
and rule, at an event time. Late rows (after their window's grace) are not fed, exactly
as they are left out of the aggregates.

* flag rule (``smoke``): raised at the first reading that is set (after ``for`` of set
  readings, when given), ended at the first that is not;
* threshold rule: raised once the readings have been beyond the threshold for ``for``
  (at the reading that completes it), ended at the first reading back within;
* silence rule: a gap of ``silent_for`` between two of a device's readings raises an
  alarm at ``last + silent_for`` and ends it at the next reading; a device still silent
  is raised once its partition's event-time watermark (``min(ts, received_at)``, as
  for lateness) has passed ``last + silent_for``.

**Flood limit**: a device raises a rule at most ``max_raises_per_hour`` times in any
hour of event time (the raises' own times, so a replay decides alike); a raise beyond
is not raised but counted (:attr:`Evaluator.suppressed`), and so is not its end. The
raise that reaches the limit says so (:attr:`Transition.limit`).

Event time never runs backwards per device and rule: a reading older than the last one
seen counts at the last one's time. The evaluator keeps its conditions in memory; who
owns it rebuilds them after a restart by feeding it recent telemetry again
(:meth:`Evaluator.seed` for alarms open since before that), and writing transitions is
idempotent per alarm episode (:mod:`workbench.alarms.store`).

>>> import datetime as dt
>>> import polars as pl
>>> from workbench.alarms.rules import default_rules
>>> t0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
>>> rows = pl.DataFrame({"device_id": ["d1"] * 3, "tenant_id": "t", "building_id": "b",
...     "device_type": "smoke", "floor": 1, "room": "1.01",
...     "ts": [t0 + dt.timedelta(minutes=m) for m in range(3)], "smoke": [False, True, True],
...     "source_partition": 0, "source_offset": [0, 1, 2]})
>>> [(t.action, t.rule, t.at.minute) for t in Evaluator(lambda _: default_rules()).feed(rows)]
[('raised', 'smoke', 1)]
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import polars as pl

from workbench.alarms.rules import Rule

__all__ = ["Evaluator", "RulesFor", "Transition"]

RulesFor = Callable[[str], Sequence[Rule]]
"""The rules of a tenant (its own document, or the defaults)."""

_DEVICE_COLUMNS = ("building_id", "device_type", "floor", "room")


@dataclasses.dataclass(frozen=True)
class Transition:
    """An alarm raised or ended, for one device and rule, at an event time."""

    action: Literal["raised", "ended"]
    tenant_id: str
    device_id: str
    rule: str
    at: dt.datetime
    severity: str = ""
    kind: str = ""
    reading: str | None = None
    value: float | None = None
    building_id: str = ""
    device_type: str | None = None
    floor: int | None = None
    room: str | None = None
    source_partition: int = -1
    source_offset: int = -1
    limit: str | None = None  # set on the raise that reaches the rule's flood limit

    @property
    def key(self) -> tuple[str, str, str]:
        """(tenant, device, rule): at most one alarm of a key is open at a time."""
        return (self.tenant_id, self.device_id, self.rule)


@dataclasses.dataclass
class _Condition:
    active: bool  # False: pending (the condition holds, not for long enough yet)
    since: dt.datetime
    last: dt.datetime
    suppressed: bool = False  # its raise was over the flood limit: its end is not told


_HOUR = dt.timedelta(hours=1)


_UTC_US = pl.Datetime("us", "UTC")
# The last reading of every device seen: what silence rules watch.
_SEEN: dict[str, pl.DataType] = {
    "tenant_id": pl.String(),
    "device_id": pl.String(),
    "last": _UTC_US,
    "source_partition": pl.Int64(),
    "source_offset": pl.Int64(),
    "building_id": pl.String(),
    "device_type": pl.String(),
    "floor": pl.Int32(),
    "room": pl.String(),
}


def _applies(rule: Rule) -> pl.Expr:
    expr = pl.lit(True)
    if rule.device_types:
        expr &= pl.col("device_type").is_in(sorted(rule.device_types))
    if rule.buildings:
        expr &= pl.col("building_id").is_in(sorted(rule.buildings))
    if rule.rooms:
        expr &= pl.col("room").is_in(sorted(rule.rooms))
    return expr


def _violating(rule: Rule) -> pl.Expr:
    assert rule.reading is not None
    value = pl.col(rule.reading)
    if rule.kind == "flag":
        return value.fill_null(False)
    assert rule.threshold is not None
    return (value > rule.threshold) if rule.kind == "above" else (value < rule.threshold)


class Evaluator:
    """Alarm conditions of the devices of some partitions, fed in log order."""

    def __init__(self, rules_for: RulesFor) -> None:
        self.rules_for = rules_for
        self.conditions: dict[tuple[str, str, str], _Condition] = {}
        self.seen = pl.DataFrame(schema=_SEEN)  # a frame: 100,000 devices, batch by batch
        self.watermarks: dict[int, dt.datetime] = {}
        # no device can fall silent before this event time (None: unknown, look)
        self._next_due: dt.datetime | None = None
        # raise times of the last hour per (tenant, device, rule): the flood limit
        self.raises: dict[tuple[str, str, str], list[dt.datetime]] = {}
        self.suppressed = 0  # raises over the flood limit, counted not told

    # --- memory ------------------------------------------------------------------------

    def seed(self, open_alarms: Iterable[tuple[str, str, str, dt.datetime, float]]) -> None:
        """Alarms open since before the telemetry a new owner re-reads: ``(tenant, device,
        rule, raised_at, silent_for_s)`` (silent_for_s 0 unless a silence rule)."""
        silent = []
        for tenant, device, rule, raised_at, silent_for in open_alarms:
            key = (tenant, device, rule)
            if key not in self.conditions:
                self.conditions[key] = _Condition(True, raised_at, raised_at)
            if silent_for:
                last = raised_at - dt.timedelta(seconds=silent_for)
                silent.append({"tenant_id": tenant, "device_id": device, "last": last})
        if silent:
            known = pl.DataFrame(silent, schema={k: _SEEN[k] for k in silent[0]})
            known = known.join(self.seen, on=["tenant_id", "device_id"], how="anti")
            fill = {k: -1 for k in ("source_partition", "source_offset")}
            self.seen = pl.concat(
                [self.seen, known.with_columns(**{k: pl.lit(v) for k, v in fill.items()})],
                how="diagonal_relaxed",
            ).select(pl.col(k).cast(t) for k, t in _SEEN.items())
        self._next_due = None

    def seed_raises(self, raised: Iterable[tuple[str, str, str, dt.datetime]]) -> None:
        """Raises recorded before the telemetry a new owner re-reads, ``(tenant, device,
        rule, raised_at)``: the flood limit counts them."""
        for tenant, device, rule, at in raised:
            self.raises.setdefault((tenant, device, rule), []).append(at)
        for times in self.raises.values():
            times.sort()

    def rules_changed(self) -> None:
        """The rules changed: silence deadlines are looked at again."""
        self._next_due = None

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the devices of ``partitions`` (another owner evaluates them now)."""
        gone = sorted(set(partitions))
        leaving = self.seen.filter(pl.col("source_partition").is_in(gone))
        devices = set(zip(leaving["tenant_id"], leaving["device_id"], strict=True))
        self.seen = self.seen.filter(~pl.col("source_partition").is_in(gone))
        self.conditions = {k: c for k, c in self.conditions.items() if k[:2] not in devices}
        self.raises = {k: t for k, t in self.raises.items() if k[:2] not in devices}
        for p in gone:
            self.watermarks.pop(p, None)

    # --- evaluation ----------------------------------------------------------------------

    def feed(self, rows: pl.DataFrame) -> list[Transition]:
        """The transitions ``rows`` (on-time telemetry, in log order) cause."""
        if not len(rows):
            return []
        rows = rows.sort("source_partition", "source_offset")
        out: list[Transition] = []
        for tenant in rows["tenant_id"].unique(maintain_order=True).to_list():
            # a building's rejected-event rate is counted from the lake, not from readings
            rules = [r for r in self.rules_for(tenant) if r.enabled and r.kind != "rejected_rate"]
            mine = rows.filter(pl.col("tenant_id") == tenant)
            for rule in rules:
                if rule.kind == "silent":
                    out += self._gaps(tenant, rule, mine)
                else:
                    out += self._readings(tenant, rule, mine)
            silences = [r.silent_for_s for r in rules if r.kind == "silent"]
            self._remember(tenant, mine, min(silences) if silences else None)
        self._advance(rows)
        out += self._still_silent()
        return out

    def _readings(self, tenant: str, rule: Rule, rows: pl.DataFrame) -> list[Transition]:
        assert rule.reading is not None
        if rule.reading not in rows.columns:
            return []
        tracked = [d for (t, d, r) in self.conditions if t == tenant and r == rule.name]
        scoped = rows.filter(_applies(rule) & pl.col(rule.reading).is_not_null())
        # a device matters from its first violating reading on, or when it has a condition
        violating = scoped.filter(_violating(rule))["device_id"].unique().to_list()
        candidates = scoped.filter(pl.col("device_id").is_in([*tracked, *violating]))
        candidates = candidates.with_columns(_violating=_violating(rule))
        out: list[Transition] = []
        for row in candidates.iter_rows(named=True):
            key = (tenant, row["device_id"], rule.name)
            cond = self.conditions.get(key)
            at = row["ts"] if cond is None else max(row["ts"], cond.last)
            value = row[rule.reading]
            number = float(value) if value is not None else None
            if not row["_violating"]:
                if cond is not None:
                    del self.conditions[key]
                    if cond.active and not cond.suppressed:
                        out.append(self._transition("ended", tenant, rule, row, at, number))
                continue
            if cond is None:
                cond = self.conditions[key] = _Condition(False, at, at)
            cond.last = at
            if not cond.active and (at - cond.since).total_seconds() >= rule.for_s:
                cond.active = True
                self._raise(out, cond, tenant, rule, row, at, number)
        return out

    def _raise(
        self,
        out: list[Transition],
        cond: _Condition,
        tenant: str,
        rule: Rule,
        row: dict[str, Any],
        at: dt.datetime,
        value: float | None,
    ) -> None:
        """Append the raise of ``cond`` at ``at``, unless it is over the rule's flood limit:
        then mark it suppressed and count it."""
        key = (tenant, row["device_id"], rule.name)
        recent = [t for t in self.raises.get(key, ()) if at - _HOUR < t <= at]
        limit = rule.max_raises_per_hour
        if limit and len(recent) >= limit:
            cond.suppressed = True
            self.suppressed += 1
            return
        recent.append(at)
        self.raises[key] = recent
        raised = self._transition("raised", tenant, rule, row, at, value)
        if limit and len(recent) == limit:
            until = (recent[0] + _HOUR).astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
            raised = dataclasses.replace(
                raised,
                limit=f"flood limit: {limit} raises in an hour; until {until} further "
                "raises of this rule on this device are counted, not raised",
            )
        out.append(raised)

    def _gaps(self, tenant: str, rule: Rule, rows: pl.DataFrame) -> list[Transition]:
        gap = dt.timedelta(seconds=rule.silent_for_s)
        scoped = rows.filter(_applies(rule))
        if not len(scoped):
            return []
        before = self.seen.filter(pl.col("tenant_id") == tenant).select("device_id", _before="last")
        open_ = {d for (t, d, r), c in self.conditions.items() if t == tenant and r == rule.name}
        # each device's readings together, in log order (a window per device cost ~1 s
        # for 100,000 devices); only the three columns that finds gaps are sorted, and the
        # few candidates' rows joined back (sorting whole rows took most of this time)
        same = pl.col("device_id") == pl.col("device_id").shift(1)
        scoped = scoped.with_row_index("_i")
        frame = (
            scoped.select("_i", "device_id", "ts")
            .sort("device_id", "_i")
            .with_columns(
                _prev=pl.when(same).then(pl.col("ts").shift(1)),
                _first=~same.fill_null(False),
            )
            .join(before, on="device_id", how="left", maintain_order="left")
            .with_columns(
                _prev=pl.when(pl.col("_first")).then(pl.col("_before")).otherwise(pl.col("_prev"))
            )
        )
        picked = frame.filter(
            (pl.col("_first") & pl.col("device_id").is_in(sorted(open_)))
            | ((pl.col("ts") - pl.col("_prev")) >= gap)
        ).select("_i", "_prev")
        candidates = scoped.join(picked, on="_i", how="inner").sort("_i")
        out: list[Transition] = []
        last: dict[str, dt.datetime] = {}
        for row in candidates.iter_rows(named=True):
            key = (tenant, row["device_id"], rule.name)
            prev = last.get(row["device_id"]) or row["_prev"]
            cond = self.conditions.pop(key, None)
            at = row["ts"] if prev is None else max(row["ts"], prev)
            if cond is None and prev is not None and at - prev >= gap:
                cond = _Condition(True, prev + gap, prev + gap)
                self._raise(out, cond, tenant, rule, row, prev + gap, None)
            if cond is not None and not cond.suppressed:
                out.append(self._transition("ended", tenant, rule, row, max(at, cond.last), None))
            last[row["device_id"]] = at
        return out

    def _remember(self, tenant: str, rows: pl.DataFrame, silent_for: float | None) -> None:
        latest = rows.group_by("device_id").agg(
            pl.col("ts").max(),
            pl.col("source_partition").last().cast(pl.Int64),
            pl.col("source_offset").last().cast(pl.Int64),
            *(pl.col(c).last() for c in _DEVICE_COLUMNS if c in rows.columns),
        )
        old = self.seen.filter(pl.col("tenant_id") == tenant).select("device_id", _old="last")
        latest = (
            latest.join(old, on="device_id", how="left")
            .with_columns(
                tenant_id=pl.lit(tenant),
                last=pl.max_horizontal(pl.col("ts").cast(_UTC_US), "_old"),
            )
            .select(
                [
                    pl.col(k).cast(t)
                    if k in latest.columns or k in ("tenant_id", "last")
                    else pl.lit(None, t).alias(k)
                    for k, t in _SEEN.items()
                ]
            )
        )
        keep = self.seen.join(
            latest.select("tenant_id", "device_id"), on=["tenant_id", "device_id"], how="anti"
        )
        self.seen = pl.concat([keep, latest])
        if silent_for is not None and self._next_due is not None and len(latest):
            earliest = latest["last"].min()
            assert isinstance(earliest, dt.datetime)
            self._next_due = min(self._next_due, earliest + dt.timedelta(seconds=silent_for))

    def _advance(self, rows: pl.DataFrame) -> None:
        moves = pl.min_horizontal("ts", pl.col("received_at").fill_null(pl.col("ts")))
        if "received_at" not in rows.columns:
            moves = pl.col("ts")
        ends = rows.group_by("source_partition").agg(
            moves.max().alias("wm"), pl.col("source_offset").max()
        )
        for p, wm, _ in ends.iter_rows():
            if p not in self.watermarks or wm > self.watermarks[p]:
                self.watermarks[p] = wm

    def _still_silent(self) -> list[Transition]:
        # looking at every device costs a pass over all of them: only when one can be due
        due = self._next_due
        if due is not None and self.watermarks and max(self.watermarks.values()) < due:
            return []
        out: list[Transition] = []
        never = dt.datetime.max.replace(tzinfo=dt.UTC)
        next_due = never
        marks = pl.DataFrame(
            {
                "source_partition": list(self.watermarks),
                "_wm": list(self.watermarks.values()),
            },
            schema={"source_partition": pl.Int64, "_wm": _UTC_US},
        )
        watched = self.seen.join(marks, on="source_partition")
        for tenant in watched["tenant_id"].unique().to_list():
            rules = [r for r in self.rules_for(tenant) if r.enabled and r.kind == "silent"]
            mine = watched.filter(pl.col("tenant_id") == tenant)
            for rule in rules:
                active = [d for (t, d, r) in self.conditions if t == tenant and r == rule.name]
                waiting = mine.filter(
                    _applies(rule) & ~pl.col("device_id").is_in(active)
                ).with_columns(_due=pl.col("last") + dt.timedelta(seconds=rule.silent_for_s))
                later = waiting.filter(pl.col("_wm") < pl.col("_due"))["_due"].min()
                if isinstance(later, dt.datetime):
                    next_due = min(next_due, later)
                for row in waiting.filter(pl.col("_wm") >= pl.col("_due")).iter_rows(named=True):
                    at = row["_due"]
                    cond = _Condition(True, at, at)
                    self.conditions[(tenant, row["device_id"], rule.name)] = cond
                    self._raise(out, cond, tenant, rule, row, at, None)
        self._next_due = next_due
        return out

    @staticmethod
    def _transition(
        action: Literal["raised", "ended"],
        tenant: str,
        rule: Rule,
        row: dict[str, Any],
        at: dt.datetime,
        value: float | None,
    ) -> Transition:
        return Transition(
            action=action,
            tenant_id=tenant,
            device_id=row["device_id"],
            rule=rule.name,
            at=at,
            severity=rule.severity,
            kind=rule.kind,
            reading=rule.reading,
            value=value,
            building_id=row.get("building_id") or "",
            device_type=row.get("device_type"),
            floor=row.get("floor"),
            room=row.get("room"),
            source_partition=int(row.get("source_partition", -1)),
            source_offset=int(row.get("source_offset", -1)),
        )
