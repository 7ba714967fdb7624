"""``python -m ingest_service process``: the processors of the consumer group, until SIGTERM.

The command is a parent (:func:`run_processor`) that keeps
``WORKBENCH_PROCESSORS`` members running under a
:class:`~workbench.stack.pool.WorkerPool` (a crashed member is replaced;
SIGHUP — ``workbench restart processor --rolling`` — replaces them one at a
time, the new member joining the group before the old one leaves it) and folds
their heartbeats into ``run/processor.heartbeat.json`` for ``workbench status``.

Each member (``python -m ingest_service.processor.main --member``, :func:`run`):
a child process polls Kafka; each loop takes what it polled once
``WORKBENCH_COMMIT_INTERVAL`` has passed or ``WORKBENCH_COMMIT_MAX_EVENTS`` are
queued (or, on Apache Kafka, as soon as a smoke or intrusion detector turns on, see
:mod:`~ingest_service.processor.fetcher.flags`), hands the batch to
:meth:`Processor.process`, then has the Kafka offsets committed (for lag
monitoring) and writes its heartbeat. SIGTERM or SIGINT
finishes the batch in hand, commits it and leaves the group. A member dies with
its parent (a SIGKILL of the parent is a crash of the whole processor, and the
lake's offsets make it resume exactly once).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from ingest_service.processor.consumer import Poller
from ingest_service.processor.processor import BatchResult, Processor
from workbench import tansu
from workbench.config import Config
from workbench.exceptions import WorkbenchError
from workbench.filemodes import write_json
from workbench.heartbeat import heartbeat_path as component_heartbeat
from workbench.lake.tables import check_commit_safety, describe_store_error, is_store_error
from workbench.stack.pool import WorkerPool, die_with_parent, signal_ready

__all__ = [
    "URGENT_GAP_S",
    "heartbeat_path",
    "member_env",
    "member_main",
    "run",
    "run_processor",
]

logger = logging.getLogger(__name__)


URGENT_GAP_S = 0.5
"""The least time between the starts of two batches when the second is taken early
for a detector turning on: a fire tripping many detectors at once costs at most two
batches a second, not one per detector."""


def heartbeat_path(config: Config) -> Path:
    """The processor's heartbeat: its members' beats folded into one, for ``status``."""
    return component_heartbeat(config, "processor")


def _members_dir(config: Config) -> Path:
    return config.run_dir / "processor.members"


def run(
    config: Config,
    *,
    stop: threading.Event,
    heartbeat: Path | None = None,
    maintain: bool = True,
) -> BatchResult:
    """Process until ``stop`` is set; return the totals.

    A child process polls Kafka (:class:`~ingest_service.processor.consumer.Poller`)
    while this one stores the previous batch.
    """
    processor = _open_processor(config, stop, heartbeat)
    if processor is None:  # stopped while the lake's store was unavailable
        return BatchResult()
    poller = Poller(config, processor, max_queued=config.commit_max_events)
    poller.start()
    totals = BatchResult()
    started = time.monotonic()
    processed_at: float | None = None  # when this member last committed a batch
    last_maintain = time.monotonic()
    maintainer: threading.Thread | None = None
    try:
        batch_started = time.monotonic()
        while True:
            # Step 1 of a batch (Processor.process has the others): bounded by time and
            # size. When storing the previous batch took longer than the interval, whatever
            # is queued goes at once.
            stopping = stop.is_set()
            batch = poller.take(
                max_events=config.commit_max_events,
                deadline=batch_started + config.commit_interval,
                stop=stop,
                # a smoke or intrusion detector turning on does not wait for the
                # interval (the alarm is raised when its batch is stored), but batches
                # stay at least URGENT_GAP_S apart
                urgent_from=batch_started + min(URGENT_GAP_S, config.commit_interval),
            )
            batch_started = time.monotonic()
            poller.next_take = batch_started + config.commit_interval
            last: dict[int, int] = {}
            try:
                if len(batch):
                    result = _process(config, processor, batch)
                    last = result.last_offsets
                    processed_at = time.time()
                    for field in _BATCH_COUNTS:
                        setattr(totals, field, getattr(totals, field) + getattr(result, field))
                    logger.debug("batch: %s", result)
                if heartbeat is not None:
                    _beat(
                        heartbeat, processor, totals, started, poller.first_record_at, processed_at
                    )
                    if poller.joined.is_set():
                        # in the group and storing: a rolling restart may stop an old
                        # member now without a partition going unread meanwhile
                        signal_ready()
                due = time.monotonic() - last_maintain >= config.maintain_interval
                if maintain and due and 0 in processor.checkpoint.offsets:
                    # one member (the owner of partition 0) maintains; in the background
                    if maintainer is None or not maintainer.is_alive():
                        maintainer = threading.Thread(
                            target=_maintain, args=(config,), name="lake-maintain", daemon=True
                        )
                        maintainer.start()
                    last_maintain = time.monotonic()
            finally:
                # Step 6: Kafka's committed offsets are for lag monitoring only; where a
                # partition resumes is what the lake's commits say (checkpoint.py).
                poller.done(last)
            if stopping or (stop.is_set() and not len(batch)):
                break  # the batch in hand when stopped is stored: leave
    finally:
        # after the last lake commit: leave the group; the partitions' next owner reads
        # where they stand from the lake
        poller.close()
        if maintainer is not None:
            maintainer.join(timeout=60)
    logger.info("processor stopped: %s", totals)
    return totals


class LakeUnavailable(WorkbenchError):
    """A lake commit failed because the lake's object store refused or did not answer."""


# Back-off between a member's attempts to open the lake while its store is unavailable:
# doubling from the first, capped so that the member's heartbeat (written at each
# attempt) stays fresher than the 30 s after which status calls it stale.
_OPEN_BACKOFF_S = (1.0, 15.0)


def _open_processor(
    config: Config, stop: threading.Event, heartbeat: Path | None
) -> Processor | None:
    """The member's Processor; while the lake's object store is unreachable, refuses the
    credentials or lacks the bucket, retry with back-off, logging the reason in one line
    and putting it in the heartbeat (``workbench status`` shows it). None when stopped
    meanwhile. A local lake's errors (a full disk) end the member as before."""
    delay, cap = _OPEN_BACKOFF_S
    while not stop.is_set():
        try:
            return Processor(config)
        except OSError as exc:
            if "://" not in config.lake:
                raise
            reason = describe_store_error(config, exc)
            logger.warning("lake unavailable: %s; next attempt in %.0fs", reason, delay)
            if heartbeat is not None:
                _beat_unavailable(heartbeat, reason)
            stop.wait(delay)
            delay = min(delay * 2, cap)
    return None


def _process(config: Config, processor: Processor, batch: Any) -> BatchResult:
    """``processor.process(batch)``; a store error ends the member with one line: which
    commits of the batch landed is what the lake says, so its successor starts over from
    the lake's offsets (checkpoint.py, step 4) after waiting for the store."""
    try:
        return processor.process(batch)
    except Exception as exc:
        if "://" not in config.lake or not is_store_error(exc):
            raise
        raise LakeUnavailable(describe_store_error(config, exc)) from exc


def _beat_unavailable(path: Path, reason: str) -> None:
    write_json(
        path,
        {"pid": os.getpid(), "at": time.time(), "partitions": [], "lake_error": reason}
        | dict.fromkeys(_COUNTS, 0)
        | {"first_record_at": None, "processed_at": None},
    )


def _beat(
    path: Path,
    processor: Processor,
    totals: BatchResult,
    started: float,
    first_record_at: float | None,
    processed_at: float | None,
) -> None:
    write_json(
        path,
        {
            "pid": os.getpid(),
            "at": time.time(),
            "uptime_s": round(time.monotonic() - started, 1),
            "partitions": processor.checkpoint.partitions,
            "records": totals.records,
            "stored": totals.stored,
            "rejected": totals.rejected,
            "refused_at_gateway": totals.refused_at_gateway,
            "duplicates": totals.duplicates,
            "late": totals.late,
            # raises over a rule's flood limit (a flapping device): counted, not raised
            "alarms_suppressed": processor.alarms.suppressed,
            "first_record_at": first_record_at,
            "processed_at": processed_at,
        },
    )


def _maintain(config: Config) -> None:
    from workbench.lake.maintain import maintain

    try:
        maintain(config)
    except Exception:  # maintenance must never take ingestion down
        logger.exception("lake maintenance failed; retrying at the next interval")


_BATCH_COUNTS = ("records", "stored", "rejected", "refused_at_gateway", "duplicates", "late")
_COUNTS = (*_BATCH_COUNTS, "alarms_suppressed")


class _Heartbeats:
    """Folds the members' heartbeat files into the processor's one (in the parent)."""

    def __init__(self, config: Config, pool: list[WorkerPool]) -> None:
        self.config = config
        self.pool = pool
        self.retired = dict.fromkeys(_COUNTS, 0)  # totals of members that have exited
        self._last = 0.0
        self._unwritable = False
        _members_dir(config).mkdir(parents=True, exist_ok=True)
        for stale in _members_dir(config).glob("*.json"):
            stale.unlink()

    def _read(self, pid: int) -> dict[str, Any] | None:
        try:
            beat: dict[str, Any] = json.loads(
                (_members_dir(self.config) / f"{pid}.json").read_text()
            )
            return beat
        except (OSError, ValueError):
            return None

    def member_exited(self, pid: int) -> None:
        beat = self._read(pid)
        if beat is not None:
            for field in _COUNTS:
                self.retired[field] += int(beat.get(field, 0))
        (_members_dir(self.config) / f"{pid}.json").unlink(missing_ok=True)

    def fold(self) -> None:
        if time.monotonic() - self._last < 0.5:
            return
        self._last = time.monotonic()
        beats = [b for w in self.pool[0].workers if (b := self._read(w.proc.pid)) is not None]
        if not beats:
            return  # no member has beaten yet: health says "joining the consumer group"
        starts = [b["first_record_at"] for b in beats if b.get("first_record_at") is not None]
        folded = {
            "pid": os.getpid(),
            "at": min(float(b["at"]) for b in beats),  # the stalest member sets the pace
            "members": [
                {"pid": b["pid"], "at": b["at"], "partitions": b["partitions"]} for b in beats
            ],
            "partitions": sorted({p for b in beats for p in b["partitions"]}),
            **{f: self.retired[f] + sum(int(b.get(f, 0)) for b in beats) for f in _COUNTS},
            "first_record_at": min(starts) if starts else None,
            # a member waiting for the lake's store says why (status shows it)
            "lake_error": next((b["lake_error"] for b in beats if b.get("lake_error")), None),
            # the latest batch any live member committed (status: recovered from a crash?)
            "processed_at": max(
                (b["processed_at"] for b in beats if b.get("processed_at") is not None),
                default=None,
            ),
        }
        path = heartbeat_path(self.config)
        try:
            write_json(path, folded)
        except OSError as exc:
            # e.g. a full disk: the members keep running, status sees the heartbeat age
            if not self._unwritable:
                logger.warning("cannot write %s (%s); retrying", path, exc)
            self._unwritable = True
        else:
            self._unwritable = False


def run_processor(config: Config) -> int:
    """Entry point of ``python -m ingest_service process``: the parent of the members."""
    # before any member starts: a configuration that could corrupt the log never writes
    check_commit_safety(config, os.environ)
    holder: list[WorkerPool] = []
    beats = _Heartbeats(config, holder)
    pool = WorkerPool(
        "processor",
        count=config.processors,
        argv=lambda slot: [sys.executable, "-m", "ingest_service.processor.main", "--member"],
        env=member_env(os.environ, config, cores=len(os.sched_getaffinity(0))),
        run_dir=config.run_dir,
        # a member finishes its batch, commits and leaves the group
        drain_timeout_s=max(30.0, 10 * config.commit_interval),
        ready_timeout_s=config.startup_timeout,
        settle_s=tansu.group_settle_s(config),
        on_exit=beats.member_exited,
        tick=beats.fold,
    )
    holder.append(pool)
    return pool.run()


def member_env(environ: Mapping[str, str], config: Config, *, cores: int) -> dict[str, str]:
    """The members' environment: ``environ`` with ``config``, and ``POLARS_MAX_THREADS``
    (unless ``environ`` sets it) to the cores left once every member's Kafka child has
    one, shared among the members.

    Why: the child polls and parses on a core of its own, so a member whose polars used
    every core would make its threads fight the child for it. On the 2-core machines
    here one polars thread drained 5-8 points more of the bare consumer's rate than
    two (docs/ingest.md).

    >>> cfg = Config.from_env({"WORKBENCH_PROCESSORS": "2"})
    >>> member_env({}, cfg, cores=8)["POLARS_MAX_THREADS"]
    '3'
    >>> member_env({"POLARS_MAX_THREADS": "6"}, cfg, cores=8)["POLARS_MAX_THREADS"]
    '6'
    >>> [member_env({}, Config.from_env({}), cores=n)["POLARS_MAX_THREADS"] for n in (1, 2, 8)]
    ['1', '1', '7']
    """
    env = {**environ, **config.env()}
    members = max(1, config.processors)
    env.setdefault("POLARS_MAX_THREADS", str(max(1, (cores - members) // members)))
    return env


def member_main(argv: Sequence[str] | None = None) -> int:
    """One member of the group (started by :func:`run_processor`)."""
    from workbench.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m ingest_service.processor.main")
    parser.add_argument("--member", action="store_true", required=True)
    parser.parse_args(argv)
    die_with_parent()
    config = Config.from_env()
    configure_logging(config.log_level)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: finishing the batch in hand, then leaving the group", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        run(config, stop=stop, heartbeat=_members_dir(config) / f"{os.getpid()}.json")
    except LakeUnavailable as exc:
        logger.error("lake commit failed: %s; this member ends, its successor resumes", exc)
        return 3
    return 0


if __name__ == "__main__":
    from workbench._process import hard_exit

    hard_exit(member_main())
