"""The soak run: the seed scenario for minutes, a rolling restart of everything midway.

``workbench soak`` starts a scratch stack (broker, gateway, processor,
HiveServer2, Voila — private home, free ports), has the simulated fleet send
through the gateway (default: 100,000 devices at one event per minute for 10
minutes), restarts every component that can roll at ``--roll-at`` of the run
(``workbench restart --rolling``), and afterwards compares the devices' ground
truth with the lake. While it runs it samples, every few seconds, each
component's CPU and memory (its whole process tree) and the freshness of
``building_state``. The report: events sent, accepted, stored, duplicated, lost;
failed device requests; p50/p99 freshness; CPU and memory per component.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from proving.scratch import DATA_PATH, Ledger, ScratchStack

__all__ = ["SoakOptions", "SoakReport", "run_soak"]

_SAMPLE_S = 2.0


@dataclasses.dataclass(frozen=True)
class SoakOptions:
    """What to run."""

    devices: int = 100_000
    interval_s: float = 60.0
    minutes: float = 10.0
    roll_at: float | None = 0.5  # fraction of the run; None: no rolling restart
    home: Path | None = None
    keep: bool = False


@dataclasses.dataclass
class _Usage:
    cpu_s: float = 0.0  # CPU seconds of processes that have exited
    rss_max: int = 0
    live: dict[int, float] = dataclasses.field(default_factory=dict)  # pid -> cpu seconds

    @property
    def cpu_total(self) -> float:
        return self.cpu_s + sum(self.live.values())


@dataclasses.dataclass
class SoakReport:
    """The figures of one soak run."""

    options: SoakOptions
    wall_s: float
    summary: dict[str, Any]
    ledger: Ledger
    freshness_s: list[float]
    usage: dict[str, dict[str, float]]  # component -> cpu_share, rss_max_mb
    roll: str
    roll_s: float | None

    @property
    def ok(self) -> bool:
        """Nothing lost, duplicated or failed, and the roll (if any) succeeded."""
        return (
            self.ledger.exactly_once
            and self.summary.get("failed", 1) == 0
            and not self.summary.get("rejected")
            and not self.roll.startswith("failed")
        )

    @property
    def behind_s(self) -> float | None:
        """How much longer than simulated the devices took to send (None: unknown).

        The devices send on the simulated clock; when the gateway acknowledges more
        slowly than they send, they fall behind it and the run stretches.
        """
        wall, simulated = self.summary.get("wall_s"), self.summary.get("simulated_s")
        if wall is None or not simulated:
            return None
        return max(0.0, float(wall) - float(simulated))

    @property
    def kept_real_time(self) -> bool | None:
        """The devices sent on schedule: behind by at most 2 % of the run (or 5 s)."""
        behind = self.behind_s
        if behind is None:
            return None
        return behind <= max(5.0, 0.02 * float(self.summary["simulated_s"]))

    def percentile(self, q: float) -> float | None:
        """A percentile (0 to 100) of the sampled freshness."""
        values = sorted(self.freshness_s)
        if not values:
            return None
        return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]

    def figures(self) -> dict[str, Any]:
        """Flat figures for the results log and --json."""
        led = self.ledger
        return {
            "devices": self.options.devices,
            "interval_s": self.options.interval_s,
            "minutes": self.options.minutes,
            "wall_s": round(self.wall_s, 1),
            "sent": led.sent,
            "accepted": led.accepted,
            "stored": led.stored,
            "duplicated": led.duplicates,
            "lost": led.lost,
            "unexpected": led.unexpected,
            "failed_requests": self.summary.get("failed"),
            "refused": self.summary.get("rejected"),
            "retries": self.summary.get("retries"),
            "sending_wall_s": self.summary.get("wall_s"),
            "simulated_s": self.summary.get("simulated_s"),
            "behind_s": _round(self.behind_s),
            "kept_real_time": self.kept_real_time,
            "simulator_cpu_share": self.summary.get("cpu_share", 0.0),
            "freshness_p50_s": _round(self.percentile(50)),
            "freshness_p99_s": _round(self.percentile(99)),
            "freshness_max_s": _round(max(self.freshness_s) if self.freshness_s else None),
            "freshness_samples": len(self.freshness_s),
            "roll": self.roll,
            "roll_s": _round(self.roll_s),
            "usage": self.usage,
            "ok": self.ok,
        }

    def lines(self) -> list[str]:
        """The report as text."""
        f = self.figures()
        out = [
            f"soak: {f['devices']:,} devices, one event per {f['interval_s']:g}s each, "
            f"{f['minutes']:g} min ({f['wall_s']:.0f}s wall)",
            f"  events   sent {f['sent']:,}  accepted {f['accepted']:,}  stored "
            f"{f['stored']:,}  duplicated {f['duplicated']:,}  lost {f['lost']:,}",
            f"  devices  failed requests {f['failed_requests']}, refused "
            f"{f['refused'] or 'none'}, retried {f['retries']:,}; the simulator used "
            f"{f['simulator_cpu_share'] * 100:.1f}% of a core while sending",
            f"  pace     {self._pace_line(f)}",
            f"  freshness of building_state: p50 {f['freshness_p50_s']}s, p99 "
            f"{f['freshness_p99_s']}s, max {f['freshness_max_s']}s "
            f"({f['freshness_samples']} samples)",
            f"  rolling restart: {f['roll']}"
            + (f" (took {f['roll_s']}s)" if f["roll_s"] is not None else ""),
            f"  {'component':<12} {'cpu (% of a core)':>18} {'max memory (MB)':>16}",
        ]
        for name, use in self.usage.items():
            out.append(f"  {name:<12} {use['cpu_share'] * 100:>17.1f}% {use['rss_max_mb']:>16.0f}")
        out.append(f"  result: {'PASSED' if self.ok else 'FAILED'}")
        return out

    @staticmethod
    def _pace_line(f: dict[str, Any]) -> str:
        if f["kept_real_time"] is None:
            return "unknown (the simulator reported no timing)"
        took = f"sending took {f['sending_wall_s']:.0f}s for {f['simulated_s']:.0f}s simulated"
        if f["kept_real_time"]:
            return f"{took}: kept real time"
        return (
            f"{took}: fell {f['behind_s']:.0f}s behind real time (the gateway acknowledged "
            "more slowly than the devices sent; see the broker's CPU below)"
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class _Sampler(threading.Thread):
    """Samples CPU, memory and freshness until stopped."""

    def __init__(self, stack: ScratchStack, sim: psutil.Process) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.stack = stack
        self.sim = sim
        self.usage: dict[str, _Usage] = {}
        self.freshness: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from workbench.lake.read import freshness
        from workbench.tenancy.principal import Principal

        principal = Principal.system("soak")
        while not self.stop.wait(_SAMPLE_S):
            trees = self.stack.processes()
            with contextlib.suppress(psutil.Error):
                trees["simulator"] = [self.sim]
            for name, procs in trees.items():
                self._account(name, procs)
            with contextlib.suppress(Exception):  # the lake may be mid-commit
                age = freshness(self.stack.config, principal=principal)
                if age is not None:
                    self.freshness.append(age)

    def _account(self, name: str, procs: list[psutil.Process]) -> None:
        use = self.usage.setdefault(name, _Usage())
        seen: dict[int, float] = {}
        rss = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error), proc.oneshot():
                times = proc.cpu_times()
                seen[proc.pid] = times.user + times.system
                rss += proc.memory_info().rss
        for pid, cpu in use.live.items():  # processes gone since the last sample
            if pid not in seen:
                use.cpu_s += cpu
        use.live = seen
        use.rss_max = max(use.rss_max, rss)


def run_soak(options: SoakOptions, *, say: Callable[[str], None]) -> SoakReport:
    """Run the soak; its report (printed line by line through ``say`` as it goes)."""
    stack = ScratchStack(home=options.home, keep=options.keep, report=say)
    try:
        say(f"soak: starting a scratch stack in {stack.home}")
        stack.up([*DATA_PATH, "hiveserver2", "voila"])
        duration = options.minutes * 60
        sim = stack.simulate(
            devices=options.devices, interval_s=options.interval_s, duration_s=duration
        )
        say(
            f"soak: {options.devices:,} devices sending for {options.minutes:g} min "
            f"(provisioning them first)"
        )
        sampler = _Sampler(stack, psutil.Process(sim.proc.pid))
        sampler.start()
        started = time.monotonic()
        roll, roll_s = "not requested", None
        if options.roll_at is not None:
            # the run's clock starts once the devices are provisioned and sending
            while stack.stored().height == 0 and sim.proc.poll() is None:
                time.sleep(1)
            sending = time.monotonic()
            time.sleep(max(0.0, options.roll_at * duration - (time.monotonic() - sending)))
            if sim.proc.poll() is None:
                say("soak: rolling restart of every component that can roll")
                t0 = time.monotonic()
                try:
                    stack.restart(None, rolling=True)
                    roll = "done: gateway, processor (workers one at a time), hiveserver2, voila"
                except Exception as exc:
                    roll = f"failed: {exc}"
                roll_s = time.monotonic() - t0
                say(f"soak: rolling restart {roll}")
            else:
                roll = "failed: the run ended before the rolling restart was due"
        summary = sim.wait(timeout=duration * 4 + 1800)
        say(f"soak: devices done; waiting for the lake to hold all {summary['accepted']:,}")
        stack.wait_stored(summary["accepted"], timeout_s=600)
        wall = time.monotonic() - started
        sampler.stop.set()
        sampler.join(10)
        ledger = stack.ledger(sim.truth)
        usage = {
            name: {
                "cpu_share": round(use.cpu_total / wall, 4) if wall > 0 else 0.0,
                "rss_max_mb": round(use.rss_max / 2**20, 1),
            }
            for name, use in sampler.usage.items()
        }
        report = SoakReport(options, wall, summary, ledger, sampler.freshness, usage, roll, roll_s)
        if sampler.freshness:
            say(f"soak: freshness median {statistics.median(sampler.freshness):.2f}s")
        return report
    finally:
        stack.close()
