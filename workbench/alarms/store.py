"""The ``alarms`` lake table: reading it in a principal's scope, the lifecycle actions
people take, and recording what the rules raise and end (the rules themselves:
:mod:`workbench.alarms.rulebook`).

One row per alarm (:data:`workbench.lake.schemas.ALARMS`): an *episode* of one rule's
condition on one device, from ``raised_at`` to ``ended_at`` in event time. An operator
``acknowledge``\\ s it, ``comment``\\ s on it and may ``clear`` it before the condition
ends; the rule clears it when the condition ends (``cleared_by = "rule"``) unless a
person did first. Every transition is appended to the row's ``history`` (JSON: action,
at, by, detail), in the same commit that makes it.

Recording is idempotent per episode (:func:`plan`): a raise that falls inside an
episode already stored, or while one is open, is the same alarm; an end applies to the
open episode only. So the processor may evaluate telemetry again after a crash and
record everything again without duplicating an alarm or a transition.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import polars as pl

from workbench.alarms.evaluate import Transition
from workbench.alarms.rules import (
    DEFAULT_RULES,
)
from workbench.config import Config
from workbench.exceptions import AccessDenied, InvalidInput, InvalidState, NotFound
from workbench.lake import schemas
from workbench.lake.tables import (
    ALARMS,
    latest_table,
    open_table,
    retry_on_conflict,
    writer_properties,
)
from workbench.tenancy.principal import Principal

__all__ = [
    "DEFAULT_RULES",
    "acknowledge",
    "alarm",
    "alarm_id",
    "alarms",
    "clear",
    "comment",
    "plan",
    "record",
]

logger = logging.getLogger(__name__)

_UTC_US = pl.Datetime("us", "UTC")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def alarm_id(tenant: str, device: str, rule: str, raised_at: dt.datetime) -> str:
    """The id of the episode of ``rule`` on ``device`` raised at ``raised_at``: the same
    whoever computes it, so a replay names the same alarm.

    >>> at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> alarm_id("t", "d", "smoke", at) == alarm_id("t", "d", "smoke", at)
    True
    >>> alarm_id("t", "d", "smoke", at) == alarm_id("t", "d", "smoke", at + dt.timedelta(seconds=1))
    False
    """
    text = f"{tenant}\x1f{device}\x1f{rule}\x1f{_iso(raised_at)}"
    return "al-" + hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


# --- reading ---------------------------------------------------------------------------


def _empty_alarms() -> pl.DataFrame:
    return pl.DataFrame(schema=pl.from_arrow(schemas.ALARMS.empty_table()).schema)  # type: ignore[union-attr]


def alarms(
    config: Config,
    *,
    principal: Principal,
    building_id: str | None = None,
    active: bool | None = None,
    device_ids: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Alarms in ``principal``'s scope, newest first (``active``: True only those not
    cleared, False only cleared ones)."""
    table = open_table(config, ALARMS)
    if table is None:
        return _empty_alarms()
    scan = pl.scan_delta(table).filter(principal.scope_filter())
    if building_id is not None:
        scan = scan.filter(pl.col("building_id") == building_id)
    if device_ids is not None:
        scan = scan.filter(pl.col("device_id").is_in(list(device_ids)))
    if active is not None:
        scan = scan.filter(pl.col("cleared_at").is_null() == active)
    return scan.sort("raised_at", "alarm_id", descending=[True, False]).collect()


def alarm(config: Config, alarm_id: str, *, principal: Principal) -> dict[str, Any]:
    """One alarm of ``principal``'s scope (NotFound for any other id, whether it exists or
    not, so ids cannot be probed)."""
    table = open_table(config, ALARMS)
    rows = (
        _empty_alarms()
        if table is None
        else pl.scan_delta(table)
        .filter(principal.scope_filter() & (pl.col("alarm_id") == alarm_id))
        .collect()
    )
    if not rows.height:
        raise NotFound(f"no alarm {alarm_id!r} of yours", hint="`workbench alarms list` lists them")
    row = rows.row(0, named=True)
    row["comments"] = json.loads(row["comments"])
    row["history"] = json.loads(row["history"])
    return row


# --- people's actions ---------------------------------------------------------------------

_CONCAT = (
    "CASE WHEN t.{c} = '[]' THEN s.{c} ELSE concat(rtrim(t.{c}, ']'), ',', ltrim(s.{c}, '[')) END"
)


# the history says what was done; a refusal says what may not be done
_VERBS = {"acknowledged": "acknowledge", "cleared": "clear", "commented": "comment on"}


def _act(
    config: Config,
    alarm_id_: str,
    *,
    principal: Principal,
    action: str,
    updates: dict[str, str],
    predicate: str | None,
    values: dict[str, Any],
    refused: str,
) -> dict[str, Any]:
    current = alarm(config, alarm_id_, principal=principal)  # scope check, NotFound
    if principal.role == "analyst":
        raise AccessDenied(
            f"not authorized: {principal.user} (analyst) may not {_VERBS[action]} alarms",
            hint="analysts read alarms; operators and viewers act on them",
        )
    now = _now()
    entry = {"action": action, "at": _iso(now), "by": principal.user}
    if values.get("text"):
        entry["detail"] = values["text"]
    source = {
        "alarm_id": alarm_id_,
        "at": now,
        "by": principal.user,
        "history": json.dumps([entry]),
        "comments": json.dumps(
            [{"at": _iso(now), "by": principal.user, "text": values.get("text", "")}]
        ),
    }
    frame = pl.DataFrame(
        [source],
        schema={
            "alarm_id": pl.String,
            "at": _UTC_US,
            "by": pl.String,
            "history": pl.String,
            "comments": pl.String,
        },
    ).to_arrow()
    sets = {**updates, "history": _CONCAT.format(c="history"), "updated_at": "s.at"}

    def attempt() -> int:
        table = latest_table(config, ALARMS)
        assert table is not None
        result = (
            table.merge(
                frame,
                "t.alarm_id = s.alarm_id",
                source_alias="s",
                target_alias="t",
                writer_properties=writer_properties(ALARMS),
            )
            .when_matched_update(sets, predicate=predicate)
            .execute()
        )
        return int(result.get("num_target_rows_updated", 0))

    if not retry_on_conflict(attempt, what=f"alarm {action}"):
        raise InvalidState(
            refused.format(**current), hint="`workbench alarms show` has its history"
        )
    return alarm(config, alarm_id_, principal=principal)


def _stamp(config: Config, alarm_id_: str, principal: Principal, done: str) -> dict[str, Any]:
    """Stamp ``<done>_by`` and ``<done>_at`` (acknowledged, cleared) once: a second time is
    refused, naming who did it first."""
    return _act(
        config,
        alarm_id_,
        principal=principal,
        action=done,
        updates={f"{done}_by": "s.by", f"{done}_at": "s.at"},
        predicate=f"t.{done}_at IS NULL",
        values={},
        refused=f"alarm {{alarm_id}} was {done} already, by {{{done}_by}} at {{{done}_at}}",
    )


def acknowledge(config: Config, alarm_id_: str, *, principal: Principal) -> dict[str, Any]:
    """Record that ``principal`` has seen the alarm (once: a second acknowledgement is
    refused, naming who acknowledged it)."""
    return _stamp(config, alarm_id_, principal, "acknowledged")


def clear(config: Config, alarm_id_: str, *, principal: Principal) -> dict[str, Any]:
    """Close the alarm before (or whether or not) its condition ended."""
    return _stamp(config, alarm_id_, principal, "cleared")


def comment(config: Config, alarm_id_: str, text: str, *, principal: Principal) -> dict[str, Any]:
    """Add ``text`` to the alarm's comments."""
    text = text.strip()
    if not text:
        raise InvalidInput("an empty comment", hint="say something")
    return _act(
        config,
        alarm_id_,
        principal=principal,
        action="commented",
        updates={"comments": _CONCAT.format(c="comments")},
        predicate=None,
        values={"text": text},
        refused="alarm {alarm_id} could not be commented",
    )


# --- what the rules raise and end ---------------------------------------------------------


@dataclasses.dataclass
class _Episode:
    row: dict[str, Any]
    new: bool
    appended: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def plan(
    existing: pl.DataFrame, transitions: Iterable[Transition], *, now: dt.datetime
) -> pl.DataFrame:
    """The rows to merge into ``alarms`` for ``transitions``, given the ``existing`` rows of
    their devices and rules: new episodes in full, ended ones with their end. A raise
    while an episode of the same device and rule is open, or at a time inside a stored
    episode, is that episode; an end applies to the open episode raised before it. So
    planning the same transitions again plans nothing.
    """
    episodes: dict[tuple[str, str, str], list[_Episode]] = {}
    for row in existing.iter_rows(named=True):
        key = (row["tenant_id"], row["device_id"], row["rule"])
        episodes.setdefault(key, []).append(_Episode(row, new=False))
    for t in transitions:
        mine = episodes.setdefault(t.key, [])
        open_ = [e for e in mine if e.row["ended_at"] is None]
        if t.action == "raised":
            inside = any(
                e.row["raised_at"] <= t.at < e.row["ended_at"]
                for e in mine
                if e.row["ended_at"] is not None
            )
            if open_ or inside:
                continue
            # "recorded": when the entry was written (``at`` is event time), which the
            # notifier compares with how far back it still remembers deliveries
            entry = {
                "action": "raised",
                "at": _iso(t.at),
                "by": f"rule:{t.rule}",
                "recorded": _iso(now),
            }
            if t.value is not None:
                entry["detail"] = f"{t.reading} {t.value:g}"
            if t.limit is not None:
                entry["limit"] = t.limit
            mine.append(
                _Episode(
                    {
                        "alarm_id": alarm_id(t.tenant_id, t.device_id, t.rule, t.at),
                        "tenant_id": t.tenant_id,
                        "building_id": t.building_id,
                        "device_id": t.device_id,
                        "device_type": t.device_type,
                        "floor": t.floor,
                        "room": t.room,
                        "rule": t.rule,
                        "kind": t.kind,
                        "reading": t.reading,
                        "severity": t.severity,
                        "raised_at": t.at,
                        "raised_value": t.value,
                        "ended_at": None,
                        "cleared_at": None,
                        "cleared_by": None,
                        "acknowledged_at": None,
                        "acknowledged_by": None,
                        "comments": "[]",
                        "history": "[]",
                        "updated_at": now,
                        "source_partition": t.source_partition,
                        "source_offset": t.source_offset,
                    },
                    new=True,
                    appended=[entry],
                )
            )
        else:
            ending = [e for e in open_ if e.row["raised_at"] <= t.at]
            if not ending:
                continue
            e = max(ending, key=lambda e: e.row["raised_at"])
            e.row["ended_at"] = t.at
            if e.row["cleared_at"] is None:
                e.row["cleared_at"], e.row["cleared_by"] = t.at, "rule"
            e.appended.append(
                {
                    "action": "cleared",
                    "at": _iso(t.at),
                    "by": f"rule:{t.rule}",
                    "recorded": _iso(now),
                }
            )
    rows = []
    for mine in episodes.values():
        for e in mine:
            if not e.appended:
                continue
            row = dict(e.row)
            row["history"] = json.dumps(e.appended)
            row["_new"] = e.new
            row["updated_at"] = now
            rows.append(row)
    schema = {**pl.from_arrow(schemas.ALARMS.empty_table()).schema, "_new": pl.Boolean}  # type: ignore[union-attr]
    return pl.DataFrame(rows, schema=schema)


def record(
    config: Config,
    transitions: Sequence[Transition],
    *,
    now: dt.datetime,
    commit_properties: Callable[[Any], Any] | None = None,
) -> int:
    """Record ``transitions`` in ``alarms`` in one commit (carrying
    ``commit_properties(table)``, the processor's offsets as of the ``DeltaTable`` the
    commit is made against); return how many alarms it raised or ended. Nothing is
    committed when they change nothing (a replay)."""
    if not transitions:
        return 0
    devices = sorted({t.device_id for t in transitions})
    earliest = min(t.at for t in transitions)
    # plan() looks at open episodes and at those a transition may fall inside: none
    # that ended before the earliest transition matters, however many a device has had
    relevant = pl.col("device_id").is_in(devices) & (
        pl.col("ended_at").is_null() | (pl.col("ended_at") > pl.lit(earliest, _UTC_US))
    )

    def attempt() -> int:
        table = latest_table(config, ALARMS)
        assert table is not None
        existing = pl.scan_delta(table).filter(relevant).collect()
        rows = plan(existing, transitions, now=now)
        if not rows.height:
            return 0
        source = rows.drop("_new").to_arrow().cast(schemas.ALARMS)
        (
            table.merge(
                source,
                "t.alarm_id = s.alarm_id",
                source_alias="s",
                target_alias="t",
                writer_properties=writer_properties(ALARMS),
                commit_properties=None if commit_properties is None else commit_properties(table),
            )
            .when_matched_update(
                {
                    "ended_at": "s.ended_at",
                    "cleared_at": "CASE WHEN t.cleared_at IS NULL THEN s.ended_at "
                    "ELSE t.cleared_at END",
                    "cleared_by": "CASE WHEN t.cleared_at IS NULL THEN 'rule' "
                    "ELSE t.cleared_by END",
                    "history": _CONCAT.format(c="history"),
                    "updated_at": "s.updated_at",
                },
                predicate="t.ended_at IS NULL AND s.ended_at IS NOT NULL",
            )
            .when_not_matched_insert_all()
            .execute()
        )
        return rows.height

    return retry_on_conflict(attempt, what="alarms merge")


def jsonable(value: Any) -> Any:
    """``value`` as JSON can carry it: a datetime as UTC ISO 8601 with ``Z``, the rest as
    is (what the CLI's ``--json`` and the webhooks' bodies both say of a time)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return value
