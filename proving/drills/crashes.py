"""Crash drills: ``processor-kill``, ``gateway-kill``, ``broker-restart`` and ``broker-kill``."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import time

import polars as pl
import psutil

from proving.drills import DrillReport, drill, steps
from proving.scratch import ScratchStack

__all__: list[str] = []  # the drills register themselves with @drill


@drill(
    "processor-kill",
    "SIGKILL processor members at random moments, five times, while devices send",
    WORKBENCH_PROCESSORS="2",
)
def _processor_kill(stack: ScratchStack, report: DrillReport) -> None:
    run = steps.start_load(stack, report)
    rng = random.Random(os.getpid())
    steps.kill_workers(
        stack,
        report,
        "processor",
        "member",
        pauses=[rng.uniform(3, 8) for _ in range(5)],
        pick=rng.choice,
    )
    steps.finish(stack, report, run)


@drill(
    "gateway-kill",
    "SIGKILL gateway workers while devices send; devices retry on the surviving worker",
    WORKBENCH_GATEWAY_WORKERS="2",
)
def _gateway_kill(stack: ScratchStack, report: DrillReport) -> None:
    run = steps.start_load(stack, report)
    steps.kill_workers(stack, report, "gateway", "worker", pauses=[5, 5], pick=lambda pids: pids[0])
    steps.finish(stack, report, run)


@drill(
    "broker-restart",
    "restart the embedded broker while devices send (WORKBENCH_BROKER picks which)",
)
def _broker_restart(stack: ScratchStack, report: DrillReport) -> None:
    _broker_outage(stack, report, kill=False)


@drill(
    "broker-kill",
    "SIGKILL the embedded broker while devices send, then start it again",
)
def _broker_kill(stack: ScratchStack, report: DrillReport) -> None:
    _broker_outage(stack, report, kill=True)


def _broker_outage(stack: ScratchStack, report: DrillReport, *, kill: bool) -> None:
    """Take the broker away under load (a graceful restart, or SIGKILL and a new start)
    and check what devices saw and what the lake holds.

    Apache Kafka keeps what it acknowledged on disk: nothing accepted may be lost. Tansu
    keeps everything in memory: what it had acknowledged but the processor had not yet
    stored is gone with it, so only events of the last moments may be missing."""
    import datetime as dt
    import threading

    from proving.drills import probes

    durable = stack.config.broker == "kafka"
    run = steps.start_load(stack, report)
    time.sleep(8)
    before = stack.stored().height
    refused_before = probes.rejected_counts(stack.config)
    proc = psutil.Process(stack.pid("broker"))
    died: list[dt.datetime] = []  # when the old broker was gone (it may serve while stopping)

    def watch() -> None:
        proc.wait()
        died.append(dt.datetime.now(dt.UTC))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    asked_at = dt.datetime.now(dt.UTC)
    if kill:
        os.killpg(proc.pid, signal.SIGKILL)
        watcher.join(timeout=10)
        time.sleep(3)  # devices meet the broker's absence before it comes back
        stack.up(["broker"])
    else:
        stack.restart(["broker"])
        watcher.join(timeout=60)
    stopped_at = died[0] if died else dt.datetime.now(dt.UTC)
    back_at = dt.datetime.now(dt.UTC)
    how = "SIGKILLed and started" if kill else "restarted"
    report.step(
        f"{how} the broker ({stack.config.broker}; pid {proc.pid} -> {stack.pid('broker')}; "
        f"gone {(stopped_at - asked_at).total_seconds():.1f}s after the request, back "
        f"{(back_at - stopped_at).total_seconds():.1f}s later) with {before:,} events stored"
    )
    steps.after_faults(stack, report, run)
    summary = run.wait(timeout=900)
    stack.wait_stored(summary["accepted"], timeout_s=180)
    ledger = stack.ledger(run.truth)
    report.step(f"compared the devices' truth log with telemetry: {ledger.line()}")
    refused = probes.grew(refused_before, probes.rejected_counts(stack.config))
    server_errors = sum(n for (_, status, _), n in refused.items() if status.startswith("5"))
    unavailable = sum(n for (_, status, _), n in refused.items() if status == "503")
    others = {key: n for key, n in refused.items() if key[1] != "503"}
    report.step(
        f"devices were answered 503 + Retry-After {unavailable:,} times while the broker was "
        f"away and retried ({summary['retries']:,} retries); other refusals: {others or 'none'}"
    )
    report.check(
        f"devices saw no failed request and no server error but 503 "
        f"({summary['failed']} failed, {server_errors - unavailable} other 5xx)",
        summary["failed"] == 0 and server_errors == unavailable,
    )
    report.check(f"no duplicates in telemetry ({ledger.duplicates:,})", ledger.duplicates == 0)
    report.check("events sent after the broker came back are stored", ledger.stored > before)
    keys = ["device_id", "seq"]
    accepted = (
        pl.read_ndjson(run.truth, schema_overrides={"seq": pl.Int64})
        .filter(pl.col("outcome") == "accepted")
        .select(*keys, ts=pl.col("ts").str.to_datetime(time_zone="UTC"))
        .unique(keys)
    )
    lost = accepted.join(stack.stored().unique(), on=keys, how="anti")
    if durable:
        report.check(
            f"no accepted event lost: the broker keeps what it acknowledged ({len(lost):,} "
            f"of {accepted.height:,} lost)",
            len(lost) == 0,
        )
    else:
        tail_from = stopped_at - dt.timedelta(seconds=_TAIL_SECONDS)
        in_tail = pl.col("ts").is_between(tail_from, stopped_at)
        tail = accepted.filter(in_tail).height
        outside = lost.filter(~in_tail)
        report.check(
            f"only events sent in the last {_TAIL_SECONDS:g}s before the in-memory broker "
            f"stopped were lost with it ({len(lost):,} of {tail:,}; {len(outside):,} older "
            "or newer)",
            len(outside) == 0,
        )
    unhealthy = {k: v for k, v in stack.healthy().items() if v is not None}
    report.check(f"every component healthy afterwards {unhealthy or ''}".strip(), not unhealthy)


# The scratch stack commits every 0.5 s (WORKBENCH_COMMIT_INTERVAL) and a batch of a few
# hundred events is stored in well under a second: an event the broker acknowledged more
# than a few seconds before it stopped is in the lake (docs/operations.md has the figures).
_TAIL_SECONDS = 5.0
