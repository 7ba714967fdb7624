"""Failure drills: break a scratch stack on purpose while devices send, then check the lake.

``workbench drill NAME`` (or ``all``) runs one in a :class:`~proving.scratch.ScratchStack`
— never against the stack ``workbench up`` started — and prints what it did and
what it verified; it exits non-zero when a check fails.

Adding a drill is one function decorated with :func:`drill` in a module that the
``workbench.drills`` entry-point group names (see :mod:`workbench.plugins`)::

    [project.entry-points."workbench.drills"]
    10-crashes = "proving.drills.crashes"

Drills run (``all``) and are listed in entry-point name order, then in the order their
module registers them.

A drill registered with ``kafka_nodes=3`` runs on a replicated Apache Kafka cluster of
three nodes on loopback (:mod:`proving.kafka_cluster`, reached through
``KAFKA_BOOTSTRAP_SERVERS``) instead of the embedded broker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from proving.scratch import Ledger, ScratchStack
from workbench import plugins

__all__ = ["GROUP", "Drill", "DrillReport", "drill", "drills", "run_drill"]

GROUP = "workbench.drills"


@dataclasses.dataclass
class DrillReport:
    """What a drill did and what it checked."""

    name: str
    say: Callable[[str], None]
    did: list[str] = dataclasses.field(default_factory=list)
    checks: list[tuple[str, bool]] = dataclasses.field(default_factory=list)
    figures: dict[str, object] = dataclasses.field(default_factory=dict)

    def step(self, text: str) -> None:
        """Record (and print) one action."""
        self.did.append(text)
        self.say(f"  did:      {text}")

    def check(self, text: str, ok: bool) -> bool:
        """Record (and print) one verification."""
        self.checks.append((text, ok))
        self.say(f"  {'verified' if ok else 'FAILED  '}: {text}")
        return ok

    def exactly_once(self, ledger: Ledger) -> None:
        """The standard checks of the lake against the devices' truth."""
        self.step(f"compared the devices' truth log with telemetry: {ledger.line()}")
        self.check(f"no duplicates in telemetry ({ledger.duplicates:,})", ledger.duplicates == 0)
        self.check(f"no accepted event lost ({ledger.lost:,})", ledger.lost == 0)
        self.check(
            f"nothing stored that was not accepted ({ledger.unexpected:,})",
            ledger.unexpected == 0,
        )

    @property
    def ok(self) -> bool:
        """Every check passed (and there was at least one)."""
        return bool(self.checks) and all(ok for _, ok in self.checks)

    def to_json(self) -> dict[str, object]:
        """A JSON-able summary (with the drill's ``figures`` when it recorded any)."""
        out: dict[str, object] = {
            "drill": self.name,
            "ok": self.ok,
            "did": self.did,
            "checks": [{"check": text, "ok": ok} for text, ok in self.checks],
        }
        if self.figures:
            out["figures"] = self.figures
        return out


@dataclasses.dataclass(frozen=True)
class Drill:
    """A named drill: ``run(stack, report)`` breaks and checks; ``settings`` configure the
    scratch stack it runs in, ``kafka_nodes`` > 0 puts it on a Kafka cluster of that many
    nodes."""

    name: str
    summary: str
    run: Callable[[ScratchStack, DrillReport], None]
    settings: dict[str, str] = dataclasses.field(default_factory=dict)
    kafka_nodes: int = 0


_DRILLS: dict[str, Drill] = {}


def drill(
    name: str, summary: str, *, kafka_nodes: int = 0, **settings: str
) -> Callable[[Callable[[ScratchStack, DrillReport], None]], Callable[..., None]]:
    """Register a drill function under ``name``."""

    def add(
        fn: Callable[[ScratchStack, DrillReport], None],
    ) -> Callable[[ScratchStack, DrillReport], None]:
        _DRILLS[name] = Drill(name, summary, fn, dict(settings), kafka_nodes)
        return fn

    return add


def drills() -> dict[str, Drill]:
    """Every installed drill, by name, in entry-point name order, then in the order its
    module registers them (the modules register theirs with :func:`drill` when imported)."""
    rank = {module.__name__: i for i, module in enumerate(plugins.load_all(GROUP).values())}
    ordered = sorted(_DRILLS.values(), key=lambda d: rank.get(d.run.__module__, len(rank)))
    return {d.name: d for d in ordered}


def run_drill(
    name: str,
    *,
    say: Callable[[str], None],
    home: Path | None = None,
    keep: bool = False,
) -> DrillReport:
    """Run drill ``name`` in a fresh scratch stack; its report.

    Raises :class:`~workbench.exceptions.BrokerUnavailable` before starting anything when
    the drill needs a Kafka cluster and Java or Kafka's jars are missing."""
    spec = drills()[name]
    if spec.kafka_nodes:
        from proving.kafka_cluster import prerequisites

        prerequisites(say)
    report = DrillReport(name, say)
    say(f"drill {name}: {spec.summary}")
    stack = ScratchStack(home=home, keep=keep, settings=spec.settings, kafka_nodes=spec.kafka_nodes)
    try:
        _run(spec, stack, report)
        if not report.ok:
            # the scratch home goes with close(): say now what its logs hold
            for line in stack.evidence():
                say(f"  log:      {line}")
    finally:
        stack.close()
    say(f"drill {name}: {'PASSED' if report.ok else 'FAILED'}")
    return report


def _run(spec: Drill, stack: ScratchStack, report: DrillReport) -> None:
    try:
        stack.up()
        broker = (
            f"a {spec.kafka_nodes}-node Kafka cluster ({stack.config.bootstrap_servers})"
            if spec.kafka_nodes
            else "broker"
        )
        report.step(
            f"started {broker}, gateway and processor in a scratch home "
            f"({stack.home}, gateway port {stack.config.gateway_port})"
        )
        spec.run(stack, report)
    except Exception as exc:  # a drill that crashes has failed, with the reason shown
        report.check(f"the drill ran to its end ({type(exc).__name__}: {exc})", False)
