"""Steps the drills share: put load on the scratch stack, kill workers, and check the
lake against the devices' truth at the end.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from proving.drills import DrillReport
from proving.scratch import ScratchStack, SimulatorRun

__all__ = ["AFTER_FAULT_S", "MAX_LOAD_S", "after_faults", "finish", "kill_workers", "start_load"]

# How long devices keep sending after a drill's last fault before the drill stops them.
# Long enough for many commits (the scratch stack commits every 0.5 s) and for 300
# devices to send a few thousand events through the recovered stack; a fixed run length
# instead would mostly wait for the clock once the faults are over.
AFTER_FAULT_S = 10.0
AFTER_FAULT_MAX_S = 120.0
# The devices' run is only a bound: ample for any drill's faults on a loaded machine.
MAX_LOAD_S = 300.0


def start_load(
    stack: ScratchStack, report: DrillReport, *, seconds: float = MAX_LOAD_S, devices: int = 300
) -> SimulatorRun:
    """Start ``devices`` simulated devices sending for at most ``seconds`` (a drill stops
    them :data:`AFTER_FAULT_S` after its last fault, see :func:`after_faults`); return once
    the lake holds their first events."""
    run = stack.simulate(devices=devices, interval_s=1.0, duration_s=seconds)
    report.step(
        f"started {devices} simulated devices, one event/s each, for at most {seconds:.0f}s"
    )
    if stack.wait_stored(500, timeout_s=120) < 500:
        raise RuntimeError("no events reached the lake within 120 s")
    return run


def finish(
    stack: ScratchStack,
    report: DrillReport,
    run: SimulatorRun,
    *,
    settle_s: float = 180,
    own_truth: Path | None = None,
    own_accepted: int = 0,
) -> None:
    """Let the devices send :data:`AFTER_FAULT_S` more (:func:`after_faults`); check their
    answers, then the lake against their truth log (and against ``own_truth``, the log of
    events the drill sent itself, ``own_accepted`` of them accepted), then every
    component's health."""
    after_faults(stack, report, run)
    summary = run.wait(timeout=900)
    report.check(
        f"devices saw no failed request (accepted {summary['accepted']:,} of "
        f"{summary['sent']:,}, {summary['retries']:,} retried, {summary['failed']} failed, "
        f"refused {summary['rejected'] or 'none'})",
        summary["failed"] == 0 and not summary["rejected"],
    )
    truths = [run.truth] if own_truth is None else [run.truth, own_truth]
    stack.wait_stored(summary["accepted"] + own_accepted, timeout_s=settle_s)
    ledger = stack.ledger(*truths)
    report.exactly_once(ledger)
    if ledger.lost:
        report.step(stack.explain_lost(*truths))
    unhealthy = {k: v for k, v in stack.healthy().items() if v is not None}
    report.check(f"every component healthy afterwards {unhealthy or ''}".strip(), not unhealthy)


def after_faults(
    stack: ScratchStack,
    report: DrillReport,
    run: SimulatorRun,
    *,
    seconds: float = AFTER_FAULT_S,
    least: int = 300,
) -> None:
    """The drill's faults are over: let the devices send ``seconds`` more, and on until the
    gateway accepted at least ``least`` events since (a loaded machine stretches a tick of
    the devices; :data:`AFTER_FAULT_MAX_S` at most), then stop them (SIGTERM: they finish
    the tick in hand). Checks those ``least`` events, so the drill ends with traffic through
    the recovered stack, not after it."""
    from proving.drills import probes

    before = probes.accepted_total(stack.config)
    since = time.monotonic()
    accepted = 0
    while run.proc.poll() is None and time.monotonic() - since < AFTER_FAULT_MAX_S:
        time.sleep(0.5)
        accepted = probes.accepted_total(stack.config) - before
        if time.monotonic() - since >= seconds and accepted >= least:
            break
    still_sending = run.proc.poll() is None
    run.stop()
    report.step(
        f"stopped the devices {time.monotonic() - since:.0f}s after the drill's last fault, "
        f"{time.monotonic() - run.started:.0f}s after they started"
    )
    report.check(
        f"devices sent through the recovered stack: {accepted:,} events accepted after the "
        f"drill's last fault (at least {least:,})"
        + ("" if still_sending else "; but the devices' run ended before the drill stopped it"),
        accepted >= least and still_sending,
    )


def kill_workers(
    stack: ScratchStack,
    report: DrillReport,
    component: str,
    noun: str,
    *,
    pauses: list[float],
    pick: Callable[[list[int]], int],
) -> None:
    """SIGKILL one of ``component``'s workers after each pause, wait until its pool
    replaced it, then check the pool is back to full strength."""
    count = len(stack.workers(component))
    for kill, pause in enumerate(pauses, 1):
        time.sleep(pause)
        victim = pick(stack.workers(component))
        os.kill(victim, signal.SIGKILL)
        report.step(f"kill {kill}/{len(pauses)}: SIGKILL {component} {noun} pid {victim}")
        deadline = time.monotonic() + 60
        while victim in stack.workers(component) and time.monotonic() < deadline:
            time.sleep(0.2)
    report.check(
        f"the {component} replaced every killed {noun}", len(stack.workers(component)) == count
    )
