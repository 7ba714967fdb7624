"""The peer in ``workbench bench ingest``: Quix Streams computing the per-building rolling
five-minute aggregate from the bench's topic, exactly once, into a CSV file.

Run by the bench with the python of its own virtualenv (Quix Streams pins a
confluent-kafka older than the workbench's, so it cannot share the project's)::

    quix-venv/bin/python quix_app.py SPEC.json

Never imported by the workbench. ``SPEC.json`` names the broker, topic, consumer
group, state and output folders, and how many events the topic holds; the app
writes ``{"count", "first", "last", "closed", "stopped_by"}`` to ``spec["result"]``.

What it computes, against the processor's ``building_metrics_1m`` and
``building_state``:

* the records are re-keyed by ``building_id`` (``group_by``: Quix keeps window state
  per message key, and the topic is keyed by device, so it goes through a
  repartition topic, as a Quix application has to);
* event time is the record's ``ts`` (as the processor's windows), not the Kafka
  timestamp;
* hopping windows of 5 minutes every minute, grace ``WORKBENCH_LATE_GRACE``: for every
  minute the five minutes up to it, per building -- what ``building_state`` shows at
  that minute (``"window": "tumbling"`` in the spec: one-minute windows, the rows of
  ``building_metrics_1m``) -- with readings, temperature avg/min/max, humidity and light averages,
  smoke and intrusion alarm counts and the last event time; emitted once per window
  when it closes (``final()``);
* no validation, no de-duplication on ``(device_id, seq)``, no ``telemetry`` table,
  no distinct-device count: it does less than the processor.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

_IDLE_S = 3.0


def _event_ms(value: Any, headers: Any, timestamp: int, timestamp_type: Any) -> int:
    """Event time: the record's ``ts`` (RFC 3339), the Kafka timestamp when it has none."""
    try:
        return int(dt.datetime.fromisoformat(value["ts"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError):
        return timestamp


def _flat(value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> dict[str, Any]:
    """What the window needs of an event (the repartition topic carries only this)."""
    readings = value.get("readings") or {}
    return {
        "ts_ms": timestamp,
        "tenant_id": value.get("tenant_id"),
        "building_id": value.get("building_id"),
        "temperature": readings.get("temperature"),
        "humidity": readings.get("humidity"),
        "light": readings.get("light"),
        "smoke": readings.get("smoke"),
        "intrusion": readings.get("intrusion"),
    }


def main(spec_path: str) -> None:
    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Max, Mean, Min, Sum
    from quixstreams.kafka.configuration import ConnectionConfig
    from quixstreams.sinks.core.csv import CSVSink

    spec = json.loads(Path(spec_path).read_text())
    events = int(spec["events"])
    stop_at_count = bool(spec.get("stop_at_count", True))
    app = Application(
        broker_address=ConnectionConfig.from_librdkafka_dict(spec["client"]),
        consumer_group=spec["group"],
        auto_offset_reset="earliest",
        processing_guarantee=spec.get("guarantee", "exactly-once"),
        commit_interval=float(spec["commit_interval"]),
        state_dir=spec["state_dir"],
        loglevel="WARNING",
    )
    topic = app.topic(
        spec["topic"],
        key_deserializer="str",
        value_deserializer="json",
        timestamp_extractor=_event_ms,
    )
    # "active": the last record through either stage (an app may own partitions of
    # only one of the two topics)
    seen = {"first": 0.0, "count": 0, "last": 0.0, "active": 0.0}

    def first(value: Any) -> None:
        seen["first"] = seen["first"] or time.time()
        seen["active"] = time.time()

    def counted(value: Any) -> None:
        seen["count"] += 1
        seen["last"] = seen["active"] = time.time()
        if stop_at_count and seen["count"] >= events:
            app.stop()  # after this record, with the final checkpoint committed

    sdf = app.dataframe(topic)
    sdf = sdf.update(first).apply(_flat, metadata=True)
    sdf = sdf.group_by("building_id", name="by-building")
    sdf = sdf.update(counted)
    grace_ms = int(float(spec["grace_s"]) * 1000)
    if spec.get("window", "hopping") == "tumbling":  # building_metrics_1m's minutes
        windows = sdf.tumbling_window(duration_ms=60_000, grace_ms=grace_ms)
    else:
        windows = sdf.hopping_window(duration_ms=300_000, step_ms=60_000, grace_ms=grace_ms)
    sdf = windows.agg(
        readings=Count(),
        temperature_avg=Mean("temperature"),
        temperature_min=Min("temperature"),
        temperature_max=Max("temperature"),
        humidity_avg=Mean("humidity"),
        light_avg=Mean("light"),
        smoke_alarms=Sum("smoke"),
        intrusion_alarms=Sum("intrusion"),
        last_event_ms=Max("ts_ms"),
    ).final()
    sdf.sink(CSVSink(str(Path(spec["out_dir"]) / "building_windows.csv")))

    if not stop_at_count:  # several instances share the topic: each stops when idle
        import threading

        started = time.time()

        def watch() -> None:
            # idle 3 s after its last record, or 60 s without any (as the bare consumers)
            while True:
                time.sleep(0.5)
                active = seen["active"]
                if time.time() - (active or started) > (_IDLE_S if active else 60.0):
                    app.stop()
                    return

        threading.Thread(target=watch, daemon=True).start()
    app.run()
    Path(spec["result"]).write_text(
        json.dumps(
            {
                "count": seen["count"],
                "first": seen["first"],
                "last": seen["last"],
                "closed": time.time(),
                "stopped_by": "count" if stop_at_count else "idle",
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
