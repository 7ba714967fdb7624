"""``python -m ingest_service process``: one processor of the consumer group, until SIGTERM.

Each loop polls records until ``WORKBENCH_COMMIT_INTERVAL`` has passed or
``WORKBENCH_COMMIT_MAX_EVENTS`` are buffered, hands the batch to
:meth:`Processor.process`, then commits the Kafka offsets (for lag monitoring)
and touches the heartbeat file ``workbench status`` reads. SIGTERM or SIGINT
finishes the batch in hand, commits it and leaves the group.
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
from typing import Any

from ingest_service.processor.consumer import Buffer, RebalanceListener, make_consumer
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
    """Process until ``stop`` is set; return the totals."""
    processor = Processor(config)
    consumer = make_consumer(config)
    buffer = Buffer()
    consumer.subscribe([config.topic], listener=RebalanceListener(consumer, processor, buffer))
    totals = BatchResult()
    started = time.monotonic()
    last_maintain = time.monotonic()
    maintainer: threading.Thread | None = None
    first_record_at: float | None = None
    try:
        while not stop.is_set():
            # Step 1 of the protocol: a batch bounded by time and size.
            deadline = time.monotonic() + config.commit_interval
            while not stop.is_set() and len(buffer) < config.commit_max_events:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                polled = consumer.poll(
                    timeout_ms=int(left * 1000),
                    max_records=config.commit_max_events - len(buffer),
                )
                for tp, records in polled.items():
                    buffer.extend(tp.partition, records)
                if polled and first_record_at is None:
                    first_record_at = time.time()
            _process(processor, consumer, buffer, totals)
            if heartbeat is not None:
                _beat(heartbeat, processor, totals, started, first_record_at)
            due = time.monotonic() - last_maintain >= config.maintain_interval
            if maintain and due and 0 in processor.offsets:
                # one member (the owner of partition 0) maintains; in the background
                if maintainer is None or not maintainer.is_alive():
                    maintainer = threading.Thread(
                        target=_maintain, args=(config,), name="lake-maintain", daemon=True
                    )
                    maintainer.start()
                last_maintain = time.monotonic()
        _process(processor, consumer, buffer, totals)  # the batch in hand when stopped
    finally:
        consumer.close()  # leaves the group: its partitions move on at once
        if maintainer is not None:
            maintainer.join(timeout=60)
    logger.info("processor stopped: %s", totals)
    return totals


def _process(processor: Processor, consumer: Any, buffer: Buffer, totals: BatchResult) -> None:
    batch = buffer.take()
    if not len(batch):
        return
    result = processor.process(batch)
    # Step 6: Kafka's committed offsets are for lag monitoring only; the lake has the truth.
    consumer.commit_async()
    for field in ("records", "stored", "rejected", "duplicates", "late"):
        setattr(totals, field, getattr(totals, field) + getattr(result, field))
    logger.debug("batch: %s", result)


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
