"""The embedded Apache Kafka broker: one KRaft node (broker and controller in one JVM).

Its jars come from Maven Central through Maven, pinned in ``kafka-broker.pom.xml``
beside this module; Maven keeps them in its local repository, so after the first
fetch nothing is downloaded again. The resolved class path is kept in the
virtualenv (``share/workbench/kafka-<version>.classpath``).

Its state lives under ``$WORKBENCH_HOME/kafka``: ``data/`` (the log dirs, formatted
once with a cluster id the workbench keeps in ``cluster.id``), the generated
``server.properties`` and ``log4j2.properties``. The log dirs survive ``workbench
down``/``up`` and a SIGKILL: the broker is durable, unlike the Tansu light mode.

Every way start-up can fail ends in one :class:`BrokerUnavailable` line that names
the fix, before a process is started: Java missing or older than 17, Maven missing
or unable to fetch, a log dir that belongs to another cluster or is damaged, a
nearly full disk.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from workbench.config import Config
from workbench.exceptions import BrokerUnavailable
from workbench.kafka import EMBEDDED_USER, embedded_password, rdkafka_client_settings
from workbench.maven import classpath_file, kept_classpath, pom_property, resolve_classpath

__all__ = [
    "MIN_JAVA",
    "broker_command",
    "checked_java",
    "classpath",
    "fetch_jars",
    "format_log_dir",
    "java_version",
    "jvm_command",
    "kafka_version",
    "log4j_properties",
    "new_cluster_id",
    "node_properties",
    "state_dir",
]

POM = Path(__file__).with_name("kafka-broker.pom.xml")
MIN_JAVA = 17
# Below this much free space under the log dirs the broker is not started: Kafka would
# start, accept writes and then stop with its log dir offline.
MIN_FREE_BYTES = 256 * 1024 * 1024
NODE_ID = 1
_FALLBACK = "set WORKBENCH_BROKER=tansu for the light in-memory broker, or KAFKA_BOOTSTRAP_SERVERS"


def kafka_version() -> str:
    """The pinned Apache Kafka version, read from the pom."""
    return pom_property(POM, "kafka.version", BrokerUnavailable)


def _classpath_file() -> Path:
    return classpath_file(f"kafka-{kafka_version()}")


def fetch_jars(report: Callable[[str], None] = print) -> Path:
    """Resolve the pinned jars with Maven (downloading only what its repository lacks) and
    keep the class path; return the class-path file."""
    target = _classpath_file()
    resolve_classpath(
        POM,
        target,
        what=f"Apache Kafka {kafka_version()}",
        error=BrokerUnavailable,
        fallback=_FALLBACK,
        report=report,
    )
    return target


def classpath(report: Callable[[str], None] = print) -> str:
    """The broker's class path, fetched first when missing or when Maven's repository
    lost a jar of it."""
    jars = kept_classpath(_classpath_file())
    if jars is None:
        return fetch_jars(report).read_text().strip()
    return ":".join(jars)


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerUnavailable(
            f"Java is not installed; Apache Kafka needs Java {MIN_JAVA} or newer",
            hint=f"install a JRE {MIN_JAVA}+ (e.g. 'apt-get install openjdk-17-jre-headless') "
            f"or set JAVA_HOME, or {_FALLBACK}",
        )
    return found


def checked_java() -> str:
    """The ``java`` to run Kafka with; raise when it is missing or older than MIN_JAVA."""
    java = _java()
    major = java_version(java)
    if major < MIN_JAVA:
        raise BrokerUnavailable(
            f"Apache Kafka {kafka_version()} needs Java {MIN_JAVA} or newer; {java} is {major}",
            hint=f"install a JRE {MIN_JAVA}+ or point JAVA_HOME at one, or {_FALLBACK}",
        )
    return java


def java_version(java: str) -> int:
    """The major version of ``java`` (``java -version`` prints it on stderr)."""
    done = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if m is None:
        raise BrokerUnavailable(
            f"cannot tell the version of {java} ({(done.stderr or done.stdout).strip()[:120]!r})",
            hint=f"set JAVA_HOME to a Java {MIN_JAVA}+ installation, or {_FALLBACK}",
        )
    major = int(m.group(1))
    # Java 8 and before call themselves 1.x
    return int(m.group(2) or 0) if major == 1 else major


def state_dir(config: Config) -> Path:
    """Where the broker keeps its log dirs and generated configuration."""
    return config.home / "kafka"


def _read_properties(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def new_cluster_id() -> str:
    """A new KRaft cluster id."""
    # Kafka's own format: 16 random bytes, URL-safe base64 without padding; never
    # starting with '-', which its tools would read as an option
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _jaas(password: str) -> str:
    # the node's own login (username/password: it is a client of its controller) and
    # the one user it accepts; the password is base64 text, with no quote to escape
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{EMBEDDED_USER}" password="{password}" user_{EMBEDDED_USER}="{password}";'
    )


def _listeners(host: str, port: int, controller_port: int, password: str | None) -> dict[str, str]:
    listeners = {
        "listeners": f"CLIENT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"CLIENT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "CLIENT",
    }
    if password is None:
        return listeners | {
            "listener.security.protocol.map": "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        }
    # both ports take only SASL/PLAIN with the generated password: the topic's events and
    # the cluster's metadata are the workbench's services' alone
    return listeners | {
        "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.client.plain.sasl.jaas.config": _jaas(password),
        "listener.name.controller.plain.sasl.jaas.config": _jaas(password),
    }


def node_properties(
    *,
    node_id: int,
    host: str,
    port: int,
    controller_port: int,
    data: Path,
    partitions: int,
    voters: str | None = None,
    replicas: int = 1,
    min_insync: int = 1,
    password: str | None = None,
) -> str:
    """``server.properties`` of one KRaft node (broker and controller in one JVM).

    ``voters`` (``1@host:port,2@host:port,…``) makes it one node of a static quorum;
    without, it is the single node of its own (whose offsets topic then has a handful
    of partitions, not Kafka's 50: a fresh broker is ready for groups sooner).
    ``replicas`` and ``min_insync`` apply to new topics and to Kafka's internal ones
    alike: those cannot have more replicas than there are brokers. With ``password``
    both ports take only SASL/PLAIN as user ``workbench``; without, plaintext."""
    quorum = (
        {
            "controller.quorum.voters": voters,
            # Kafka's defaults (2 s without the active controller, then a 1 s election)
            # assume a node per machine; three JVMs that share two cores with the stack
            # miss those deadlines under load, and the controllers then hold elections
            # back to back instead of moving the leaderships of a broker that died
            "controller.quorum.fetch.timeout.ms": "6000",
            "controller.quorum.election.timeout.ms": "3000",
        }
        if voters
        else {
            "controller.quorum.bootstrap.servers": f"{host}:{controller_port}",
            "offsets.topic.num.partitions": "4",
        }
    )
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        **quorum,
        **_listeners(host, port, controller_port, password),
        "log.dirs": str(data),
        "num.partitions": str(partitions),
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_insync),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_insync),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_insync),
        # a group of processors forms at once instead of waiting 3 s for more members
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def _server_properties(config: Config, data: Path, password: str) -> str:
    # one node: the internal topics cannot have more replicas than that
    return node_properties(
        node_id=NODE_ID,
        host=config.host,
        port=config.kafka_port,
        controller_port=config.kafka_controller_port,
        data=data,
        partitions=config.topic_partitions,
        password=password,
    )


def _client_properties(config: Config) -> str:
    lines = [
        "# librdkafka settings of the embedded broker (kcat -F this-file, confluent-kafka)",
        *(f"{k}={v}" for k, v in rdkafka_client_settings(config).items()),
    ]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` (it holds the broker's password) readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file kept its mode
    with os.fdopen(fd, "w") as f:
        f.write(text)


_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = %d{ISO8601} %p %c{1}: %m%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
logger.kafka.name = org.apache.kafka
logger.kafka.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


def log4j_properties(level: str) -> str:
    """The broker's log4j2 configuration: Kafka's own chatter at WARN, the rest at ``level``."""
    return _LOG4J.replace("{level}", level.lower())


def format_log_dir(java: str, cp: str, props: Path, cluster: str, *, standalone: bool) -> None:
    """Format the log dir ``props`` names for cluster id ``cluster`` (``standalone``: a
    single-node quorum; without, the quorum is ``controller.quorum.voters``)."""
    argv = [java, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(props)]
    done = subprocess.run(
        argv + (["--standalone"] if standalone else []),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        data = _read_properties(props).get("log.dirs", str(props))
        raise BrokerUnavailable(
            f"cannot format the broker's log dir {data}: {last[-1] if last else '?'}",
            hint="see the message; check the folder's permissions and free space",
        )


def jvm_command(java: str, cp: str, props: Path, log4j: Path, heap: str) -> list[str]:
    """The command that runs one Kafka node."""
    return [
        java,
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        cp,
        "kafka.Kafka",
        str(props),
    ]


def _check_log_dir(data: Path, cluster_file: Path) -> bool:
    """True when ``data`` is this workbench's formatted log dir, False when it is new;
    raise when it is someone else's or damaged."""
    meta = data / "meta.properties"
    if not data.exists() or (data.is_dir() and not any(data.iterdir())):
        if cluster_file.exists():
            raise BrokerUnavailable(
                f"the broker's log dir {data} is gone but {cluster_file} remains: "
                "the events it held are lost",
                hint=f"restore {data} from a backup, or delete {cluster_file} to start empty",
            )
        return False
    if not meta.is_file():
        raise BrokerUnavailable(
            f"{data} is not an Apache Kafka log dir this workbench made (no meta.properties)",
            hint="move it away, or set WORKBENCH_HOME to another folder",
        )
    props = _read_properties(meta)
    ours = cluster_file.read_text().strip() if cluster_file.is_file() else None
    if props.get("node.id") != str(NODE_ID) or (ours and props.get("cluster.id") != ours):
        raise BrokerUnavailable(
            f"{data} belongs to another Kafka (cluster.id={props.get('cluster.id')}, "
            f"node.id={props.get('node.id')}; this workbench's is {ours}, node {NODE_ID})",
            hint="move it away, or set WORKBENCH_HOME to another folder",
        )
    return True


def _check_disk(path: Path) -> None:
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        raise BrokerUnavailable(
            f"only {free // (1024 * 1024)} MiB free under {path}; the broker needs at least "
            f"{MIN_FREE_BYTES // (1024 * 1024)} MiB to take events",
            hint="free disk space (nothing stored is lost), or set WORKBENCH_HOME elsewhere",
        )


def broker_command(config: Config, report: Callable[[str], None] = print) -> list[str]:
    """Check Java, the jars and the log dir; format a new log dir; write the broker's
    configuration; return the command that starts it."""
    java = checked_java()
    cp = classpath(report)
    root = state_dir(config)
    data = root / "data"
    cluster_file = root / "cluster.id"
    root.mkdir(parents=True, exist_ok=True)
    formatted = _check_log_dir(data, cluster_file)
    _check_disk(root)
    props = root / "server.properties"
    _write_private(props, _server_properties(config, data, embedded_password(config)))
    _write_private(root / "client.properties", _client_properties(config))
    log4j = root / "log4j2.properties"
    log4j.write_text(log4j_properties(config.log_level))
    if not formatted:
        cluster = new_cluster_id()
        format_log_dir(java, cp, props, cluster, standalone=True)
        cluster_file.write_text(cluster + "\n")
    return jvm_command(java, cp, props, log4j, config.kafka_heap)
