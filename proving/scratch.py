"""A scratch stack for drills and soak runs: its own home, its own free ports.

Drills break things on purpose (SIGKILL, broker restarts, a full disk), so they
never touch the stack ``workbench up`` runs: :class:`ScratchStack` starts the
data path — broker, gateway, processor — under a private ``WORKBENCH_HOME`` on
ports nobody listens on, drives simulated devices against it with a
ground-truth log, and compares what the devices were told with what the lake
holds (:class:`Ledger`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import psutil

from proving.kafka_cluster import KafkaCluster
from proving.ports import free_port
from workbench.config import Config
from workbench.exceptions import PortInUse, WorkbenchError
from workbench.stack import supervisor

__all__ = ["PORT_VARS", "Ledger", "ScratchStack", "SimulatorRun", "free_port"]

PORT_VARS = (
    "WORKBENCH_KAFKA_PORT",
    "WORKBENCH_KAFKA_CONTROLLER_PORT",
    "WORKBENCH_GATEWAY_PORT",
    "WORKBENCH_LEGACY_PORT",
    "WORKBENCH_MQTT_PORT",
    "WORKBENCH_MQTT_TLS_PORT",
    "WORKBENCH_HIVE_PORT",
    "WORKBENCH_FLIGHT_PORT",
    "WORKBENCH_VOILA_PORT",
    "WORKBENCH_PANEL_PORT",
    "WORKBENCH_LAB_PORT",
    "WORKBENCH_HUB_PORT",
    "WORKBENCH_HUB_API_PORT",
    "WORKBENCH_HUB_PROXY_API_PORT",
)
# "broker" is the embedded one, "kafka" an external cluster's health check and topic
# creation: only the one the configuration enables starts
DATA_PATH = ["broker", "kafka", "gateway", "processor"]


def _pick_ports(env: dict[str, str], *, keep: frozenset[str] = frozenset()) -> None:
    """A free loopback port in ``env`` for every component's port but those in ``keep``."""
    for var in PORT_VARS:
        if var not in keep:
            env[var] = str(free_port())


@dataclasses.dataclass(frozen=True)
class Ledger:
    """What devices were told (the truth log) against what ``telemetry`` holds."""

    sent: int  # events the devices sent (first attempts)
    accepted: int  # distinct events the gateway answered 202 for
    refused: int  # events the gateway answered 4xx for (bad on purpose, unprovisioned…)
    failed: int  # events whose every attempt failed (5xx, connection errors)
    stored: int  # rows in telemetry
    duplicates: int  # rows beyond the first of one (device_id, seq)
    lost: int  # accepted but not in telemetry
    unexpected: int  # in telemetry but never accepted

    @property
    def exactly_once(self) -> bool:
        """Every accepted event stored once, nothing else."""
        return self.duplicates == 0 and self.lost == 0 and self.unexpected == 0

    def line(self) -> str:
        """One human line."""
        return (
            f"sent {self.sent:,}, accepted {self.accepted:,}, refused {self.refused:,}, "
            f"failed {self.failed:,}; stored {self.stored:,}: duplicates {self.duplicates:,}, "
            f"lost {self.lost:,}, unexpected {self.unexpected:,}"
        )


@dataclasses.dataclass
class SimulatorRun:
    """A ``python -m simulator run`` subprocess writing a ground-truth log."""

    proc: subprocess.Popen[str]
    truth: Path
    summary: dict[str, Any] | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)  # monotonic clock

    def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for the end of the run; its summary."""
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise WorkbenchError(f"the simulator failed: {err.strip().splitlines()[-1:]}")
        self.summary = json.loads(out)
        return self.summary

    def stop(self) -> None:
        """Stop it early (SIGTERM: it finishes the tick in hand and summarizes)."""
        if self.proc.poll() is None:
            self.proc.terminate()


class ScratchStack:
    """Broker, gateway and processor under a private home on free ports.

    ``home`` None makes a temporary folder (removed on close unless ``keep``).
    ``settings`` override configuration (e.g. ``WORKBENCH_PROCESSORS``).
    ``kafka_nodes`` > 0 runs the stack on a replicated :class:`KafkaCluster` of that many
    nodes (started by :meth:`up`, under ``home/kafka-cluster``, stopped by :meth:`close`)
    instead of the embedded broker; ``cluster`` on one the caller started and stops.
    """

    def __init__(
        self,
        *,
        home: Path | None = None,
        keep: bool = False,
        settings: dict[str, str] | None = None,
        report: Callable[[str], None] = lambda line: None,
        kafka_nodes: int = 0,
        cluster: KafkaCluster | None = None,
    ) -> None:
        self._temp = home is None
        self.home = Path(tempfile.mkdtemp(prefix="workbench-drill-")) if home is None else home
        self.keep = keep
        self.report = report
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKBENCH_", "KAFKA_"))}
        env["WORKBENCH_HOME"] = str(self.home)
        _pick_ports(env)
        # which embedded broker to prove the system on is the caller's choice
        if "WORKBENCH_BROKER" in os.environ:
            env["WORKBENCH_BROKER"] = os.environ["WORKBENCH_BROKER"]
        # and so is where the lake lives: under an object store's prefix, this stack's
        # own folder (the store's credentials come with the AWS_* / AZURE_* variables)
        if os.environ.get("WORKBENCH_DRILL_LAKE"):
            root = os.environ["WORKBENCH_DRILL_LAKE"].rstrip("/")
            env["WORKBENCH_LAKE"] = f"{root}/{self.home.name}"
        env.setdefault("WORKBENCH_COMMIT_INTERVAL", "0.5")
        env.update(settings or {})
        self._set_ports = frozenset(PORT_VARS) & set(settings or {})  # the caller's own
        self._own_cluster = cluster is None and kafka_nodes > 0
        if self._own_cluster:
            cluster = KafkaCluster(
                self.home / "kafka-cluster",
                nodes=kafka_nodes,
                min_insync=min(2, kafka_nodes),
                partitions=int(env.get("WORKBENCH_TOPIC_PARTITIONS", "2")),
                report=report,
            )
        self.cluster = cluster
        if cluster is not None:
            env["KAFKA_BOOTSTRAP_SERVERS"] = cluster.bootstrap_servers
        self.env = env
        self.config = Config.from_env(env)
        self._simulators: list[SimulatorRun] = []
        # until the first start succeeds nobody knows the stack's ports, so a port taken
        # between picking and binding (another test's broker, say) can still be swapped
        self._ports_known = False

    # --- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> ScratchStack:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def up(self, components: list[str] | None = None) -> None:
        """Start the data path (or ``components``) and wait until healthy (the stack's own
        Kafka cluster first, when it has one and it is not running)."""
        if self._own_cluster and self.cluster is not None and not self.cluster.started:
            self.cluster.start()
        for attempt in range(3):
            try:
                with _environ(self.env):
                    supervisor.up(self.config, only=components or DATA_PATH, report=self.report)
                break
            except PortInUse as exc:
                # up() has stopped what it started: nothing holds the old ports
                if self._ports_known or attempt == 2:
                    raise
                self.report(f"{exc}; trying other ports")
                _pick_ports(self.env, keep=self._set_ports)
                self.config = Config.from_env(self.env)
        self._ports_known = True

    def close(self) -> None:
        """Stop everything (simulated devices still sending first); remove a temporary
        home unless ``keep``."""
        for sim in self._simulators:
            sim.stop()
        for sim in self._simulators:
            try:
                sim.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sim.proc.kill()
                sim.proc.wait(timeout=10)
        with _environ(self.env):
            supervisor.down(self.config, report=lambda line: None)
        if self._own_cluster and self.cluster is not None:
            self.cluster.stop()
        if self._temp and not self.keep:
            shutil.rmtree(self.home, ignore_errors=True)

    def restart(self, components: list[str] | None, *, rolling: bool = False) -> None:
        """``workbench restart [--rolling] [COMPONENT...]`` on the scratch stack (None: with
        ``rolling``, every component that can roll)."""
        with _environ(self.env):
            if rolling:
                supervisor.rolling_restart(self.config, components, report=self.report)
            else:
                supervisor.restart(self.config, components or [], report=self.report)

    def pid(self, component: str) -> int:
        """The pid of a component's (parent) process."""
        for status in supervisor.status(self.config):
            if status.name == component and status.pid is not None:
                return status.pid
        raise WorkbenchError(f"{component} is not running in the scratch stack")

    def workers(self, component: str) -> list[int]:
        """Pids of a pooled component's workers."""
        from workbench.stack.pool import pool_state

        state = pool_state(self.config, component) or {}
        return [int(w["pid"]) for w in state.get("workers", [])]

    def healthy(self) -> dict[str, str | None]:
        """Component name -> None when healthy, else why not."""
        return {s.name: None if s.healthy else s.detail for s in supervisor.status(self.config)}

    # --- devices ---------------------------------------------------------------------------

    def simulate(
        self,
        *,
        devices: int,
        interval_s: float,
        duration_s: float,
        scenario: str = "normal",
        name: str = "sim",
        seed: int = 0,
    ) -> SimulatorRun:
        """Start simulated devices sending through the gateway, with a truth log."""
        truth = self.home / f"{name}.truth.jsonl"
        argv = [
            sys.executable,
            "-m",
            "simulator",
            "run",
            "--devices",
            str(devices),
            "--interval",
            str(interval_s),
            "--duration",
            str(duration_s),
            "--scenario",
            scenario,
            "--seed",
            str(seed),
            "--truth",
            str(truth),
            "--progress",
            "3600",
            "--json",
        ]
        proc = subprocess.Popen(
            argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        run = SimulatorRun(proc, truth)
        self._simulators.append(run)
        return run

    # --- the lake against the truth --------------------------------------------------------

    def stored(self) -> pl.DataFrame:
        """``(device_id, seq)`` of every telemetry row (empty before the first commit)."""
        from workbench.lake.tables import table_uri

        try:
            return pl.read_delta(table_uri(self.config, "telemetry"), columns=["device_id", "seq"])
        except Exception:  # the table does not exist yet
            return pl.DataFrame(schema={"device_id": pl.String, "seq": pl.Int64})

    def wait_stored(self, expected: int, *, timeout_s: float) -> int:
        """Wait until telemetry holds ``expected`` rows (or the time is up); the count."""
        deadline = time.monotonic() + timeout_s
        count = self.stored().height
        while count < expected and time.monotonic() < deadline:
            time.sleep(1.0)
            count = self.stored().height
        return count

    def ledger(self, *truths: Path) -> Ledger:
        """Compare the truth logs with ``telemetry``."""
        frames = [pl.read_ndjson(t, schema_overrides={"seq": pl.Int64}) for t in truths]
        truth = pl.concat([f.select("device_id", "seq", "outcome") for f in frames])
        accepted = truth.filter(pl.col("outcome") == "accepted").select("device_id", "seq")
        accepted = accepted.unique()
        refused = truth.filter(pl.col("outcome").str.starts_with("rejected-4")).height
        failed = truth.filter(
            (pl.col("outcome") == "failed") | pl.col("outcome").str.starts_with("rejected-5")
        ).height
        stored = self.stored()
        distinct = stored.unique()
        keys = ["device_id", "seq"]
        return Ledger(
            sent=truth.unique(keys).height,
            accepted=accepted.height,
            refused=refused,
            failed=failed,
            stored=stored.height,
            duplicates=stored.height - distinct.height,
            lost=accepted.join(distinct, on=keys, how="anti").height,
            unexpected=distinct.join(accepted, on=keys, how="anti").height,
        )

    def explain_lost(self, *truths: Path, limit: int = 5) -> str:
        """Where accepted-but-missing events went: their truth lines and any
        ``telemetry_rejected`` rows for them (for a drill that found a loss)."""
        from workbench.lake.tables import table_uri

        keys = ["device_id", "seq"]
        frames = [pl.read_ndjson(t, schema_overrides={"seq": pl.Int64}) for t in truths]
        truth = pl.concat([f.select("device_id", "seq", "ts", "outcome") for f in frames])
        accepted = truth.filter(pl.col("outcome") == "accepted").unique(keys)
        lost = accepted.join(self.stored().unique(), on=keys, how="anti").head(limit)
        try:
            rejected = pl.read_delta(table_uri(self.config, "telemetry_rejected"))
            found = lost.join(rejected.select(*keys, "reason"), on=keys, how="left")
        except Exception:  # no rejected table
            found = lost.with_columns(reason=pl.lit(None, pl.String))
        rows = [
            f"{r['device_id']} seq {r['seq']} ts {r['ts']}: "
            + (f"rejected as {r['reason']}" if r["reason"] else "not in telemetry_rejected")
            for r in found.iter_rows(named=True)
        ]
        return f"lost events (first {len(rows)}): " + "; ".join(rows)

    def evidence(self, *, per_log: int = 8) -> list[str]:
        """What the stack's logs say went wrong, for the report of a drill that failed (its
        scratch home, logs and all, is usually deleted right after): each component log's
        last ``per_log`` lines at ERROR or above or naming a worker that exited, apart
        from librdkafka's refused connections to a broker a drill stopped on purpose; the
        cluster's view of its partitions and each node's last warnings, when it has one."""
        out: list[str] = []
        for log in sorted(self.config.log_dir.glob("*.log")):
            out += [f"{log.name}: {line}" for line in _notable(log, per_log)]
        if self.cluster is not None:
            try:
                states = self.cluster.describe(self.config.topic)
                out += [
                    f"cluster: {s.topic}-{s.partition} leader {s.leader} "
                    f"replicas {list(s.replicas)} in sync {list(s.isr)}"
                    for s in states
                ]
            except Exception as exc:  # the cluster not answering is itself the evidence
                out.append(f"cluster: describing {self.config.topic!r} failed: {exc}")
            for node_id, node in sorted(self.cluster.nodes.items()):
                state = "running" if node.alive else "not running"
                out.append(f"kafka node {node_id} ({state}), last warnings:")
                out += [f"  {line}" for line in _notable(node.log, 4, floor="WARN")]
        return out

    # --- resources -------------------------------------------------------------------------

    def processes(self) -> dict[str, list[psutil.Process]]:
        """Component name -> its process tree (parent, workers, their children)."""
        out: dict[str, list[psutil.Process]] = {}
        for status in supervisor.status(self.config):
            if status.pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(status.pid)
                out[status.name] = [root, *root.children(recursive=True)]
        return out


_LEVELS = {"WARN": ("WARN", "ERROR", "CRITICAL", "FATAL"), "ERROR": ("ERROR", "CRITICAL", "FATAL")}


# how librdkafka, kafka-python and Kafka's own clients say a peer refused a connection
_REFUSED = ("Connection refused", "ECONNREFUSED", "could not be established")


def _notable(log: Path, limit: int, *, floor: str = "ERROR") -> list[str]:
    """The last ``limit`` lines of ``log`` at ``floor`` or above, or telling that a worker
    exited, leaving out refused connections (a drill stops brokers on purpose)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    levels = _LEVELS[floor]
    keep = [
        line[:400]
        for line in lines
        if (any(f" {level} " in line for level in levels) or " exited with " in line)
        and not any(refused in line for refused in _REFUSED)
    ]
    return keep[-limit:]


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """Run with ``env`` as os.environ (the supervisor hands os.environ to children)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
