"""``python -m ingest_service process``: one processor of the consumer group, until SIGTERM.

A child process polls Kafka; each loop takes what it polled once
``WORKBENCH_COMMIT_INTERVAL`` has passed or ``WORKBENCH_COMMIT_MAX_EVENTS`` are
queued, hands the batch to :meth:`Processor.process`, then has the Kafka offsets
committed (for lag monitoring) and touches the heartbeat file ``workbench status``
reads. SIGTERM or SIGINT finishes the batch in hand, commits it and leaves the group.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from ingest_service.processor.consumer import Poller
from ingest_service.processor.processor import BatchResult, Processor
from workbench.config import Config

__all__ = ["heartbeat_path", "run", "run_processor"]

logger = logging.getLogger(__name__)


def heartbeat_path(config: Config) -> Path:
    """The file the supervised processor touches after every loop."""
    return config.run_dir / "processor.heartbeat.json"


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
    processor = Processor(config)
    poller = Poller(config, processor, max_queued=config.commit_max_events)
    poller.start()
    totals = BatchResult()
    started = time.monotonic()
    last_maintain = time.monotonic()
    maintainer: threading.Thread | None = None
    try:
        batch_started = time.monotonic()
        while True:
            # Step 1 of the protocol: a batch bounded by time and size. When storing the
            # previous batch took longer than the interval, whatever is queued goes at once.
            stopping = stop.is_set()
            batch = poller.take(
                max_events=config.commit_max_events,
                deadline=batch_started + config.commit_interval,
                stop=stop,
            )
            batch_started = time.monotonic()
            last: dict[int, int] = {}
            try:
                if len(batch):
                    result = processor.process(batch)
                    last = result.last_offsets
                    for field in ("records", "stored", "rejected", "duplicates", "late"):
                        setattr(totals, field, getattr(totals, field) + getattr(result, field))
                    logger.debug("batch: %s", result)
                if heartbeat is not None:
                    _beat(heartbeat, processor, totals, started, poller.first_record_at)
                due = time.monotonic() - last_maintain >= config.maintain_interval
                if maintain and due and 0 in processor.offsets:
                    # one member (the owner of partition 0) maintains; in the background
                    if maintainer is None or not maintainer.is_alive():
                        maintainer = threading.Thread(
                            target=_maintain, args=(config,), name="lake-maintain", daemon=True
                        )
                        maintainer.start()
                    last_maintain = time.monotonic()
            finally:
                # Step 6: Kafka's committed offsets are for lag monitoring only.
                poller.done(last)
            if stopping or (stop.is_set() and not len(batch)):
                break  # the batch in hand when stopped is stored: leave
    finally:
        poller.close()  # after the last lake commit: leaves the group, partitions move on
        if maintainer is not None:
            maintainer.join(timeout=60)
    logger.info("processor stopped: %s", totals)
    return totals


def _beat(
    path: Path,
    processor: Processor,
    totals: BatchResult,
    started: float,
    first_record_at: float | None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "at": time.time(),
                "uptime_s": round(time.monotonic() - started, 1),
                "partitions": sorted(processor.offsets),
                "records": totals.records,
                "stored": totals.stored,
                "rejected": totals.rejected,
                "duplicates": totals.duplicates,
                "late": totals.late,
                "first_record_at": first_record_at,
            }
        )
    )
    tmp.replace(path)


def _maintain(config: Config) -> None:
    from workbench.lake.maintain import maintain

    try:
        maintain(config)
    except Exception:  # maintenance must never take ingestion down
        logger.exception("lake maintenance failed; retrying at the next interval")


def run_processor(config: Config) -> int:
    """Entry point of ``python -m ingest_service process`` (logging already configured)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: finishing the batch in hand, then leaving the group", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run(config, stop=stop, heartbeat=heartbeat_path(config))
    return 0
