"""The Spark engine over Spark Connect (``WORKBENCH_SPARK_MASTER=sc://host:port``).

The endpoint then runs no Spark of its own: a Spark Connect server does — started by an
operator with Delta Lake's jars and settings (:func:`server_argv` builds that command
line) — and every HiveServer2 session is a Spark Connect session of its own on it, with
its own temp views and SQL settings. The door in front is the one of the endpoint's own
Spark (:class:`~workbench.query.spark.SparkQuerySession`): the same statement vetting,
tenant-filtered views, row and byte caps, timeout and cancellation; only how a session
is made, runs a statement and is cancelled differs, over gRPC.

A server reachable by others is a door around the workbench's (whoever reaches it can
read the lake): bind it to loopback or a private network and give it a token
(``SPARK_CONNECT_AUTHENTICATE_TOKEN`` in the server's environment, ``;token=…`` in the
URL).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from workbench.config import Config
from workbench.exceptions import SparkUnavailable
from workbench.query.spark import SparkEngine, _first_line, delta_jars, delta_version

__all__ = ["SERVER_CLASS", "SparkConnectEngine", "redact", "server_argv", "start_engine"]

logger = logging.getLogger(__name__)

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
_DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
# set on every session: the server's defaults are the operator's, these are the door's
_SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    # `${…}` in a statement would read the server's settings
    "spark.sql.variable.substitute": "false",
}
_HINT = (
    "start the Spark Connect server or fix WORKBENCH_SPARK_MASTER (or WORKBENCH_HIVE_ENGINE=duckdb)"
)


def start_engine(config: Config) -> SparkEngine:
    """The Spark engine ``config.spark_master`` names: an application of the endpoint's
    own, or a Spark Connect server's (``sc://``); raises :class:`SparkUnavailable`."""
    if config.spark_master.startswith("sc://"):
        return SparkConnectEngine(config)
    return SparkEngine(config)


def redact(url: str) -> str:
    """``url`` without its token's value, for logs and messages."""
    return re.sub(r"(;token=)[^;]*", r"\1…", url)


def server_argv(
    *, port: int = 15002, host: str = "127.0.0.1", master: str = "local[2]"
) -> list[str]:
    """The command line of a Spark Connect server the door can use: pyspark's
    ``spark-submit`` with Delta's jars and settings, the FAIR scheduler (sessions share the
    executors), gRPC on ``host:port``. Give it a token in its environment
    (``SPARK_CONNECT_AUTHENTICATE_TOKEN``), never on the command line others can list."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    conf = {
        "spark.sql.extensions": _DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": _DELTA_CATALOG,
        "spark.scheduler.mode": "FAIR",
        "spark.ui.enabled": "false",
        "spark.connect.grpc.binding.address": host,
        "spark.connect.grpc.binding.port": str(port),
        "spark.sql.session.timeZone": "UTC",
    }
    argv = [str(spark_home / "bin" / "spark-submit"), "--class", SERVER_CLASS]
    argv += ["--master", master, "--name", "workbench-spark-connect"]
    argv += ["--jars", ",".join(delta_jars())]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    return argv


class SparkConnectEngine(SparkEngine):
    """A Spark Connect server as the endpoint's engine. It holds no application of its
    own: ``spark`` is not set, and the server's life is its operator's (a lost server
    fails the statement; the session's next statement opens a new Connect session)."""

    def __init__(self, config: Config) -> None:
        """Check the server answers and reads Delta (raises :class:`SparkUnavailable`)."""
        self.config = config
        self.url = config.spark_master
        self.generation = 0
        try:
            from pyspark.sql.connect.session import SparkSession  # noqa: F401
        except ImportError as exc:
            raise SparkUnavailable(
                f"WORKBENCH_SPARK_MASTER={redact(self.url)} needs Spark Connect's client, "
                f"which does not load: {exc}",
                hint="install it with: pip install 'workbench[spark]' (pyspark[connect] 4.1.0)",
            ) from None
        self._check_reachable()
        try:
            probe = self.new_session()
            try:
                extensions = probe.conf.get("spark.sql.extensions", "") or ""
                version = probe.version
            finally:
                with contextlib.suppress(Exception):
                    self.release(probe)
        except Exception as exc:
            raise SparkUnavailable(
                f"the Spark Connect server at {redact(self.url)} refused the endpoint: "
                f"{_first_line(exc)}",
                hint="check the token (;token=… in WORKBENCH_SPARK_MASTER)",
            ) from None
        if _DELTA_EXTENSION not in extensions:
            raise SparkUnavailable(
                f"the Spark Connect server at {redact(self.url)} cannot read Delta tables "
                f"(spark.sql.extensions={extensions or 'unset'})",
                hint=f"start it with Delta Lake {delta_version()}'s jars and settings: "
                "see 'Spark Connect' in docs/hive.md",
            )
        self.server_version = version
        # the client logs every failed statement with the server's stack trace; the client
        # of the door gets the error, so the endpoint's log need not repeat it
        logging.getLogger("pyspark.sql.connect.client.logging").setLevel(logging.CRITICAL)
        logger.info("Spark engine: Spark Connect %s at %s", version, redact(self.url))

    def _check_reachable(self) -> None:
        """The port must answer first: the client retries an unreachable server for
        minutes."""
        parts = urlsplit(self.url.split(";", 1)[0])
        host, port = parts.hostname or "localhost", parts.port or 15002
        try:
            with socket.create_connection((host, port), timeout=3.0):
                pass
        except OSError as exc:
            raise SparkUnavailable(
                f"the Spark Connect server {redact(self.url)} is not reachable: "
                f"{host}:{port} ({exc.strerror or exc})",
                hint=_HINT,
            ) from None

    def alive(self) -> bool:
        """Always: the server is not the endpoint's to watch or start again."""
        return True

    def revive(self, seen: int) -> None:
        """Nothing to start: a session opens a new Connect session after a loss."""

    def stop(self) -> None:
        """Nothing to stop: sessions were released as they closed."""

    def new_session(self) -> Any:
        """A Spark Connect session of its own on the server, with the door's settings."""
        session = _session_class()(connection=self.url)
        for key, value in _SESSION_CONF.items():
            session.conf.set(key, value)
        return session

    def collect(self, spark: Any, sql: str, *, group: str, pool: str, limit: int) -> pa.Table:
        """At most ``limit`` rows of ``sql``, tagged ``group`` for :meth:`cancel`. (No
        scheduler pool: the driver's thread properties are out of a Connect client's
        reach, so ``pool`` is not used.)"""
        spark.addTag(group)
        try:
            table: pa.Table = spark.sql(sql).limit(limit).toArrow()
            return table
        finally:
            spark.removeTag(group)

    def cancel(self, spark: Any, group: str) -> None:
        """Interrupt the session's operations tagged ``group``."""
        spark.interruptTag(group)

    def lost(self, exc: BaseException) -> bool:
        """The server gone or restarted (it no longer knows the session)."""
        text = str(exc)
        return isinstance(exc, ConnectionError) or any(
            mark in text
            for mark in ("UNAVAILABLE", "SESSION_CHANGED", "SESSION_CLOSED", "SESSION_NOT_FOUND")
        )

    def release(self, spark: Any) -> None:
        """Release the session on the server and close its channel."""
        client = spark.client
        try:
            client.release_session()
        finally:
            _close_channel(client)


def _close_channel(client: Any) -> None:
    # not client.close(): that also shuts down the thread pool every Connect session of the
    # process shares, waiting for the other sessions' calls in it
    client._channel.close()
    client._closed = True


_SESSION: type | None = None


def _session_class() -> type:
    """pyspark's Connect session, closed without waiting on other sessions' calls.

    pyspark's ``__del__`` closes the client, which shuts down the release thread pool all
    sessions share and waits for it; run by the garbage collector in gRPC's token callback
    thread (it ran there in the tests), it waits for calls that need that very thread and
    the endpoint hangs. This one only closes its own channel."""
    global _SESSION
    if _SESSION is None:
        from pyspark.sql.connect.session import SparkSession

        class _Session(SparkSession):
            def __del__(self) -> None:
                with contextlib.suppress(Exception):
                    _close_channel(self.client)

        _SESSION = _Session
    return _SESSION
