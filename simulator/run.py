"""Run the fleet in (compressed) real time against a target: the library behind
``python -m simulator run``.

The loop releases each tick's events when the simulated clock reaches their
sending time (``speedup`` simulated seconds per wall second), in chunks of at
least ``granularity_s`` wall seconds so that per-chunk work (encoding, one
HTTP request per device batch, one Kafka batch) is amortized over many events.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl

from simulator.encode import truth_lines
from simulator.fleet import Fleet, to_ms
from simulator.scenarios import parse_scenarios
from simulator.targets.base import GROUP as TARGETS
from simulator.targets.base import Stats, Target, target_names
from workbench import plugins
from workbench.config import Config
from workbench.exceptions import SimulatorError

__all__ = ["RunOptions", "RunSummary", "make_target", "run"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What to simulate and where to send it."""

    devices: int = 1000
    interval_s: float = 60.0  # per device
    duration_s: float | None = None  # simulated seconds; None runs until stopped
    speedup: float = 1.0  # simulated seconds per wall second
    seed: int = 0
    scenario: str = "normal"  # comma-separated names
    target: str = "gateway"  # an installed workbench.sim_targets plug-in
    truth: Path | None = None  # ground-truth log (JSON lines)
    tenants: int = 2
    buildings: int | None = None  # default: see Fleet.generate
    start: dt.datetime | None = None  # simulated start; default: now
    progress_s: float = 2.0  # wall seconds between progress lines
    granularity_s: float = 0.1  # smallest wall-clock chunk of events
    status_file: Path | None = None  # JSON heartbeat with the counters (for the supervisor)

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise SimulatorError(f"--devices must be at least 1, got {self.devices}")
        if self.interval_s <= 0 or self.speedup <= 0:
            raise SimulatorError("--interval and --speedup must be positive")
        if self.duration_s is not None and self.duration_s <= 0:
            raise SimulatorError(f"--duration must be positive, got {self.duration_s}")
        parse_scenarios(self.scenario)  # fail early on a typo


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a run did."""

    target: str
    devices: int
    scenario: str
    simulated_s: float
    wall_s: float
    cpu_s: float
    stats: Stats
    first_seq: int
    prepare_s: float = 0.0  # provisioning etc., before the first event

    @property
    def cpu_share(self) -> float:
        """Share of one core the simulator used while sending (its own process only)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        """A JSON-able dict of the summary."""
        return {
            "target": self.target,
            "devices": self.devices,
            "scenario": self.scenario,
            "simulated_s": round(self.simulated_s, 3),
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_share": round(self.cpu_share, 4),
            "sent": self.stats.sent,
            "accepted": self.stats.accepted,
            "replayed": self.stats.replayed,
            "rejected": dict(self.stats.rejected),
            "retries": self.stats.retries,
            "failed": self.stats.failed,
            "skipped": self.stats.skipped,
            "first_seq": self.first_seq,
            "prepare_s": round(self.prepare_s, 3),
        }


def make_target(name: str, fleet: Fleet, config: Config, options: RunOptions) -> Target:
    """The installed target plug-in called ``name``, made for ``fleet``."""
    if name not in target_names():
        raise SimulatorError(
            f"unknown target {name!r}", hint=f"choose from {', '.join(target_names())}"
        )
    made = plugins.load(TARGETS, name)(fleet, config, options)
    if not isinstance(made, Target):
        raise plugins.PluginError(
            f"target plug-in {name!r} made a {type(made).__name__}, not a Target",
            hint="its entry point must name a Target subclass or a factory returning one",
        )
    return made


def _write_status(path: Path | None, state: str, options: RunOptions, stats: Stats) -> None:
    if path is None:
        return
    doc = {
        "pid": os.getpid(),
        "state": state,
        "at": time.time(),
        "target": options.target,
        "devices": options.devices,
        "scenario": options.scenario,
        "sent": stats.sent,
        "accepted": stats.accepted,
        "rejected": dict(stats.rejected),
        "retries": stats.retries,
        "failed": stats.failed,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def _progress_line(elapsed: float, sim_s: float, stats: Stats, last: Stats, dt_s: float) -> str:
    rate = (stats.sent - last.sent) / dt_s if dt_s > 0 else 0.0
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(stats.rejected.items())) or "none"
    return (
        f"[{elapsed:7.1f}s | sim +{sim_s:8.0f}s] sent {stats.sent} ({rate:,.0f}/s) "
        f"accepted {stats.accepted} rejected {rejected} retries {stats.retries}"
        + (f" failed {stats.failed}" if stats.failed else "")
        + (f" skipped {stats.skipped}" if stats.skipped else "")
    )


def run(
    config: Config,
    options: RunOptions,
    *,
    report: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    target: Target | None = None,
) -> RunSummary:
    """Simulate ``options.devices`` devices and send their events; return the summary.

    ``stop`` ends the run early (after flushing); ``report`` receives progress lines.
    """
    stop = stop or threading.Event()
    fleet = Fleet.generate(
        options.devices, seed=options.seed, tenants=options.tenants, buildings=options.buildings
    )
    scenarios = parse_scenarios(options.scenario)
    start = options.start or dt.datetime.now(dt.UTC)
    sink = target or make_target(options.target, fleet, config, options)
    truth: IO[str] | None = None
    if options.truth is not None:
        options.truth.parent.mkdir(parents=True, exist_ok=True)
        truth = options.truth.open("w")
    wall0, cpu0 = time.monotonic(), time.process_time()
    prepare_s = 0.0
    start_ms = to_ms(start)
    end_ms: int | None = None
    # seq keeps growing across runs (a restart must not reuse (device_id, seq)): base it on
    # the wall clock in ms, which advances faster than ticks do (up to 1,000 ticks/s).
    first_seq = int(time.time() * 1000) if options.start is None else 1
    last_report, last_stats = wall0, sink.stats.copy()

    def sim_now_ms() -> float:
        return start_ms + (time.monotonic() - wall0) * options.speedup * 1000.0

    try:
        _write_status(options.status_file, "preparing", options, sink.stats)
        sink.prepare()
        # Provisioning is neither simulated time nor the steady-state cost being measured.
        prepare_s = time.monotonic() - wall0
        wall0, cpu0 = time.monotonic(), time.process_time()
        last_report = wall0
        if report is not None and prepare_s > 1:
            report(f"prepared the {sink.name} target in {prepare_s:.1f}s")
        start = options.start or dt.datetime.now(dt.UTC)
        start_ms = to_ms(start)
        if options.duration_s is not None:
            end_ms = start_ms + round(options.duration_s * 1000)
        for frame in fleet.ticks(
            start, interval_s=options.interval_s, scenarios=scenarios, first_seq=first_seq
        ):
            if end_ms is not None:
                frame = frame.filter(pl.col("send") < end_ms)
                if frame.height == 0:
                    break
            sends = frame["send"].to_numpy()
            pos = 0
            while pos < frame.height and not stop.is_set():
                began = time.monotonic()
                now = sim_now_ms()
                upto = int(np.searchsorted(sends, now, side="right"))
                if upto > pos:
                    chunk = frame.slice(pos, upto - pos)
                    outcome = sink.send(chunk)
                    if truth is not None:
                        lines = truth_lines(fleet, chunk, outcome).to_list()
                        truth.write("\n".join(lines) + "\n")
                    pos = upto
                    if pos < frame.height:  # let the next chunk fill up
                        stop.wait(max(0.0, options.granularity_s - (time.monotonic() - began)))
                else:
                    wait_s = (sends[pos] - now) / options.speedup / 1000.0
                    stop.wait(min(max(wait_s, options.granularity_s), options.progress_s))
                wall = time.monotonic()
                if wall - last_report >= options.progress_s:
                    sink.flush()
                    if report is not None:
                        report(
                            _progress_line(
                                wall - wall0,
                                (sim_now_ms() - start_ms) / 1000,
                                sink.stats,
                                last_stats,
                                wall - last_report,
                            )
                        )
                    _write_status(options.status_file, "running", options, sink.stats)
                    last_report, last_stats = wall, sink.stats.copy()
            if stop.is_set():
                break
        sink.flush()
    except BaseException:
        _write_status(options.status_file, "failed", options, sink.stats)
        raise
    finally:
        sink.close()
        if truth is not None:
            truth.close()
    wall_s = time.monotonic() - wall0
    simulated = (
        options.duration_s
        if options.duration_s is not None and not stop.is_set()
        else wall_s * options.speedup
    )
    _write_status(options.status_file, "done", options, sink.stats)
    summary = RunSummary(
        target=sink.name,
        devices=options.devices,
        scenario=options.scenario,
        simulated_s=simulated,
        wall_s=wall_s,
        cpu_s=time.process_time() - cpu0,
        stats=sink.stats.copy(),
        first_seq=first_seq,
        prepare_s=prepare_s,
    )
    if report is not None:
        s = summary.to_json()
        report(
            f"done: {s['sent']} events sent in {s['wall_s']}s wall "
            f"({s['simulated_s']}s simulated), "
            f"accepted {s['accepted']}, rejected {s['rejected'] or 'none'}, "
            f"retries {s['retries']}, failed {s['failed']}, "
            f"cpu {summary.cpu_s:.2f}s = {summary.cpu_share:.1%} of one core"
        )
    return summary
