"""The processor's alarm stage: the tenants' rules evaluated on the stored stream.

After a batch's ``telemetry`` commit (before the aggregates'), :meth:`AlarmStage.process`
feeds the batch's on-time rows — the rows the aggregates take, so lateness means the
same thing here — to an :class:`~workbench.alarms.evaluate.Evaluator` and records what
it raises and ends in the ``alarms`` table, in one Delta commit carrying the batch's
offsets as app transactions, like every commit of the exactly-once protocol
(:mod:`~ingest_service.processor.checkpoint`). Those offsets are a record only: no
member resumes from them (a batch that raises nothing makes no commit), and
``checkpoint`` reads where partitions stand from ``telemetry``. Exactly once rests on
the three steps below.

Exactly once, through crashes:

1. the evaluator's conditions live in memory; a processor that takes a partition over
   (:meth:`AlarmStage.take_over`, after ``telemetry`` says where the partition stands)
   rebuilds them by evaluating that partition's stored on-time telemetry again, from
   the longest duration any rule watches (plus a margin) before its watermark, seeded
   with the alarms still open since before then;
2. it records every transition that replay causes: a crash between the ``telemetry``
   commit and the ``alarms`` commit left some unrecorded, and they are among the newest
   rows, so inside the replay;
3. recording is idempotent per alarm episode (:func:`workbench.alarms.store.plan`): a
   raise inside an episode already stored, or while one is open, and an end already
   applied change nothing, and a commit that would change nothing is not made. So
   what was recorded before the crash is neither duplicated nor lost.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping

import polars as pl

from ingest_service.processor.checkpoint import Checkpoint
from ingest_service.processor.rejected_rates import RejectedRates
from workbench.alarms import rulebook, store
from workbench.alarms.evaluate import Evaluator, Transition
from workbench.config import Config
from workbench.lake.tables import ALARMS, TELEMETRY, TELEMETRY_REJECTED, latest_table

__all__ = ["COLUMNS", "AlarmStage"]

logger = logging.getLogger(__name__)

_UTC_US = pl.Datetime("us", "UTC")
# What the rules read of a telemetry row.
COLUMNS = (
    "tenant_id",
    "building_id",
    "device_id",
    "device_type",
    "floor",
    "room",
    "ts",
    "received_at",
    "temperature",
    "humidity",
    "light",
    "smoke",
    "intrusion",
    "source_partition",
    "source_offset",
)
# Event time re-read beyond the longest rule duration when a partition is taken over.
_MARGIN = dt.timedelta(minutes=10)
_HOUR = dt.timedelta(hours=1)  # the flood limit's span


class AlarmStage:
    """Rules evaluated over the partitions one processor owns (see the module docstring)."""

    def __init__(self, config: Config, checkpoint: Checkpoint) -> None:
        self.config = config
        self.checkpoint = checkpoint
        self.rules = rulebook.RuleBook(config)
        self.rules.refresh()
        self.evaluator = Evaluator(self.rules)
        self.rates = RejectedRates(config, self.rules)  # buildings' rejected-event rates

    def process(
        self,
        on_time: pl.DataFrame,
        offsets: Mapping[int, int],
        *,
        now: dt.datetime,
        refusals: pl.DataFrame | None = None,
    ) -> int:
        """Evaluate a batch's stored on-time rows and its stored ``refusals`` (rows of
        ``telemetry_rejected``); record the transitions with ``offsets``. Returns the
        number of alarms raised or ended."""
        self._refresh_rules()
        transitions = self.evaluator.feed(on_time.select(COLUMNS)) if len(on_time) else []
        if self.evaluator.watermarks:
            self.rates.advance(max(self.evaluator.watermarks.values()))
        if refusals is not None:
            transitions += self.rates.process(refusals)
        if not transitions:
            return 0
        return store.record(
            self.config,
            transitions,
            now=now,
            commit_properties=lambda table: self.checkpoint.transactions(offsets, table=table),
        )

    def take_over(
        self, partitions: Iterable[int], watermarks: Mapping[int, dt.datetime], *, now: dt.datetime
    ) -> int:
        """Rebuild the conditions of ``partitions`` from the lake and record what a crash
        may have left unrecorded (steps 1 and 2 of the module docstring)."""
        partitions = sorted(partitions)
        if not partitions:
            return 0
        self._refresh_rules()
        span = dt.timedelta(seconds=self.rules.horizon_s) + _MARGIN
        since = min(watermarks.get(p, now) for p in partitions) - span
        alarms = latest_table(self.config, ALARMS)
        if alarms is not None:
            still_open = (
                pl.scan_delta(alarms)
                .filter(
                    pl.col("source_partition").is_in(partitions)
                    & pl.col("ended_at").is_null()
                    & (pl.col("raised_at") < pl.lit(since, _UTC_US))
                )
                .select("tenant_id", "device_id", "rule", "raised_at", "kind")
                .collect()
            )
            self.evaluator.seed(
                (tenant, device, rule, raised_at, self._silent_for(tenant, rule, kind))
                for tenant, device, rule, raised_at, kind in still_open.iter_rows()
            )
            # the flood limit counts the raises of the hour before the re-read too
            recent = (
                pl.scan_delta(alarms)
                .filter(
                    pl.col("source_partition").is_in(partitions)
                    & (pl.col("raised_at") >= pl.lit(since - _HOUR, _UTC_US))
                    & (pl.col("raised_at") < pl.lit(since, _UTC_US))
                )
                .select("tenant_id", "device_id", "rule", "raised_at")
                .collect()
            )
            self.evaluator.seed_raises(recent.iter_rows())
        for p in partitions:
            self.rates.advance(watermarks.get(p))
        rates = self._rates_of(partitions, since)
        telemetry = latest_table(self.config, TELEMETRY)
        if telemetry is None:
            return store.record(self.config, rates, now=now) if rates else 0
        rows = (
            pl.scan_delta(telemetry)
            .filter(
                pl.col("source_partition").is_in(partitions)
                & (pl.col("event_date") >= since.date())
                & (pl.col("ts") >= pl.lit(since, _UTC_US))
                & ~pl.col("late")
            )
            .select(COLUMNS)
            .sort("source_partition", "source_offset")
            .collect()
        )
        # the replay suppresses again what was counted before: count it once
        counted = self.evaluator.suppressed
        transitions = self.evaluator.feed(rows) + rates
        self.evaluator.suppressed = counted
        recorded = store.record(self.config, transitions, now=now) if transitions else 0
        logger.info(
            "alarm conditions of partitions %s rebuilt from %d telemetry rows since %s "
            "(%d transitions, %d not recorded before)",
            partitions,
            len(rows),
            since.isoformat(),
            len(transitions),
            recorded,
        )
        return recorded

    def _rates_of(self, partitions: list[int], since: dt.datetime) -> list[Transition]:
        """The rate transitions of the buildings with refusals stored from ``partitions``
        since ``since``: a crash may have left them unrecorded (step 2)."""
        self.rates.seed_open()
        table = latest_table(self.config, TELEMETRY_REJECTED)
        if table is None:
            return []
        stored = (
            pl.scan_delta(table)
            .filter(
                pl.col("source_partition").is_in(partitions)
                & pl.col("building_id").is_not_null()
                & (pl.col("received_at") >= pl.lit(since, _UTC_US))
            )
            .select("tenant_id", "building_id", "received_at")
            .collect()
        )
        if not len(stored):
            return []
        self.rates.advance(stored["received_at"].max())  # type: ignore[arg-type]
        return self.rates.evaluate(stored.select("tenant_id", "building_id").unique().iter_rows())

    def _refresh_rules(self) -> None:
        # the evaluator looks at silence deadlines again only when the rules moved
        if self.rules.refresh():
            self.evaluator.rules_changed()
            logger.info("alarm rules changed (alarm_rules version %d)", self.rules.version)

    @property
    def suppressed(self) -> int:
        """Raises over a rule's flood limit since start: counted, not raised."""
        return self.evaluator.suppressed

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the conditions of ``partitions`` (their new owner rebuilds them)."""
        self.evaluator.forget(partitions)

    def _silent_for(self, tenant: str, rule: str, kind: str) -> float:
        if kind != "silent":
            return 0.0
        return next((r.silent_for_s for r in self.rules(tenant) if r.name == rule), 0.0)
