"""A real, replicated Apache Kafka cluster on loopback, for drills and tests.

The workbench's embedded broker is one node; a deployment points it at a replicated
cluster with ``KAFKA_BOOTSTRAP_SERVERS``. :class:`KafkaCluster` starts such a cluster
on this machine — three KRaft nodes, each broker and controller in one JVM, on free
loopback ports, log dirs under one scratch folder — so that what a replicated cluster
promises (a broker may die without losing what ``acks=all`` acknowledged, leadership
moves, the dead broker catches up when it comes back) is checked, not assumed.

New topics get ``replication.factor`` = the node count and ``min.insync.replicas`` 2,
Kafka's internal topics (consumer offsets, transactions) as well. It reuses the embedded
broker's jars, Java check and configuration (:mod:`workbench.stack.kafka_broker`): a
missing Java or missing jars end in the same one-line
:class:`~workbench.exceptions.BrokerUnavailable` before anything starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proving.ports import free_port
from workbench.exceptions import BrokerUnavailable

__all__ = ["KafkaCluster", "Node", "PartitionState", "prerequisites"]

logger = logging.getLogger(__name__)

# Each JVM's heap: three of them share the machine with the stack under test.
HEAP = "256m"


def prerequisites(report: Callable[[str], None] = lambda line: None) -> tuple[str, str]:
    """``(java, class path)``; raise BrokerUnavailable (one line naming the fix) when Java
    is missing or too old or the jars cannot be had."""
    from workbench.stack.kafka_broker import checked_java, classpath

    java = checked_java()
    return java, classpath(report)


@dataclasses.dataclass(frozen=True)
class PartitionState:
    """One partition as the cluster's metadata describes it."""

    topic: str
    partition: int
    leader: int  # -1: none (the partition is offline)
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


@dataclasses.dataclass
class Node:
    """One KRaft node: broker and controller in one JVM."""

    node_id: int
    port: int
    controller_port: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        """Its console output (appended to across restarts)."""
        return self.root / "node.log"

    @property
    def alive(self) -> bool:
        """Its JVM is running."""
        return self.proc is not None and self.proc.poll() is None


class KafkaCluster:
    """``nodes`` KRaft nodes on loopback, their state under ``root``.

    :meth:`start` formats every node's log dir with one cluster id and waits until every
    broker is registered; :meth:`kill` and :meth:`start_node` take one away and bring it
    back; :meth:`stop` ends all (also on leaving a ``with`` block).
    """

    def __init__(
        self,
        root: Path,
        *,
        nodes: int = 3,
        min_insync: int = 2,
        partitions: int = 2,
        heap: str = HEAP,
        host: str = "127.0.0.1",
        report: Callable[[str], None] = lambda line: None,
    ) -> None:
        if nodes < 1 or not 1 <= min_insync <= nodes:
            raise ValueError(f"nodes={nodes}, min_insync={min_insync}: need 1 <= min <= nodes")
        self.root = root
        self.host = host
        self.heap = heap
        self.partitions = partitions
        self.min_insync = min_insync
        self.report = report
        self.nodes = {
            i: Node(i, free_port(), free_port(), root / f"node-{i}") for i in range(1, nodes + 1)
        }
        self._java: tuple[str, str] | None = None
        self._admin: Any = None
        self._started = False

    @property
    def started(self) -> bool:
        """:meth:`start` succeeded and :meth:`stop` was not called since."""
        return self._started

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client address (``KAFKA_BOOTSTRAP_SERVERS``)."""
        return ",".join(f"{self.host}:{n.port}" for n in self.nodes.values())

    @property
    def voters(self) -> str:
        """The static controller quorum: ``id@host:controller_port`` of every node."""
        return ",".join(f"{n.node_id}@{self.host}:{n.controller_port}" for n in self.nodes.values())

    # --- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> KafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, timeout_s: float = 180) -> None:
        """Format the nodes' log dirs (first start only), start every node and wait until
        every broker is registered."""
        from workbench.stack.kafka_broker import format_log_dir, new_cluster_id

        java, cp = self._java = self._java or prerequisites(self.report)
        cluster = new_cluster_id()
        for node in self.nodes.values():
            props = self._configure(node)
            if not (node.root / "data" / "meta.properties").is_file():
                format_log_dir(java, cp, props, cluster, standalone=False)
        try:
            for node in self.nodes.values():
                self._spawn(node)
            self.wait_brokers(set(self.nodes), timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise
        self._started = True
        self.report(f"Kafka cluster of {len(self.nodes)} nodes up at {self.bootstrap_servers}")

    def start_node(self, node_id: int, *, timeout_s: float = 120) -> None:
        """Start a stopped (or killed) node again on its log dir; wait until its broker is
        registered."""
        node = self.nodes[node_id]
        if node.alive:
            return
        self._spawn(node)
        self.wait_brokers({node_id}, timeout_s=timeout_s)

    def kill(self, node_id: int) -> int:
        """SIGKILL a node's JVM (no shutdown of any kind) and reap it; its pid."""
        node = self.nodes[node_id]
        if node.proc is None or not node.alive:
            raise BrokerUnavailable(f"Kafka node {node_id} is not running")
        pid = node.proc.pid
        os.kill(pid, signal.SIGKILL)
        node.proc.wait(timeout=30)
        return pid

    def stop(self, *, timeout_s: float = 20) -> None:
        """Stop every node (SIGTERM, SIGKILL after ``timeout_s``): the cluster is scratch, a
        node that waits for a quorum that is stopping too is not waited for long."""
        self._started = False
        self._admin = None
        running = [n.proc for n in self.nodes.values() if n.proc is not None and n.alive]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + timeout_s
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def _configure(self, node: Node) -> Path:
        from workbench.stack.kafka_broker import log4j_properties, node_properties

        data = node.root / "data"
        node.root.mkdir(parents=True, exist_ok=True)
        props = node.root / "server.properties"
        text = node_properties(
            node_id=node.node_id,
            host=self.host,
            port=node.port,
            controller_port=node.controller_port,
            data=data,
            partitions=self.partitions,
            voters=self.voters,
            replicas=len(self.nodes),
            min_insync=self.min_insync,
        )
        props.write_text(text)
        (node.root / "log4j2.properties").write_text(log4j_properties("warn"))
        return props

    def _spawn(self, node: Node) -> None:
        from workbench.stack.kafka_broker import jvm_command

        java, cp = self._java = self._java or prerequisites(self.report)
        argv = jvm_command(
            java,
            cp,
            node.root / "server.properties",
            node.root / "log4j2.properties",
            self.heap,
        )
        with node.log.open("ab") as out:
            # its own session: a Ctrl-C meant for the drill reaches the nodes through
            # stop(), not all at once behind its back
            node.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    # --- what the cluster says about itself ------------------------------------------------

    def _admin_client(self) -> Any:
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            quiet = logging.getLogger("proving.kafka_cluster.librdkafka")
            quiet.addHandler(logging.NullHandler())
            quiet.propagate = False  # a dead node's refused connections are expected here
            self._admin = AdminClient(
                {"bootstrap.servers": self.bootstrap_servers, "client.id": "drill-cluster"},
                logger=quiet,
            )
        return self._admin

    def brokers(self, *, timeout_s: float = 5) -> set[int]:
        """The node ids of the brokers the cluster's metadata lists (registered, unfenced)."""
        metadata = self._admin_client().list_topics(timeout=timeout_s)
        return {int(b) for b in metadata.brokers}

    def describe(self, topic: str | None = None, *, timeout_s: float = 5) -> list[PartitionState]:
        """Every partition of ``topic`` (None: of every topic, internal ones included).

        A topic just created may be unknown for a moment to the broker that answers: the
        controller's metadata reaches each broker on its own, so that error is retried
        within ``timeout_s``, as is a request that times out on a node just killed."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + timeout_s
        while True:
            left = max(0.5, deadline - time.monotonic())
            try:
                metadata = self._admin_client().list_topics(topic=topic, timeout=left)
            except KafkaException:
                # the node asked may have just been killed: ask again until the time is up
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
                continue
            errors = {n: d.error for n, d in metadata.topics.items() if d.error is not None}
            unknown = all(_is_unknown_topic(e) for e in errors.values())
            if not errors or not unknown or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        out = []
        for name, described in metadata.topics.items():
            if described.error is not None:
                raise BrokerUnavailable(f"cannot describe topic {name!r}: {described.error}")
            for p in described.partitions.values():
                out.append(
                    PartitionState(name, int(p.id), int(p.leader), tuple(p.replicas), tuple(p.isrs))
                )
        return sorted(out, key=lambda s: (s.topic, s.partition))

    def leader(self, topic: str, partition: int) -> int:
        """The node leading ``topic``'s ``partition`` now (-1: none)."""
        for state in self.describe(topic):
            if state.partition == partition:
                return state.leader
        raise BrokerUnavailable(f"topic {topic!r} has no partition {partition}")

    def lagging(self, node_id: int) -> list[PartitionState]:
        """Partitions ``node_id`` replicates but is not in sync with (empty: caught up)."""
        return [s for s in self.describe() if node_id in s.replicas and node_id not in s.isr]

    def wait_brokers(self, node_ids: set[int], *, timeout_s: float) -> None:
        """Wait until every one of ``node_ids`` is a registered broker; raise (with the last
        line of a node's log) when one exits or the time is up."""
        deadline = time.monotonic() + timeout_s
        seen: set[int] = set()
        while time.monotonic() < deadline:
            for node_id in node_ids:
                node = self.nodes[node_id]
                if not node.alive:
                    raise BrokerUnavailable(
                        f"Kafka node {node_id} exited during start-up: {_last_line(node.log)}",
                        hint=f"see {node.log}",
                    )
            with contextlib.suppress(Exception):  # not answering yet
                seen = self.brokers(timeout_s=2)
                if node_ids <= seen:
                    return
            time.sleep(0.5)
        missing = sorted(node_ids - seen)
        raise BrokerUnavailable(
            f"Kafka nodes {missing} did not register within {timeout_s:.0f}s",
            hint=f"see their logs under {self.root}",
        )


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "?"
    return lines[-1] if lines else "(no output)"


def _is_unknown_topic(error: Any) -> bool:
    from confluent_kafka import KafkaError

    return bool(error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART)
