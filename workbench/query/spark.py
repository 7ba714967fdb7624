"""The Spark engine behind the HiveServer2 door (``WORKBENCH_HIVE_ENGINE=spark``).

One :class:`SparkEngine` per endpoint process holds the Spark application (master
``WORKBENCH_SPARK_MASTER``); it is started with the endpoint, so a missing pyspark,
Java, Delta jars or an unreachable master is said at start, not at the first query.
Each HiveServer2 session gets a :class:`SparkQuerySession` over ``spark.newSession()``:
its own temp views and SQL settings, the same tables a DuckDB session exposes, each
a view of the Delta table already filtered to the principal
(:meth:`Principal.scope_sql`). The front door stays the same as for DuckDB:
statements are vetted by :func:`parse_statement` (written out in Spark SQL), and the
row and byte caps and the statement timeout are applied here.

Delta's jars come from Maven Central through Maven, pinned in ``spark-delta.pom.xml``
beside this module (offline after the first fetch); Spark's own come with pyspark.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from workbench.config import Config
from workbench.exceptions import QueryFailed, SparkUnavailable
from workbench.maven import classpath_file, kept_classpath, pom_property, resolve_classpath
from workbench.query.engine import (
    AuditFn,
    QueryResult,
    StatementRunner,
    TableSource,
    lake_sources,
)
from workbench.query.hiveql import Dialect, Statement
from workbench.query.types import Column
from workbench.tenancy.principal import Principal

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "POM",
    "SparkEngine",
    "SparkQuerySession",
    "delta_jars",
    "delta_version",
]

logger = logging.getLogger(__name__)

POM = Path(__file__).with_name("spark-delta.pom.xml")
_INSTALL = "install it with: pip install 'workbench[spark]' (pyspark 4.1.0)"


def delta_version() -> str:
    """The pinned Delta Lake version, read from the pom."""
    return pom_property(POM, "delta.version", SparkUnavailable)


def delta_jars(report: Callable[[str], None] = logger.info) -> list[str]:
    """The Delta jars (local paths), resolved with Maven the first time and kept in the
    virtualenv's ``share/workbench``; Maven's local repository serves later fetches."""
    target = classpath_file(f"delta-{delta_version()}")
    return kept_classpath(target) or resolve_classpath(
        POM,
        target,
        what=f"Delta Lake {delta_version()}",
        error=SparkUnavailable,
        fallback="WORKBENCH_HIVE_ENGINE=duckdb",
        # only the two Delta jars: Spark, Scala and logging come with pyspark, and other
        # versions of them on the class path break Spark
        extra=["-DexcludeTransitive=true"],
        report=report,
    )


def _check_master(master: str) -> None:
    """A standalone master must answer before Spark is asked: Spark itself retries an
    unreachable one for minutes."""
    if not master.startswith("spark://"):
        return
    errors = []
    for hostport in master.removeprefix("spark://").split(","):
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=3.0):
                return
        except OSError as exc:
            errors.append(f"{hostport} ({exc.strerror or exc})")
    raise SparkUnavailable(
        f"the Spark master {master} is not reachable: {', '.join(errors)}",
        hint="start the master or fix WORKBENCH_SPARK_MASTER (or WORKBENCH_HIVE_ENGINE=duckdb)",
    )


class SparkEngine:
    """The endpoint's Spark application; :meth:`open` gives each HiveServer2 session its
    own Spark session over it."""

    def __init__(self, config: Config) -> None:
        """Start Spark on ``config.spark_master`` (raises :class:`SparkUnavailable`)."""
        self.config = config
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise SparkUnavailable(
                "WORKBENCH_HIVE_ENGINE=spark but pyspark is not installed", hint=_INSTALL
            ) from None
        if shutil.which("java") is None and not _java_home():
            raise SparkUnavailable("Spark needs Java 17 or newer, and 'java' is not installed")
        jars = delta_jars()
        _check_master(config.spark_master)
        local = config.spark_master.startswith("local")
        builder = (
            SparkSession.builder.master(config.spark_master)
            .appName("workbench-hiveserver2")
            .config("spark.jars", ",".join(jars))
            .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
            .config(
                "spark.sql.catalog.spark_catalog",
                "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            )
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1" if local else config.host)
            # `${…}` in a statement would read Spark's settings
            .config("spark.sql.variable.substitute", "false")
            .config("spark.sql.shuffle.partitions", "2" if local else "200")
            # Delta rebuilds a table's state in this many tasks (50 by default: seconds of
            # task overhead per small table on one machine)
            .config("spark.databricks.delta.snapshotPartitions", "2" if local else "50")
            .config("spark.ui.showConsoleProgress", "false")
            # sessions share the executors: one tenant's long scan must not queue another's
            # short query behind all its tasks (the default FIFO would)
            .config("spark.scheduler.mode", "FAIR")
        )
        self._builder = builder
        self._restart_lock = threading.Lock()
        self.generation = 0  # how many times Spark was started again after it was lost
        self.spark = self._start()
        # pyspark logs every failed statement with its JVM stack trace; the client gets
        # the error, so the endpoint's log need not repeat it
        logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
        logger.info("Spark engine on %s (Delta %s)", config.spark_master, delta_version())

    def _start(self) -> SparkSession:
        try:
            spark = self._builder.getOrCreate()
        except Exception as exc:
            raise SparkUnavailable(f"Spark did not start: {_first_line(exc)}") from None
        spark.sparkContext.setLogLevel("ERROR")
        return spark

    def alive(self) -> bool:
        """Whether the Spark application still answers (its JVM may have died)."""
        try:
            return not self.spark.sparkContext._jsc.sc().isStopped()
        except Exception:  # py4j raises several kinds when the JVM is gone
            return False

    def revive(self, seen: int) -> None:
        """Start Spark again when it is lost, once for every session that saw generation
        ``seen`` fail (the first caller restarts, the others find it done)."""
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        with self._restart_lock:
            if self.generation != seen or self.alive():
                return
            logger.warning("the Spark engine was lost; starting it again")
            with contextlib.suppress(Exception):  # a dead JVM cannot be stopped cleanly
                self.spark.stop()
            # pyspark keeps the dead gateway and session in class attributes: without
            # forgetting them, getOrCreate() would hand back the dead application
            SparkContext._gateway = None
            SparkContext._jvm = None
            SparkContext._active_spark_context = None
            SparkSession._instantiatedSession = None
            SparkSession._activeSession = None
            self.spark = self._start()
            self.generation += 1

    def open(
        self, config: Config, principal: Principal, *, audit: AuditFn | None = None
    ) -> SparkQuerySession:
        """A new session for ``principal`` over ``config``'s lake, within its limits."""
        return SparkQuerySession(self, config, principal, audit=audit)

    # What a session asks of its engine; Spark Connect answers them over gRPC instead.

    def new_session(self) -> Any:
        """A Spark session of its own (temp views, SQL settings) over the application."""
        return self.spark.newSession()

    def collect(self, spark: Any, sql: str, *, group: str, pool: str, limit: int) -> pa.Table:
        """At most ``limit`` rows of ``sql``, its jobs in ``group`` (for :meth:`cancel`) and
        in the scheduler pool ``pool``."""
        context = spark.sparkContext
        context.setJobGroup(group, "HiveQL statement", interruptOnCancel=True)
        # a pool per user: under the FAIR scheduler pools share the executors, while the
        # jobs inside one pool (the default one too) queue first in, first out
        context.setLocalProperty("spark.scheduler.pool", pool)
        try:
            return spark.sql(sql).limit(limit).toArrow()
        finally:
            # a lost engine cannot be told; the failure says what happened
            with contextlib.suppress(Exception):
                context.setLocalProperty("spark.jobGroup.id", None)
                context.setLocalProperty("spark.scheduler.pool", None)

    def cancel(self, spark: Any, group: str) -> None:
        """Cancel the jobs of ``group`` (interrupting their tasks)."""
        spark.sparkContext.cancelJobGroup(group)

    def lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the engine itself is gone (not the statement failing)."""
        from py4j.protocol import Py4JNetworkError  # type: ignore[import-untyped]

        # a JVM killed during a call fails it with a Py4JError caused by the network error
        seen: BaseException | None = exc
        for _ in range(8):
            if seen is None:
                return False
            if isinstance(seen, Py4JNetworkError | ConnectionError):
                return True
            seen = seen.__cause__ or seen.__context__
        return False

    def release(self, spark: Any) -> None:
        """Give back what a closed session held (nothing: its views were dropped)."""

    def stop(self) -> None:
        """Stop the Spark application (nothing to do when it was lost)."""
        with contextlib.suppress(Exception):
            self.spark.stop()


def _java_home() -> bool:
    import os

    home = os.environ.get("JAVA_HOME")
    return bool(home) and (Path(str(home)) / "bin" / "java").is_file()


class _View:
    """One exposed Delta table in one Spark session, re-made when the table changes."""

    def __init__(self, source: TableSource, config: Config) -> None:
        self.source = source
        self.config = config
        self.version: int | None = None
        self.delta: Any = None

    def current(self) -> int:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        from workbench.lake.tables import storage_options

        try:
            if self.delta is None:
                self.delta = DeltaTable(
                    self.source.uri, storage_options=storage_options(self.config)
                )
            else:
                self.delta.update_incremental()
        except TableNotFoundError:
            return -1
        return int(self.delta.version())


class SparkQuerySession(StatementRunner):
    """A principal's HiveQL session on the Spark engine (same surface as
    :class:`~workbench.query.engine.QuerySession`)."""

    dialect: Dialect = "spark"

    def __init__(
        self,
        engine: SparkEngine,
        config: Config,
        principal: Principal,
        *,
        audit: AuditFn | None = None,
    ) -> None:
        principal.require("query")
        self.config = config
        self.principal = principal
        self.max_rows = config.hive_max_rows
        self.max_bytes = config.hive_max_result_bytes
        self.statement_timeout = config.hive_statement_timeout
        self._audit = audit
        self._lock = threading.Lock()
        self._engine = engine
        self._generation = engine.generation
        self._spark = engine.new_session()
        self._group = f"hs2-{uuid.uuid4().hex}"
        self._pool = f"user-{principal.user}"
        self._expired = False
        self._stale = False  # the engine was lost under this session's last statement
        self._views: dict[str, _View] = {}
        for source in lake_sources(config):
            if source.tenant_col is None and not principal.is_admin:
                continue
            # made when a statement first reads it: opening a session costs nothing
            self._views[source.name] = _View(source, config)

    def _live(self) -> None:
        """A Spark session on a live engine: after the engine was lost (its JVM died),
        the next statement starts it again and remakes this session's views there."""
        engine = self._engine
        if not self._stale and engine.generation == self._generation and engine.alive():
            return
        engine.revive(self._generation)
        with contextlib.suppress(Exception):  # the old session may be gone with its engine
            engine.release(self._spark)
        self._spark = engine.new_session()
        self._generation = engine.generation
        self._stale = False
        for view in self._views.values():
            view.version = None

    def _refresh(self, names: tuple[str, ...]) -> None:
        """(Re)make the temp view of each table whose Delta version moved: a view holds
        the snapshot it was made from."""
        self._live()
        for name in names:
            view = self._views[name]
            version = view.current()
            if version == view.version:
                continue
            source = view.source
            if version < 0:
                from pyspark.sql.pandas.types import from_arrow_schema

                empty = source.schema.empty_table()
                # Spark Connect does not infer a schema from no rows
                frame = self._spark.createDataFrame(empty, schema=from_arrow_schema(empty.schema))
            else:
                frame = self._spark.read.format("delta").load(source.uri)
            scope = self.principal.scope_sql(
                tenant_col=source.tenant_col or "tenant_id",
                building_col=source.building_col or "NULL",
            )
            frame.where(scope).createOrReplaceTempView(name)
            view.version = version

    def _exposed(self) -> dict[str, Any]:
        return self._views

    def source(self, name: str) -> TableSource:
        """The definition behind table ``name``."""
        return self._views[name].source

    def describe(self, name: str) -> list[Column]:
        """The Hive-typed columns of table ``name``."""
        if name not in self._views:
            raise QueryFailed(f"table {name!r} not found", hint="SHOW TABLES lists the tables")
        with self._lock:
            self._refresh((name,))
            schema = self._spark.table(name).limit(0).toArrow().schema
        return [Column.of(f) for f in schema]

    def _run_read(self, st: Statement) -> QueryResult:
        if st.kind in ("describe", "show_partitions"):
            return self._catalog(st)
        self._refresh(st.tables)
        return QueryResult.of(self._fetch(st.sql))

    def _catalog(self, st: Statement) -> QueryResult:
        self._refresh((st.target,))
        if st.kind == "describe":
            cols = [Column.of(f) for f in self._spark.table(st.target).limit(0).toArrow().schema]
            return QueryResult.of(
                pa.table(
                    {
                        "col_name": [c.name for c in cols],
                        "data_type": [c.hive_type.lower() for c in cols],
                        "comment": pa.array([""] * len(cols), pa.string()),
                    }
                )
            )
        col = self._views[st.target].source.partition_col
        if col is None:
            raise QueryFailed(f"table {st.target!r} is not partitioned")
        rows = self._fetch(f"SELECT DISTINCT `{col}` FROM `{st.target}` ORDER BY 1").column(0)
        parts = [f"{col}={d.isoformat()}" for d in rows.to_pylist()]
        return QueryResult.of(pa.table({"partition": pa.array(parts, pa.string())}))

    def _fetch(self, sql: str) -> pa.Table:
        self._expired = False
        timer = threading.Timer(self.statement_timeout, self._expire)
        timer.daemon = True
        timer.start()
        try:
            # one row past the cap tells "more than the cap" without collecting them all
            table = self._engine.collect(
                self._spark, sql, group=self._group, pool=self._pool, limit=self.max_rows + 1
            )
        except Exception as exc:
            raise self._failure(exc) from None
        finally:
            timer.cancel()
        if table.num_rows > self.max_rows:
            raise QueryFailed(
                f"the result has more than {self.max_rows} rows",
                hint="aggregate, add a LIMIT, or raise WORKBENCH_HIVE_MAX_ROWS",
            )
        if table.nbytes > self.max_bytes:
            raise QueryFailed(
                f"the result is larger than {self.max_bytes} bytes",
                hint="select fewer or narrower columns, aggregate, add a LIMIT, "
                "or raise WORKBENCH_HIVE_MAX_RESULT_BYTES",
            )
        return table

    def _failure(self, exc: Exception) -> QueryFailed:
        text = _first_line(exc)
        if "cancel" in text.lower() or "interrupt" in text.lower():
            if self._expired:
                return QueryFailed(
                    f"the statement ran longer than {self.statement_timeout:g} s and was stopped",
                    hint="narrow it (a WHERE on event_date, fewer rows, a LIMIT), "
                    "or ask an operator to raise WORKBENCH_HIVE_STATEMENT_TIMEOUT",
                )
            return QueryFailed("the statement was cancelled")
        # py4j reports a JVM killed mid-call as a plain Py4JError, too: ask the engine
        if self._engine.lost(exc) or not self._engine.alive():
            self._stale = True
            return QueryFailed(
                f"the Spark engine was lost during the statement: {text}",
                hint="retry; if it persists, check 'workbench logs hiveserver2'",
            )
        return QueryFailed(f"query failed: {text}")

    def _expire(self) -> None:
        self._expired = True
        self.interrupt()

    def interrupt(self) -> None:
        """Cancel the running statement (from another thread)."""
        self._engine.cancel(self._spark, self._group)

    def close(self) -> None:
        """Drop this session's views (the Spark application stays for the others)."""
        for name in self._views:
            try:
                self._spark.catalog.dropTempView(name)
            except Exception:  # the engine may be gone already; nothing to release then
                logger.debug("dropping view %s failed", name, exc_info=True)
        with contextlib.suppress(Exception):
            self._engine.release(self._spark)

    def __enter__(self) -> SparkQuerySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # Spark's messages carry an error class and SQLSTATE first, then a JVM stack trace
    text = re.sub(r"^\[[A-Z_.]+\]\s*", "", text)
    text = re.sub(r"\s*SQLSTATE: \w+", "", text)
    return text.splitlines()[0] if text else type(exc).__name__
