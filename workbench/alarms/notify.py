"""Alarm notifications: each tenant's contact points, told of its alarms at least once.

A :class:`Notifier` runs apart from ingestion (``workbench alarms notify``, its own
process with its own state file), so a slow or dead endpoint never slows the processor:
it reads the ``alarms`` table, and for every alarm event a tenant's contact point wants
(``raised`` by default; ``cleared``, ``acknowledged``) it queues one notification, which
:class:`~workbench.alarms.channels.Channels` sends as a signed webhook POST, a mail or a
log line. While an alarm is neither acknowledged nor cleared, contact points with
``repeat_every`` get it again (``repeated``, dedup key ``<alarm id>:repeat-<n>``) and those
with ``escalate_after`` hand it to their ``escalate_to`` (``escalated``). A notification
due while a ``[[silence]]`` matches its alarm is not sent, and counted.

Delivered at least once: a delivery counts once the endpoint took it, and is written to
the state file after that; a failure is retried with exponential back-off (1 s, 2 s,
4 s … up to 5 minutes), logged and kept in the state file with its last error. A
receiver drops a repeated dedup key. Webhook targets on loopback, link-local, private
or otherwise reserved addresses are refused unless ``WORKBENCH_WEBHOOK_ALLOW`` lists
them (:func:`~workbench.alarms.targets.check_target`).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from workbench.alarms.channels import Channels, sign, webhook_secret
from workbench.alarms.contactpoints import ContactPoint
from workbench.alarms.rulebook import RuleBook
from workbench.alarms.store import jsonable
from workbench.config import Config
from workbench.filemodes import write_json
from workbench.heartbeat import heartbeat_path as component_heartbeat
from workbench.heartbeat import read_heartbeat
from workbench.lake.tables import ALARMS, latest_table

__all__ = [
    "Notifier",
    "heartbeat_path",
    "notifier_health",
    "notifier_status",
    "secret_text",
    "sign",
    "webhook_secret",
]

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 300.0


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _iso_at(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


_FIELDS = (
    "alarm_id",
    "tenant_id",
    "building_id",
    "device_id",
    "device_type",
    "floor",
    "room",
    "rule",
    "severity",
    "raised_at",
    "raised_value",
    "cleared_at",
    "cleared_by",
    "acknowledged_at",
    "acknowledged_by",
)


def _written(entry: dict[str, Any]) -> dt.datetime:
    """When a history entry was written: ``recorded`` for the rules' entries (their
    ``at`` is event time), ``at`` for people's (the wall time they acted)."""
    return dt.datetime.fromisoformat(entry.get("recorded", entry["at"]))


def _refs(contacts: tuple[ContactPoint, ...]) -> Iterator[tuple[str, ContactPoint]]:
    """Each contact point with the reference its deliveries are kept under: its index
    among its channel's (``0``, ``email0``, ``log0``; webhooks' as before emails)."""
    counts: dict[str, int] = {}
    for contact in contacts:
        i = counts.get(contact.channel, 0)
        counts[contact.channel] = i + 1
        yield ("" if contact.channel == "webhook" else contact.channel) + str(i), contact


class Notifier:
    """Delivers alarm events to the tenants' contact points, with its own state file.

    Each pass reads only what changed: nothing while the table's version stands still,
    otherwise the rows updated since the *horizon*, ``remember_s`` (10 minutes) before
    the newest ``updated_at`` it has read. That margin covers writers whose clocks or
    commits lag each other. An event written before the horizon is never queued again,
    so the state keeps deliveries only back to the horizon, plus what is still pending
    and the alarms *watched* for repeats and escalation (active and unacknowledged).
    ``clock`` (Unix seconds) decides what is due: tests inject one.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        state_path: Path | None = None,
        remember_s: float = 600.0,
    ) -> None:
        self.config = config
        self.clock = clock
        self.remember = dt.timedelta(seconds=remember_s)
        self.rules = RuleBook(config)
        self.channels = Channels(config)
        self.state_path = state_path or config.run_dir / "notifications.json"
        # slot -> when its event was written (ISO), kept while that is after the horizon
        self.delivered: dict[str, str] = {}
        self.pending: dict[str, dict[str, Any]] = {}
        # slots a silence held back (-> when written), forgotten like deliveries
        self.suppressed: dict[str, str] = {}
        # "<tenant>/<silence id or #n>" -> notifications that silence held back
        self.silenced: dict[str, int] = {}
        self.suppressed_since_start = 0
        # alarm id -> what repeats and escalations need, while active and unacknowledged
        self.watch: dict[str, dict[str, Any]] = {}
        self.newest: dt.datetime | None = None  # the newest updated_at read
        self.version = -1  # the alarms table's version last read
        self.rows_read = 0  # rows the last pass read (what "only what changed" costs)
        # before the notifier was a stack component its state had the name the
        # supervisor now gives its own record of the process
        older = config.run_dir / "notifier.state.json"
        source = self.state_path if self.state_path.exists() or state_path else older
        if source.exists():
            state = json.loads(source.read_text())
            # a state file from before horizons held delivery times (Unix seconds)
            self.delivered = {
                slot: at if isinstance(at, str) else _iso_at(float(at))
                for slot, at in state.get("delivered", {}).items()
            }
            self.pending = state.get("pending", {})
            self.suppressed = state.get("suppressed", {})
            self.silenced = state.get("silenced", {})
            self.watch = state.get("watch", {})
            if state.get("newest"):
                self.newest = dt.datetime.fromisoformat(state["newest"])

    @property
    def horizon(self) -> dt.datetime | None:
        """Events written before this are delivered or pending already (None: read all)."""
        return None if self.newest is None else self.newest - self.remember

    def _save(self) -> None:
        state = {
            "delivered": self.delivered,
            "pending": self.pending,
            "suppressed": self.suppressed,
            "silenced": self.silenced,
            "watch": self.watch,
            "newest": None if self.newest is None else self.newest.isoformat(),
        }
        write_json(self.state_path, state)

    def _queue(
        self,
        fields: dict[str, Any],
        key: str,
        event: str,
        ref: str,
        contact: ContactPoint,
        written: str,
        **extra: Any,
    ) -> None:
        slot = f"{key}@{ref}:{contact.target}"
        if slot in self.delivered or slot in self.pending or slot in self.suppressed:
            return
        item: dict[str, Any] = {
            "channel": contact.channel,
            "target": contact.target,
            "tenant_id": fields["tenant_id"],
            "key": key,
            "body": {"dedup_key": key, "event": event, **fields, **extra},
            "written": written,
            "attempts": 0,
            "next_at": 0.0,
        }
        if contact.channel == "webhook":
            item["url"] = contact.url
        elif contact.channel == "email":
            item["to"] = list(contact.to)
        self.pending[slot] = item

    def _events(self, *, rules_moved: bool = False) -> bool:
        """Queue the alarm events written since the horizon and not delivered or queued
        yet; True when the table (or a contact point) moved."""
        self.rows_read = 0
        table = latest_table(self.config, ALARMS)
        if table is None:
            return False
        version = int(table.version())
        if version == self.version and not rules_moved:
            return False
        horizon = self.horizon
        scan = pl.scan_delta(table)
        if horizon is not None:
            scan = scan.filter(pl.col("updated_at") >= pl.lit(horizon, pl.Datetime("us", "UTC")))
        rows = scan.select(*_FIELDS, "history", "updated_at").collect()
        self.rows_read = rows.height
        for row in rows.iter_rows(named=True):
            contacts = tuple(_refs(self.rules.contacts(row["tenant_id"])))
            if not contacts:
                continue
            fields = {f: jsonable(row[f]) for f in _FIELDS}
            written: dict[str, dt.datetime] = {}
            for entry in json.loads(row["history"]):
                if entry["action"] in {"raised", "cleared", "acknowledged"}:
                    written.setdefault(entry["action"], _written(entry))
            self._watch(row, fields, written, contacts)
            for event, at in sorted(written.items()):
                if horizon is not None and at < horizon:
                    continue  # delivered, or pending, before the state forgot it
                key = row["alarm_id"] if event == "raised" else f"{row['alarm_id']}:{event}"
                for ref, contact in contacts:
                    if contact.wants(event, row["severity"], row["building_id"]):
                        self._queue(fields, key, event, ref, contact, at.isoformat())
        newest = rows["updated_at"].max() if rows.height else None
        if isinstance(newest, dt.datetime) and (self.newest is None or newest > self.newest):
            self.newest = newest
        self.version = version
        self._forget()
        return True

    def _watch(
        self,
        row: dict[str, Any],
        fields: dict[str, Any],
        written: dict[str, dt.datetime],
        contacts: tuple[tuple[str, ContactPoint], ...],
    ) -> None:
        """Watch an active, unacknowledged alarm some contact point repeats or escalates;
        stop (and drop its queued repeats and escalations) once it is either no more."""
        alarm = row["alarm_id"]
        follows = any(
            (c.repeat_every_s or c.escalate_after_s)
            and c.matches(row["severity"], row["building_id"])
            for _, c in contacts
        )
        if follows and row["cleared_at"] is None and row["acknowledged_at"] is None:
            if "raised" in written:
                self.watch.setdefault(
                    alarm,
                    {"fields": fields, "raised": written["raised"].timestamp(), "repeats": {}},
                )
            return
        if self.watch.pop(alarm, None) is not None:
            for slot, item in list(self.pending.items()):
                body = item["body"]
                if body["alarm_id"] == alarm and body["event"] in ("repeated", "escalated"):
                    del self.pending[slot]

    def _due(self, now: float) -> None:
        """Queue the repeats and escalations of watched alarms that are due at ``now``;
        after a pause, only the latest repeat (the missed ones would say nothing new)."""
        for alarm, seen in self.watch.items():
            fields = seen["fields"]
            contacts = tuple(_refs(self.rules.contacts(fields["tenant_id"])))
            named = {c.name: (ref, c) for ref, c in contacts if c.name}
            age = now - seen["raised"]
            for ref, contact in contacts:
                if not contact.wants("raised", fields["severity"], fields["building_id"]):
                    continue
                every = contact.repeat_every_s
                if every and (n := int(age // every)) > seen["repeats"].get(ref, 0):
                    seen["repeats"][ref] = n
                    at = _iso_at(seen["raised"] + n * every)
                    key = f"{alarm}:repeat-{n}"
                    self._queue(fields, key, "repeated", ref, contact, at, repeat=n)
                after = contact.escalate_after_s
                escalated = seen.setdefault("escalated", [])
                if after and age >= after and ref not in escalated:
                    escalated.append(ref)  # once: its delivery is forgotten past the horizon
                    at = _iso_at(seen["raised"] + after)
                    for name in contact.escalate_to:
                        if name in named:
                            target_ref, target = named[name]
                            key = f"{alarm}:escalated"
                            self._queue(fields, key, "escalated", target_ref, target, at)

    def _forget(self) -> None:
        """Drop deliveries written before the horizon: their events are never queued
        again (cleared and delivered alarms leave the state this way)."""
        horizon = self.horizon
        if horizon is None:
            return
        for kept in (self.delivered, self.suppressed):
            for slot in [s for s, at in kept.items() if dt.datetime.fromisoformat(at) < horizon]:
                del kept[slot]

    def _silence(self, item: dict[str, Any], now: float) -> str | None:
        """The silence (its id, or ``#n``) holding ``item`` back at ``now``, if any."""
        body = item["body"]
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        for i, silence in enumerate(self.rules.silences(item["tenant_id"]), start=1):
            if silence.silences(at, body["building_id"], body["rule"], body["severity"]):
                return silence.id or f"#{i}"
        return None

    def run_once(self) -> int:
        """Queue new events and what is due, and attempt every delivery that is due;
        return how many succeeded."""
        moved = self._events(rules_moved=self.rules.refresh())
        queued = len(self.pending)
        self._due(self.clock())
        done = 0
        for slot, item in sorted(self.pending.items()):
            now = self.clock()
            if item["next_at"] > now:
                continue
            silence = self._silence(item, now)
            if silence is not None:
                del self.pending[slot]
                self.suppressed[slot] = item.get("written", _iso_now())
                counted = f"{item['tenant_id']}/{silence}"
                self.silenced[counted] = self.silenced.get(counted, 0) + 1
                self.suppressed_since_start += 1
                logger.info(
                    "%s to %s held back by silence %s", item["key"], item.get("target"), silence
                )
            elif (error := self.channels.send(item, now=now)) is None:
                del self.pending[slot]
                self.delivered[slot] = item.get("written", _iso_now())
                done += 1
            else:
                item["attempts"] += 1
                delay = min(2.0 ** (item["attempts"] - 1), _MAX_BACKOFF_S)
                item["next_at"] = now + delay
                item["last_error"] = error
                logger.warning(
                    "%s %s for %s failed (attempt %d, next in %.0f s): %s",
                    item.get("channel", "webhook"),
                    item.get("target", item.get("url")),
                    item["key"],
                    item["attempts"],
                    delay,
                    error,
                )
            self._save()
        if (moved or len(self.pending) != queued) and not done:
            self._save()
        return done

    def run(self, *, interval: float = 0.25, stop: Callable[[], bool] = lambda: False) -> None:
        """:meth:`run_once` every ``interval`` seconds until ``stop()``, writing a
        heartbeat (:func:`heartbeat_path`) after each round for ``workbench status``."""
        delivered = 0
        while not stop():
            error = None
            try:
                delivered += self.run_once()
            except Exception as exc:  # the loop outlives one bad poll; the next one retries
                logger.exception("notifier poll failed")
                error = f"{type(exc).__name__}: {exc}"
            self._beat(delivered=delivered, error=error)
            time.sleep(interval)

    def _beat(self, *, delivered: int, error: str | None) -> None:
        failing = [p for p in self.pending.values() if p.get("last_error")]
        # one error per failing contact point (a dead SMTP server and a dead webhook are
        # two things to fix), the first three of them
        errors: dict[str, str] = {}
        for item in failing:
            errors.setdefault(item.get("target", item.get("url", "?")), item["last_error"])
        last = "; ".join(f"{t}: {e}" for t, e in sorted(errors.items())[:3]) or None
        beat = {
            "at": time.time(),
            "pid": os.getpid(),
            "delivered": delivered,
            "pending": len(self.pending),
            "failing": len(failing),
            "suppressed": self.suppressed_since_start,
            "last_error": error or last,
        }
        write_json(heartbeat_path(self.config), beat)


def heartbeat_path(config: Config) -> Path:
    """The notifier's heartbeat: written after every round of :meth:`Notifier.run`."""
    return component_heartbeat(config, "notifier")


def notifier_health(config: Config) -> str | None:
    """None while the notifier's heartbeat is fresh, else why not (for ``workbench up``)."""
    path = heartbeat_path(config)
    beat = read_heartbeat(path)
    if beat is None:
        return f"no heartbeat yet at {path}"
    if beat.stale:
        return f"last heartbeat {beat.age_s:.0f}s ago; see 'workbench logs notifier'"
    return None


def notifier_status(config: Config) -> tuple[str, dict[str, Any]]:
    """``workbench status``'s line for the notifier, and its figures."""
    beat = read_heartbeat(heartbeat_path(config))
    if beat is None:
        return "no heartbeat yet", {}
    line = f"ok: {beat.get('delivered'):,} delivered since start, {beat.get('pending'):,} pending"
    if beat.get("failing"):
        line += f" ({beat.get('failing')} failing; last: {beat.get('last_error')})"
    if beat.get("suppressed"):
        line += f", {beat.get('suppressed'):,} held back by silences"
    keys = ("delivered", "pending", "failing", "suppressed", "last_error")
    figures = {k: beat.get(k) for k in keys}
    return line, figures


def secret_text(config: Config, tenant: str) -> str:
    """``tenant``'s webhook secret as receivers configure it (base64)."""
    return base64.b64encode(webhook_secret(config, tenant)).decode()
